/* Postcopy (docs/stream.md, "Postcopy"): the records only it uses, and the
 * destination's side of guest RAM while the guest runs there before every
 * page has arrived: RAM registered with userfaultfd (missing mode), faults
 * turned into page requests, pages placed whole with UFFDIO_COPY or
 * UFFDIO_ZEROPAGE, each at most once. Knows nothing of the migration
 * object: requests leave through a callback. */
#ifndef GODWIT_POSTCOPY_H
#define GODWIT_POSTCOPY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/pages.h>
#include <godwit/ram.h>
#include <godwit/stream.h>

/* --- the wire (postcopy_wire.c) --- */

/* RP_REQ_PAGES: u32 block, u32 pages (1 to 256), u64 first page. */
#define POSTCOPY_REQUEST_SIZE 16
#define POSTCOPY_REQUEST_PAGES_MAX STREAM_PAGES_PER_RECORD
struct postcopy_request {
    uint32_t block, pages;
    uint64_t first;
};
void postcopy_request_encode(const struct postcopy_request *request, uint8_t *body);
/* Checks the length, the block against nr_blocks and the pages against
 * the block before it fills *request. */
int postcopy_request_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                            unsigned nr_blocks, struct postcopy_request *request,
                            struct gw_error *err);

/* POSTCOPY_DISCARD: u32 block, u32 count (1 to 4096), count runs of
 * {u64 first, u64 pages}, each inside the block. Calls discard for each
 * run once all of them are checked. */
#define POSTCOPY_DISCARD_RUNS_MAX STREAM_ZERO_RUNS_PER_RECORD
int postcopy_discard_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                            unsigned nr_blocks,
                            int (*discard)(void *opaque, uint32_t block, uint64_t first,
                                           uint64_t pages, struct gw_error *err),
                            void *opaque, struct gw_error *err);

/* POSTCOPY_ADVISE: u32 flags, u32 reserved (0). */
#define POSTCOPY_ADVISE_SIZE 8
#define POSTCOPY_ADVISE_PREEMPT 1u   /* requested pages come on a channel of their own */

/* The source's side of both channels: pages [first, first + count) of a
 * block, as they are in RAM, as ZERO_PAGES runs and PAGES records of up to
 * 256 pages; adds what it wrote to *bytes, *normal and *zero. */
int postcopy_write_pages(struct stream_writer *writer, const struct ram_block *ram,
                         uint32_t block, uint64_t first, uint64_t count, uint64_t *bytes,
                         uint64_t *normal, uint64_t *zero, struct gw_error *err);

/* RP_RECV_BITMAP (recovery): u32 block, u32 words (1 to 8192), u64
 * first_word, then `words` words of the destination's received bitmap,
 * inside the block's bitmap. Checked before *out is filled. */
#define POSTCOPY_BITMAP_WORDS_MAX 8192
struct postcopy_bitmap_part {
    uint32_t block, words;
    uint64_t first_word;
    const uint8_t *bits;     /* into the record's body */
};
int postcopy_bitmap_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                           unsigned nr_blocks, struct postcopy_bitmap_part *out,
                           struct gw_error *err);

/* The source's dirty bits after the switch: read and cleared by the
 * migration thread and, with postcopy-preempt, the return-path thread. */
static inline bool postcopy_test_dirty(const uint64_t *bitmap, uint64_t page)
{
    return __atomic_load_n(&bitmap[page / 64], __ATOMIC_RELAXED) >> (page % 64) & 1;
}

static inline void postcopy_clear_dirty(uint64_t *bitmap, uint64_t first, uint64_t count)
{
    for (uint64_t page = first; page < first + count; page++)
        __atomic_fetch_and(&bitmap[page / 64], ~(1ULL << (page % 64)), __ATOMIC_RELAXED);
}

/* --- the destination's RAM (postcopy_uffd.c) --- */

/* QEMU 10.1's postcopy-latency-dist: bucket N counts requests answered in
 * [2^N, 2^(N+1)) us; the last takes everything longer. */
#define POSTCOPY_LATENCY_BUCKETS 32
#define POSTCOPY_VCPUS_MAX 64

struct postcopy_stats {
    _Atomic uint64_t requests;          /* page requests sent */
    _Atomic uint64_t placed, duplicates;  /* pages placed; arrivals of a page already here */
    _Atomic uint64_t latency_total_us;  /* of the answered requests */
    _Atomic uint64_t latency[POSTCOPY_LATENCY_BUCKETS];
    /* How long some thread of the VMM (a vCPU or another) waited for a
     * page, overlaps counted once. */
    _Atomic uint64_t wait_us;
    /* With the vCPUs' thread ids: how long every vCPU waited at once
     * (QEMU's postcopy-blocktime), and each vCPU (postcopy-vcpu-blocktime). */
    unsigned nr_vcpus;
    _Atomic uint64_t blocktime_us;
    _Atomic uint64_t vcpu_blocktime_us[POSTCOPY_VCPUS_MAX];
};

struct postcopy_ram;

/* request: sends one RP_REQ_PAGES (any thread; the callee serialises). */
struct postcopy_ram *postcopy_ram_new(const struct ram_block *blocks, unsigned nr_blocks,
                                      int (*request)(void *opaque,
                                                     const struct postcopy_request *request,
                                                     struct gw_error *err),
                                      void *opaque, struct gw_error *err);
/* Whether this host can do postcopy for these blocks' memory: a sentence
 * if not (no userfaultfd, a kind of memory it cannot register). */
int postcopy_ram_supported(const struct ram_block *blocks, unsigned nr_blocks,
                           struct gw_error *err);
/* The guest is stopped: makes the pages of a run missing again (they were
 * sent, then dirtied on the source). */
int postcopy_ram_discard(struct postcopy_ram *ram, uint32_t block, uint64_t first,
                         uint64_t pages, struct gw_error *err);
/* Registers every block for missing faults and starts the fault thread.
 * vcpu_tids (may be NULL): the vCPU threads, to count their waits. */
int postcopy_ram_listen(struct postcopy_ram *ram, const int *vcpu_tids, unsigned nr_vcpus,
                        struct gw_error *err);
/* Where pages land from now on: staged, then placed atomically. One
 * loading thread per lane: 0 the main channel, 1 the preempt channel. */
#define POSTCOPY_LANES 2
struct page_landing postcopy_ram_landing(struct postcopy_ram *ram, unsigned lane);
/* Every page is here: unregisters (a thread still waiting on a page that
 * was zero and never sent gets the zero page) and stops the fault thread. */
void postcopy_ram_finish(struct postcopy_ram *ram);
const struct postcopy_stats *postcopy_ram_stats(const struct postcopy_ram *ram);
/* Recovery: the pages placed (or found placed) in postcopy, a bitmap per
 * block; and every request still unanswered asked for again (its first
 * request went on a link that broke). */
const uint64_t *postcopy_ram_received(const struct postcopy_ram *ram, uint32_t block);
void postcopy_ram_request_again(struct postcopy_ram *ram);
void postcopy_ram_free(struct postcopy_ram *ram);

#endif
