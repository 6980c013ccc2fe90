/* Command line of the test guest: splits the multiboot command line into
 * space-separated key=value words and parses sizes. Words without '=' are
 * skipped, because QEMU puts the kernel's file name first. */
#include "guest.h"

static uint32_t word_length(const char *word)
{
    uint32_t len = 0;

    while (word[len] != '\0' && word[len] != ' ')
        len++;
    return len;
}

static uint32_t key_length(const char *word, uint32_t len)
{
    uint32_t i = 0;

    while (i < len && word[i] != '=')
        i++;
    return i;
}

/* Stops at the first difference, so it never reads past the end of name. */
static bool span_is(const char *span, uint32_t len, const char *name)
{
    uint32_t i;

    for (i = 0; i < len; i++) {
        if (span[i] != name[i])
            return false;
    }
    return name[i] == '\0';
}

static int suffix_shift(char suffix)
{
    switch (suffix) {
    case 'k': case 'K': return 10;
    case 'm': case 'M': return 20;
    case 'g': case 'G': return 30;
    default: return -1;
    }
}

/* Decimal bytes with an optional binary K/M/G suffix. Refuses anything that
 * does not fit in 64 bits rather than letting it wrap to a small size. */
static bool parse_size(const char *text, uint32_t len, uint64_t *size)
{
    uint64_t value = 0;
    uint32_t i;
    int shift = 0;

    for (i = 0; i < len && text[i] >= '0' && text[i] <= '9'; i++) {
        uint64_t digit = (uint64_t)(text[i] - '0');

        if (value > UINT64_MAX / 10 ||
            (value == UINT64_MAX / 10 && digit > UINT64_MAX % 10))
            return false;
        value = value * 10 + digit;
    }
    if (i == 0)
        return false;
    if (i < len) {
        shift = suffix_shift(text[i]);
        if (shift < 0 || i + 1 != len || value > (UINT64_MAX >> shift))
            return false;
    }
    *size = value << shift;
    return true;
}

/* rate=: whole MiB/s, 1 to RATE_MAX, no suffix. */
static bool parse_rate(const char *text, uint32_t len, uint32_t *rate)
{
    uint64_t value;
    uint32_t i;

    for (i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
    }
    if (!parse_size(text, len, &value) || value == 0 || value > RATE_MAX)
        return false;
    *rate = (uint32_t)value;
    return true;
}

static bool parse_mode(const char *text, uint32_t len, enum guest_mode *mode)
{
    if (span_is(text, len, "dirty"))
        *mode = MODE_DIRTY;
    else if (span_is(text, len, "idle"))
        *mode = MODE_IDLE;
    else
        return false;
    return true;
}

static bool apply_word(const char *word, uint32_t len, struct guest_config *cfg)
{
    uint32_t key_len = key_length(word, len);
    const char *value;
    uint32_t value_len;

    if (key_len == len)
        return true;
    value = word + key_len + 1;
    value_len = len - key_len - 1;
    if (span_is(word, key_len, "mode"))
        return parse_mode(value, value_len, &cfg->mode);
    if (span_is(word, key_len, "start"))
        return parse_size(value, value_len, &cfg->start);
    if (span_is(word, key_len, "end"))
        return parse_size(value, value_len, &cfg->end);
    if (span_is(word, key_len, "rate"))
        return parse_rate(value, value_len, &cfg->rate);
    return false;
}

int cmdline_parse(const char *line, struct guest_config *cfg)
{
    while (*line != '\0') {
        uint32_t len;

        if (*line == ' ') {
            line++;
            continue;
        }
        len = word_length(line);
        if (!apply_word(line, len, cfg))
            return EXIT_BAD_ARG;
        line += len;
    }
    return 0;
}
