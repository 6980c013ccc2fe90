/* The channel header (docs/stream.md, "Channel header"): 48 bytes at the
 * start of a connection that name its type, its index and the migration it
 * belongs to, so a destination can sort what it accepts. */
#ifndef GODWIT_CHANNEL_HEADER_H
#define GODWIT_CHANNEL_HEADER_H

#include <stdint.h>

#include <godwit/error.h>

enum channel_type { CHANNEL_MAIN = 1, CHANNEL_RAM = 2, CHANNEL_DEVICE = 3, CHANNEL_POSTCOPY = 4 };
#define CHANNEL_MAGIC "GODWITCH"
#define CHANNEL_HEADER_SIZE 48

void channel_header_encode(uint8_t *out, uint32_t type, uint32_t index, const uint8_t *id);
/* Checks magic, CRC, version and type before filling anything. */
int channel_header_decode(const uint8_t *in, uint32_t *type, uint32_t *index, uint8_t *id,
                          struct gw_error *err);

#endif
