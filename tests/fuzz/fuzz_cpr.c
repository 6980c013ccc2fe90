/* Fuzzes the local update's parsers of outside input: the cpr channel's
 * memory message (with a descriptor count), the destination's answer, and
 * QEMU's channel objects in JSON. The first byte picks which; a message
 * that decodes must describe blocks the decoder promised to check. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/cpr.h>
#include <godwit/uri.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void memory_message(const uint8_t *data, size_t size)
{
    int fds[CPR_BLOCKS_MAX + 2];
    struct cpr_memory memory;
    struct gw_error err;

    if (size < 1)
        return;
    for (int i = 0; i < CPR_BLOCKS_MAX + 2; i++)
        fds[i] = 1000 + i;   /* never used as descriptors: the decoder must not touch them */
    if (cpr_memory_decode(data + 1, size - 1, fds, data[0] % (CPR_BLOCKS_MAX + 2), &memory,
                          &err) < 0)
        return;
    if (memory.nr_blocks == 0 || memory.nr_blocks > CPR_BLOCKS_MAX)
        abort();
    for (unsigned i = 0; i < memory.nr_blocks; i++) {
        const struct cpr_block *block = &memory.blocks[i];
        if (!block->size || block->size % block->page_size || !memchr(block->name, 0, 32) ||
            block->fd != fds[i])
            abort();
    }
}

static void channel_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    enum uri_channel_type type;
    struct gw_error err;
    struct uri uri;

    memcpy(text, data, size);
    text[size] = '\0';
    if (uri_parse_channel_text(text, &type, &uri, &err) == 0 && type == URI_CHANNEL_CPR &&
        uri.kind != URI_UNIX)
        abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_error err;

    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        memory_message(data + 1, size - 1);
        break;
    case 1:
        cpr_answer_decode(data + 1, size - 1, &err);
        break;
    default:
        channel_text(data + 1, size - 1);
        break;
    }
    return 0;
}
