/* Guest RAM in a migration, the engine's side: the dirty bitmaps, the
 * walker that finds what a pass sends (and the zero pages it need not
 * read), the RAM_BLOCKS record, and the loader that checks every page
 * before it lands. Knows nothing of channels or the migration object:
 * pages leave through a page sink and land through a page landing
 * (godwit/pages.h). */
#ifndef GODWIT_RAM_INTERNAL_H
#define GODWIT_RAM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/dirty.h>
#include <godwit/pages.h>
#include <godwit/ram.h>
#include <godwit/stream.h>

enum zero_page_detection { ZERO_DETECT_NONE, ZERO_DETECT_LEGACY, ZERO_DETECT_MULTIFD };

/* One bitmap per block in bitmaps[]: every page set (the source's dirty
 * bitmaps before the first pass) or none. */
int ram_bitmaps_alloc(uint64_t **bitmaps, const struct ram_block *blocks, unsigned nr_blocks,
                      bool all_set, struct gw_error *err);
void ram_bitmaps_free(uint64_t **bitmaps, unsigned nr_blocks);
uint64_t ram_bitmaps_count(uint64_t *const *bitmaps, const struct ram_block *blocks,
                           unsigned nr_blocks);

bool ram_page_is_zero(const uint8_t *page, size_t len);

/* --- source (ram_send.c, ram_zero.c) --- */

/* Pages re-armed and read together: one KVM_CLEAR_DIRTY_LOG per chunk. */
#define RAM_CHUNK_WORDS 4
#define RAM_CHUNK_PAGES (RAM_CHUNK_WORDS * 64)

/* Pages of a chunk known to be zero without reading them. */
struct ram_zero_hints {
    enum zero_page_detection mode;
    int pagemap_fd;         /* /proc/self/pagemap, or -1: no hints for anonymous memory */
    uint64_t pagemap[RAM_CHUNK_PAGES];
    /* Per block: the hint holds for how it is mapped (private anonymous
     * memory, or a shared mapping of its fd); where not, every page is read. */
    bool sound[STREAM_BLOCKS_MAX];
};
void ram_zero_hints_init(struct ram_zero_hints *hints, enum zero_page_detection mode,
                         const struct ram_block *blocks, unsigned nr_blocks);
void ram_zero_hints_free(struct ram_zero_hints *hints);
/* Sets the bits in zero[nr_words] of the pages from first_page on that are
 * known to be zero. */
void ram_zero_hints_find(struct ram_zero_hints *hints, const struct ram_block *blocks,
                         unsigned block_index, uint64_t first_page, unsigned nr_words,
                         uint64_t *zero);

/* The migration thread's walk over the dirty bitmaps. */
struct ram_walker {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    uint64_t **bitmaps;
    const struct dirty_tracker_ops *dirty;
    void *dirty_opaque;
    struct ram_zero_hints zero;
    atomic_bool *cancelled;
    /* Set: the pass ends where it is, its pages still dirty left set in
     * the bitmaps (a switchover asked for now sends them stopped). */
    atomic_bool *end_pass_now;
};
/* Hands every page whose bit is set to the sink, clearing bits as it goes;
 * clear_tracker re-arms tracking for a chunk before reading it. Returns
 * once the sink has ended the pass. */
int ram_send_dirty(struct ram_walker *walker, const struct page_sink *sink, bool clear_tracker,
                   bool vm_stopped, uint64_t pass, struct gw_error *err);

/* --- both: RAM_BLOCKS (ram_load.c) --- */

/* The RAM_BLOCKS record body for the source's blocks; returns its length. */
uint32_t ram_blocks_record(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *body);
int ram_check_blocks(const struct ram_block *blocks, unsigned nr_blocks, uint32_t page_size,
                     const uint8_t *body, uint32_t length, struct gw_error *err);

/* --- destination (ram_load.c, ram_landing.c) --- */

/* Pages whose data failed their CRC (a guest write during the send): each
 * must arrive whole again before END. `lock` guards the bitmaps (allocated
 * when needed) and offset. */
struct torn_pages {
    pthread_mutex_t lock;
    uint64_t *bitmaps[STREAM_BLOCKS_MAX];
    _Atomic uint64_t pages;
    uint64_t offset;
};

/* What every thread that loads pages of one migration shares. Never
 * copied: receivers hold a pointer. */
struct ram_loader {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    struct page_landing landing;
    struct torn_pages torn;
};

/* What one loading thread counts, added up at END. */
struct ram_load_counts {
    uint64_t normal_pages, zero_pages;
};

void ram_loader_init(struct ram_loader *loader, const struct ram_block *blocks,
                     unsigned nr_blocks, const struct page_landing *landing);
void ram_loader_destroy(struct ram_loader *loader);
/* A PAGES record: metadata checked, data read into the landing's targets,
 * each page's CRC checked (a mismatch marks it torn). */
int ram_load_pages(struct stream_reader *reader, struct stream_record *record,
                   struct ram_loader *loader, struct ram_load_counts *counts,
                   struct gw_error *err);
/* A zstd-compressed PAGES record (multifd channels): scratch holds
 * STREAM_PAGES_PER_RECORD pages. */
int ram_load_pages_zstd(struct stream_record *record, struct ram_loader *loader,
                        struct ram_load_counts *counts, uint32_t page_size, void *dctx,
                        uint8_t *scratch, struct gw_error *err);
int ram_load_zero_pages(struct ram_loader *loader, struct ram_load_counts *counts,
                        uint32_t page_size, const uint8_t *body, uint32_t length,
                        struct gw_error *err);
/* Postcopy's discard: those pages will come again, whole or not before. */
void ram_loader_forget_torn(struct ram_loader *loader, uint32_t block, uint64_t first,
                            uint64_t pages);
/* At END: no page may still be torn. */
int ram_check_torn(struct ram_loader *loader, struct gw_error *err);

/* The direct landing: pages are read straight into guest RAM (precopy:
 * the guest does not run here yet). With `written` (RAM was zero at the
 * start), it remembers which pages were written, so a zero page that was
 * never written costs nothing. */
struct ram_direct_landing {
    const struct ram_block *blocks;
    uint64_t **written;     /* NULL, or a bitmap per block; bits change atomically */
};
struct page_landing ram_direct_landing(struct ram_direct_landing *direct);

#endif
