/* The error object: formats a sentence once, at the place that knows what
 * went wrong; callers only prefix context. */
#include <godwit/error.h>

#include <stdio.h>
#include <string.h>

int gw_error_vset(struct gw_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return code;
}

int gw_error_set(struct gw_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    gw_error_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void gw_error_prefix(struct gw_error *err, const char *fmt, ...)
{
    char prefix[GW_ERROR_MSG_MAX];
    char old[GW_ERROR_MSG_MAX];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Truncation keeps the start of the sentence, which says the most. */
    int n = snprintf(err->msg, sizeof(err->msg), "%s: ", prefix);
    if (n >= 0 && (size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, "%s", old);
}

void gw_error_clear(struct gw_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
