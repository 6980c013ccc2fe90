/* Dirty tracking: how the engine learns which guest pages changed. A
 * provider (the KVM dirty log in godwit-vm) fills and re-arms per-block
 * bitmaps; the engine never sees KVM. Bitmaps have one bit per page, bit i
 * of word w is page 64*w + i. */
#ifndef GODWIT_DIRTY_H
#define GODWIT_DIRTY_H

#include <stdint.h>

#include <godwit/error.h>

/* Where a sync's time went, in microseconds, for query-migrate: fetch is
 * asking the tracker's source (KVM's dirty log, the ring's harvest), merge
 * is ORing what it found into the engine's bitmap. A tracker adds to both
 * (several blocks make one sync); one that cannot tell them apart puts
 * everything in fetch. */
struct dirty_sync_times {
    uint64_t fetch_us;
    uint64_t merge_us;
};

struct dirty_tracker_ops {
    /* Starts tracking every block. Afterwards every page counts as dirty
     * until cleared (the first pass sends everything). */
    int (*start)(void *opaque, struct gw_error *err);
    /* ORs the pages dirtied since they were last cleared into bitmap, and
     * adds the time it took to times. */
    int (*sync)(void *opaque, unsigned block, uint64_t *bitmap, struct dirty_sync_times *times,
                struct gw_error *err);
    /* Re-arms tracking for the pages set in bits, which covers pages
     * [first_page, first_page + 64 * nr_words) of block: called just before
     * those pages are read for sending, so a write after it is caught by the
     * next sync. first_page is a multiple of 64. */
    int (*clear)(void *opaque, unsigned block, uint64_t first_page, const uint64_t *bits,
                 unsigned nr_words, struct gw_error *err);
    /* Stops tracking. Safe to call when start failed or was never called. */
    void (*stop)(void *opaque);
};

#endif
