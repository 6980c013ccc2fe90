/* Fuzzes what an RDMA peer sends before and besides RAM (docs/rdma.md): the
 * private data of a connect request, and the control messages a SEND
 * carries, decoded and then done by the destination (zaps of pages and the
 * end-of-pass counts) against two small RAM blocks. The first input byte
 * picks which. REGISTER_REQUEST needs a connection to register on: only its
 * decoding and entries are fuzzed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdma/rdma_link.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAGE 4096
#define BLOCK_PAGES 16

static uint8_t memory[2][BLOCK_PAGES * PAGE];

static uint8_t *target(void *opaque, uint32_t block, uint64_t page)
{
    (void)opaque;
    return memory[block] + page * PAGE;
}

/* A zap must stay inside the block the loader checked. */
static int zero(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    (void)opaque;
    (void)err;
    if (block >= 2 || page >= BLOCK_PAGES)
        abort();
    memset(memory[block] + page * PAGE, 0, PAGE);
    return 0;
}

static const struct page_landing_ops landing_ops = { .target = target, .zero = zero };

static void fuzz_hello(const uint8_t *data, size_t size)
{
    struct rdma_private_data in = { .len = (uint8_t)(size > 255 ? 255 : size) };
    struct rdma_hello hello;

    memcpy(in.bytes, data, size < RDMA_PRIVATE_DATA_MAX ? size : RDMA_PRIVATE_DATA_MAX);
    rdma_hello_decode(&in, &hello, NULL);
}

static void fuzz_message(const uint8_t *data, size_t size)
{
    struct ram_block blocks[2] = {
        { .name = "pc.ram", .host = memory[0], .size = sizeof(memory[0]), .page_size = PAGE },
        { .name = "extra", .host = memory[1], .size = sizeof(memory[1]), .page_size = PAGE },
    };
    struct page_landing landing = { .ops = &landing_ops };
    struct ram_load_counts counts = { 0 };
    uint8_t *reply = malloc(RDMA_MSG_PAYLOAD_MAX);
    struct rdma_dest *dest = rdma_dest_new(blocks, 2, &landing, &counts, 1 << 20, NULL, NULL);
    uint32_t reply_type, reply_len;
    struct rdma_msg msg;

    for (size_t at = 0; dest && reply && at + 4 <= size;) {
        uint32_t len;
        memcpy(&len, data + at, 4);
        at += 4;
        len = len > size - at ? (uint32_t)(size - at) : len;
        if (rdma_msg_decode(data + at, len, &msg, NULL) == 0) {
            if (msg.type == RDMA_MSG_REGISTER_REQUEST || msg.type == RDMA_MSG_REGISTER_RESULT) {
                for (uint32_t i = 0; i < rdma_msg_entry_count(&msg); i++) {
                    struct rdma_reg_entry entry;
                    rdma_msg_reg_entry(&msg, i, &entry);
                }
            } else if (msg.type == RDMA_MSG_ZERO || msg.type == RDMA_MSG_REGISTER_FINISHED) {
                rdma_dest_handle(dest, NULL, &msg, &reply_type, reply, &reply_len, NULL);
            }
        }
        at += len;
    }
    rdma_dest_free(dest);
    free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fuzz_hello(data + 1, size - 1);
    else
        fuzz_message(data + 1, size - 1);
    return 0;
}
