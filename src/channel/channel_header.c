/* The channel header's encoding; see channel_header.h. */
#include "channel_header.h"

#include <errno.h>
#include <string.h>

#include <godwit/stream.h>

void channel_header_encode(uint8_t *out, uint32_t type, uint32_t index, const uint8_t *id)
{
    uint32_t version = 1, crc;

    memset(out, 0, CHANNEL_HEADER_SIZE);
    memcpy(out, CHANNEL_MAGIC, 8);
    memcpy(out + 8, &version, 4);
    memcpy(out + 12, &type, 4);
    memcpy(out + 16, &index, 4);
    memcpy(out + 24, id, 16);
    crc = stream_crc32c(0, out, 40);
    memcpy(out + 40, &crc, 4);
}

int channel_header_decode(const uint8_t *in, uint32_t *type, uint32_t *index, uint8_t *id,
                          struct gw_error *err)
{
    uint32_t version, crc;

    if (memcmp(in, CHANNEL_MAGIC, 8))
        return gw_error_set(err, -EPROTO, "the connection does not start with a godwit "
                            "channel header");
    memcpy(&version, in + 8, 4);
    memcpy(type, in + 12, 4);
    memcpy(index, in + 16, 4);
    memcpy(id, in + 24, 16);
    memcpy(&crc, in + 40, 4);
    if (crc != stream_crc32c(0, in, 40))
        return gw_error_set(err, -EBADMSG, "the channel header's CRC is wrong");
    if (version != 1)
        return gw_error_set(err, -EPROTO, "the channel header has version %u; this godwit "
                            "reads version 1", version);
    if (*type < CHANNEL_MAIN || *type > CHANNEL_POSTCOPY)
        return gw_error_set(err, -EPROTO, "the channel header has type %u; types are 1 (main), "
                            "2 (multifd RAM), 3 (multifd device state) and 4 (postcopy "
                            "preempt)", *type);
    return 0;
}

