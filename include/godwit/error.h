/* The error object every libgodwit call fills: a negative errno for code and a
 * sentence for a person. Never aborts; a NULL error object is allowed. */
#ifndef GODWIT_ERROR_H
#define GODWIT_ERROR_H

#include <stdarg.h>

#define GW_ERROR_MSG_MAX 512

struct gw_error {
    int code;                       /* negative errno, 0 when no error */
    char msg[GW_ERROR_MSG_MAX];     /* one sentence: what was wrong, what is allowed */
};

/* Fills err (if non-NULL) and returns code, so callers can write
 * `return gw_error_set(err, -EINVAL, "...")`. code must be negative. */
int gw_error_set(struct gw_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int gw_error_vset(struct gw_error *err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Prefixes the message already in err with "prefix: ". */
void gw_error_prefix(struct gw_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void gw_error_clear(struct gw_error *err);

#endif
