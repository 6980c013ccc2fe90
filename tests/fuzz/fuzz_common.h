/* What several fuzz targets share: the input read as a stream, and the
 * guard bytes around guest RAM that the code under test must never write
 * (invariant 2 of DESIGN.md). */
#ifndef GODWIT_FUZZ_COMMON_H
#define GODWIT_FUZZ_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/error.h>

struct fuzz_input {
    const uint8_t *data;
    size_t size, pos;
};

/* A stream_io read over the input: it ends where the input does. */
static inline int fuzz_read_input(void *opaque, void *buf, size_t len, struct gw_error *err)
{
    struct fuzz_input *input = opaque;

    if (input->pos == input->size && len)
        return gw_error_set(err, -ENODATA, "end of input");
    if (len > input->size - input->pos)
        return gw_error_set(err, -ENODATA, "end of input mid-record");
    memcpy(buf, input->data + input->pos, len);
    input->pos += len;
    return 0;
}

/* memory holds FUZZ_GUARD bytes, then size bytes of RAM, then FUZZ_GUARD. */
#define FUZZ_GUARD 4096
#define FUZZ_GUARD_BYTE 0x5a

static inline void fuzz_guards_set(uint8_t *memory, size_t size)
{
    memset(memory, FUZZ_GUARD_BYTE, FUZZ_GUARD);
    memset(memory + FUZZ_GUARD + size, FUZZ_GUARD_BYTE, FUZZ_GUARD);
}

/* A write outside the RAM: the bug these targets hunt. */
static inline void fuzz_guards_check(const uint8_t *memory, size_t size)
{
    for (size_t i = 0; i < FUZZ_GUARD; i++)
        if (memory[i] != FUZZ_GUARD_BYTE || memory[FUZZ_GUARD + size + i] != FUZZ_GUARD_BYTE)
            abort();
}

#endif
