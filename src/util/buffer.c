/* Growable buffers and bounds-checked cursors: device state is built with
 * the first and read back with the second, so no loader indexes raw bytes. */
#include <godwit/buffer.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int gw_buffer_append(struct gw_buffer *buf, const void *data, size_t len)
{
    if (len > buf->cap - buf->len) {
        size_t cap = buf->cap ? buf->cap : 256;
        while (cap - buf->len < len) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        uint8_t *grown = realloc(buf->data, cap);
        if (!grown)
            return -ENOMEM;
        buf->data = grown;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    return 0;
}

void gw_buffer_reset(struct gw_buffer *buf)
{
    buf->len = 0;
}

int gw_buffer_prepare(struct gw_buffer *buf, size_t cap)
{
    if (cap > buf->cap) {
        uint8_t *grown = realloc(buf->data, cap);
        if (!grown)
            return -ENOMEM;
        buf->data = grown;
        buf->cap = cap;
    }
    memset(buf->data + buf->len, 0, buf->cap - buf->len);
    return 0;
}

void gw_buffer_free(struct gw_buffer *buf)
{
    free(buf->data);
    *buf = (struct gw_buffer){ 0 };
}

int gw_cursor_take(struct gw_cursor *cursor, void *out, size_t len)
{
    if (len > cursor->len - cursor->pos)
        return -EBADMSG;
    memcpy(out, cursor->data + cursor->pos, len);
    cursor->pos += len;
    return 0;
}
