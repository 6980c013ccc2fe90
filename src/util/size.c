/* Size parsing and printing. Parsing is strict: what is not understood is
 * refused, never guessed. */
#include <godwit/size.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

static int suffix_multiplier(char suffix, uint64_t *multiplier)
{
    switch (toupper((unsigned char)suffix)) {
    case 'B': *multiplier = 1; return 0;
    case 'K': *multiplier = SIZE_KiB; return 0;
    case 'M': *multiplier = SIZE_MiB; return 0;
    case 'G': *multiplier = SIZE_GiB; return 0;
    case 'T': *multiplier = SIZE_TiB; return 0;
    default: return -1;
    }
}

int size_parse(const char *text, uint64_t default_unit, uint64_t *bytes,
               struct gw_error *err)
{
    const char *p = text;
    uint64_t number = 0, multiplier = default_unit;

    if (!text || !isdigit((unsigned char)*p))
        return gw_error_set(err, -EINVAL,
                            "'%s' is not a size: expected a number with an optional "
                            "suffix B, K, M, G or T, like 64M or 2G",
                            text ? text : "(null)");
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (number > (UINT64_MAX - digit) / 10)
            return gw_error_set(err, -EINVAL, "size '%s' is too large", text);
        number = number * 10 + digit;
    }
    if (*p) {
        if (suffix_multiplier(*p, &multiplier) < 0 || p[1] != '\0')
            return gw_error_set(err, -EINVAL,
                                "'%s' is not a size: after the number only one suffix "
                                "B, K, M, G or T may follow, like 64M or 2G",
                                text);
    }
    if (multiplier && number > UINT64_MAX / multiplier)
        return gw_error_set(err, -EINVAL, "size '%s' is too large", text);
    *bytes = number * multiplier;
    return 0;
}

char *size_format(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    unsigned unit = 0;
    uint64_t scale = 1;

    while (unit + 1 < sizeof(units) / sizeof(units[0]) && bytes >= scale * 1024) {
        scale *= 1024;
        unit++;
    }
    if (bytes % scale == 0)
        snprintf(buf, len, "%" PRIu64 " %s", bytes / scale, units[unit]);
    else
        snprintf(buf, len, "%.1f %s", (double)bytes / (double)scale, units[unit]);
    return buf;
}
