/* The per-block page bitmaps of a migration (dirty.h's layout): the
 * source's dirty bitmaps and the destination's written-page bitmaps. */
#include "ram_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ram_bitmaps_alloc(uint64_t **bitmaps, const struct ram_block *blocks, unsigned nr_blocks,
                      bool all_set, struct gw_error *err)
{
    for (unsigned b = 0; b < nr_blocks; b++) {
        uint64_t pages = ram_block_pages(&blocks[b]);
        uint64_t words = ram_block_bitmap_words(&blocks[b]);
        bitmaps[b] = calloc(words, sizeof(uint64_t));
        if (!bitmaps[b])
            return gw_error_set(err, -ENOMEM, "out of memory for the page bitmaps");
        if (!all_set)
            continue;
        memset(bitmaps[b], 0xff, words * sizeof(uint64_t));
        if (pages % 64)   /* no bit past the last page */
            bitmaps[b][words - 1] = (1ULL << (pages % 64)) - 1;
    }
    return 0;
}

void ram_bitmaps_free(uint64_t **bitmaps, unsigned nr_blocks)
{
    for (unsigned b = 0; b < nr_blocks; b++) {
        free(bitmaps[b]);
        bitmaps[b] = NULL;
    }
}

uint64_t ram_bitmaps_count(uint64_t *const *bitmaps, const struct ram_block *blocks,
                           unsigned nr_blocks)
{
    uint64_t pages = 0;

    for (unsigned b = 0; b < nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&blocks[b]);
        for (uint64_t w = 0; w < words; w++)
            pages += (uint64_t)__builtin_popcountll(bitmaps[b][w]);
    }
    return pages;
}
