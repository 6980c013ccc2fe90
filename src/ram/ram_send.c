/* The source's RAM walker: walks the dirty bitmaps in chunks, re-arms
 * tracking for a chunk just before reading it, and hands each page to the
 * page sink, as a zero page where that is known without sending its bytes.
 * Runs on the migration thread; owns the bitmaps while a pass runs. */
#include "ram_internal.h"

#include <errno.h>
#include <string.h>

static int send_chunk(struct ram_walker *walker, const struct page_sink *sink,
                      uint32_t block_index, uint64_t first_page, uint64_t *words,
                      unsigned nr_words, bool clear_tracker, struct gw_error *err)
{
    const struct ram_block *block = &walker->blocks[block_index];
    uint64_t bits[RAM_CHUNK_WORDS], zero[RAM_CHUNK_WORDS];
    bool legacy = walker->zero.mode == ZERO_DETECT_LEGACY;
    int rc;

    memcpy(bits, words, nr_words * sizeof(uint64_t));
    memset(words, 0, nr_words * sizeof(uint64_t));
    if (clear_tracker) {
        rc = walker->dirty->clear(walker->dirty_opaque, block_index, first_page, bits, nr_words,
                                  err);
        if (rc < 0)
            return rc;
    }
    ram_zero_hints_find(&walker->zero, walker->blocks, block_index, first_page, nr_words, zero);
    for (unsigned w = 0; w < nr_words; w++) {
        for (uint64_t word = bits[w]; word; word &= word - 1) {
            unsigned bit = (unsigned)__builtin_ctzll(word);
            uint64_t page = first_page + w * 64 + bit;
            const uint8_t *data = block->host + page * block->page_size;
            bool is_zero = (zero[w] >> bit & 1) ||
                           (legacy && ram_page_is_zero(data, block->page_size));
            rc = is_zero ? sink->ops->zero_page(sink->opaque, block_index, page, err)
                         : sink->ops->page(sink->opaque, block_index, page, data, err);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int walk_block(struct ram_walker *walker, const struct page_sink *sink, unsigned b,
                      bool clear_tracker, struct gw_error *err)
{
    uint64_t *bitmap = walker->bitmaps[b];
    uint64_t words = ram_block_bitmap_words(&walker->blocks[b]);

    for (uint64_t w = 0; w < words; w += RAM_CHUNK_WORDS) {
        unsigned nr_words = words - w < RAM_CHUNK_WORDS ? (unsigned)(words - w) : RAM_CHUNK_WORDS;
        bool any = false;
        for (unsigned i = 0; i < nr_words; i++)
            any |= bitmap[w + i] != 0;
        if (!any)
            continue;
        if (atomic_load(walker->cancelled))
            return gw_error_set(err, -ECANCELED, "the migration was cancelled");
        if (walker->end_pass_now && atomic_load(walker->end_pass_now))
            return 0;
        int rc = send_chunk(walker, sink, b, w * 64, bitmap + w, nr_words, clear_tracker, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int ram_send_dirty(struct ram_walker *walker, const struct page_sink *sink, bool clear_tracker,
                   bool vm_stopped, uint64_t pass, struct gw_error *err)
{
    int rc = sink->ops->begin_pass(sink->opaque, pass, vm_stopped, err);

    for (unsigned b = 0; rc == 0 && b < walker->nr_blocks; b++)
        rc = walk_block(walker, sink, b, clear_tracker, err);
    if (rc < 0) {
        sink->ops->abort_pass(sink->opaque);
        return rc;
    }
    /* The caller writes its own records next (PASS_END, DEVICE, END): the
     * sink has put all of the pass on the wire when this returns. */
    return sink->ops->end_pass(sink->opaque, pass, err);
}
