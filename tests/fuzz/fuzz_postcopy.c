/* Fuzzes postcopy's decoders of outside input. The input is read as a
 * return path (records without a stream header, as the source's
 * return-path thread reads them): every RP_REQ_PAGES is decoded as the
 * source decodes it and the pages it names are read, as the source would
 * send them; every POSTCOPY_DISCARD (the destination's decoder) has its
 * runs checked against the block. Two small blocks sit between guard
 * bytes: a request or a run that reaches outside its block trips the
 * guard check and aborts. RP_RECV_BITMAP (recovery) is decoded as the
 * source decodes it and copied into bitmaps of the blocks' exact size. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "postcopy/postcopy.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAGE 4096
#define GUARD PAGE
#define BLOCK0_PAGES 64
#define BLOCK1_PAGES 3

static uint8_t *memory;
/* The source's recovery bitmaps, one word per 64 pages, exactly sized:
 * ASan sees a word written past a block's. */
static uint64_t *bitmaps[2];
static volatile uint32_t checksum;
static struct ram_block blocks[2];

/* Touches every page of a run, as madvise would: outside a block, the guard. */
static int touch_run(void *opaque, uint32_t block, uint64_t first, uint64_t pages,
                     struct gw_error *err)
{
    (void)opaque, (void)err;
    if (block > 1 || first + pages > ram_block_pages(&blocks[block]))
        abort();
    memset(blocks[block].host + first * PAGE, (int)(first & 0xff), pages * PAGE);
    return 0;
}

static void check_guards(void)
{
    for (size_t i = 0; i < GUARD; i++)
        if (memory[i] != 0xa5 || blocks[0].host[BLOCK0_PAGES * PAGE + i] != 0xa5 ||
            blocks[1].host[BLOCK1_PAGES * PAGE + i] != 0xa5)
            abort();
}

static void setup(void)
{
    size_t total = GUARD + BLOCK0_PAGES * PAGE + GUARD + BLOCK1_PAGES * PAGE + GUARD;

    memory = malloc(total);
    if (!memory)
        abort();
    memset(memory, 0xa5, total);
    blocks[0] = (struct ram_block){ "ram-below-4g", memory + GUARD, BLOCK0_PAGES * PAGE, PAGE,
                                    0, -1, 0 };
    blocks[1] = (struct ram_block){ "ram-above-4g", blocks[0].host + BLOCK0_PAGES * PAGE + GUARD,
                                    BLOCK1_PAGES * PAGE, PAGE, 1ULL << 32, -1, 0 };
    bitmaps[0] = calloc(ram_block_bitmap_words(&blocks[0]), 8);
    bitmaps[1] = calloc(ram_block_bitmap_words(&blocks[1]), 8);
    memset(blocks[0].host, 0, BLOCK0_PAGES * PAGE);
    memset(blocks[1].host, 0, BLOCK1_PAGES * PAGE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input input = { data, size, 0 };
    struct stream_reader reader = { .io = { .read = fuzz_read_input, .opaque = &input },
                                    .page_size = PAGE };
    struct stream_record record;
    struct gw_error err;
    uint32_t crc = 0;

    if (!memory)
        setup();
    while (stream_read_record(&reader, &record, &err) == 0) {
        struct postcopy_request request;
        if (record.type == REC_RP_REQ_PAGES &&
            postcopy_request_decode(record.body, record.length, blocks, 2, &request,
                                    &err) == 0) {
            const struct ram_block *block = &blocks[request.block];
            crc = stream_crc32c(crc, block->host + request.first * PAGE,
                                (size_t)request.pages * PAGE);
        } else if (record.type == REC_RP_RECV_BITMAP) {
            struct postcopy_bitmap_part part;
            if (postcopy_bitmap_decode(record.body, record.length, blocks, 2, &part,
                                       &err) == 0)
                memcpy(bitmaps[part.block] + part.first_word, part.bits,
                       (size_t)part.words * 8);
        } else if (record.type == REC_POSTCOPY_DISCARD) {
            postcopy_discard_decode(record.body, record.length, blocks, 2, touch_run, NULL,
                                    &err);
        }
    }
    stream_reader_free(&reader);
    check_guards();
    checksum = crc;   /* keeps the reads */
    return 0;
}
