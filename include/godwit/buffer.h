/* A growable byte buffer, for device state and messages. */
#ifndef GODWIT_BUFFER_H
#define GODWIT_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct gw_buffer {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Appends len bytes; returns 0 or -ENOMEM. */
int gw_buffer_append(struct gw_buffer *buf, const void *data, size_t len);
void gw_buffer_reset(struct gw_buffer *buf);
/* Grows the capacity to at least cap and touches all of it: memory first
 * touched while the guest is stopped costs downtime, so buffers used
 * then are made ready before. */
int gw_buffer_prepare(struct gw_buffer *buf, size_t cap);
void gw_buffer_free(struct gw_buffer *buf);

/* A cursor over received bytes: every take is bounds-checked. */
struct gw_cursor {
    const uint8_t *data;
    size_t len;
    size_t pos;
};

/* Copies len bytes out and advances; -EBADMSG if fewer remain. */
int gw_cursor_take(struct gw_cursor *cursor, void *out, size_t len);

#endif
