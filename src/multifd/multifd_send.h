/* The sender pool's insides, shared by the pool (multifd_send.c: slots,
 * queues, the page sink) and what one lane writes (multifd_lane.c).
 * Private to src/multifd. */
#ifndef GODWIT_MULTIFD_SEND_H
#define GODWIT_MULTIFD_SEND_H

#include <zstd.h>

#include "multifd.h"

/* Pages per PAGES record the sender makes: the most the format allows.
 * Fewer syscalls and records per GiB; measured ~10% faster than 64 pages
 * here (pages are sent from guest memory, so no copy wants a small batch). */
#define BATCH_PAGES STREAM_PAGES_PER_RECORD
/* Records ready to write, in order, per lane: the migration thread fills
 * one while the lane writes the one before. */
#define SEND_SLOTS 8

enum slot_kind { SLOT_PAGES, SLOT_ZERO, SLOT_SYNC, SLOT_END, SLOT_DEVICE };

struct send_slot {
    enum slot_kind kind;
    bool vm_stopped;
    uint32_t block, count;                   /* PAGES; ZERO: runs */
    uint64_t index[BATCH_PAGES];             /* PAGES */
    const uint8_t *page[BATCH_PAGES];        /* PAGES: in guest memory */
    uint64_t zero_runs[STREAM_ZERO_RUNS_PER_RECORD][2];   /* ZERO */
    uint64_t pass;                           /* SYNC */
    uint8_t device_header[DEVICE_RECORD_HEADER];          /* DEVICE */
    const uint8_t *device_data;
    size_t device_len;
    atomic_bool *sent;                       /* DEVICE: set once written (or dropped) */
};

/* A lane's own scratch, used by its thread only. */
struct lane {
    struct multifd_sender *sender;
    struct stream_writer *writer;   /* the main channel's, or own_writer */
    struct stream_writer own_writer;
    bool multifd;
    pthread_t thread;
    bool thread_started;
    struct send_slot slots[SEND_SLOTS];
    unsigned next_fill, next_send, queued;   /* under sender->lock */
    /* The record being written: meta (block, count, indexes, CRCs, padding). */
    uint8_t meta[8 + 12 * BATCH_PAGES + 4];
    struct iovec parts[1 + BATCH_PAGES];
    uint64_t zero_runs[BATCH_PAGES][2];
    const uint8_t *data_pages[BATCH_PAGES];
    uint64_t data_index[BATCH_PAGES];
    ZSTD_CCtx *zstd;
    uint8_t *compressed;
    size_t compressed_cap;
};

struct multifd_sender {
    struct migration *migration;
    uint32_t page_size;
    bool vm_stopped;
    enum zero_page_detection zero_detection;
    bool compress;
    int zstd_level;
    uint32_t packet_pages;

    /* Lanes: [0, nr_ram) carry RAM (and device state when there are no
     * device lanes), [nr_ram, nr_lanes) device state only. */
    struct lane *lanes;
    unsigned nr_lanes, nr_ram;
    unsigned next_ram, next_device;          /* round robin: migration thread */

    /* The batch being filled by the migration thread. */
    struct send_slot *batch;
    struct lane *batch_lane;
    uint32_t zero_block, zero_count;
    uint64_t zero_runs[STREAM_ZERO_RUNS_PER_RECORD][2];

    pthread_mutex_t pace_lock;
    uint64_t window_start_us, window_bytes;   /* max-bandwidth pacing, all lanes */
    uint64_t paced_until_us;  /* end of the last sleep counted in paced_us */

    /* `lock` guards every lane's queue, stopping and the first error;
     * `changed` wakes both sides. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool stopping;
    int send_rc;            /* the first error of any lane, kept */
    struct gw_error send_err;
};

/* Writes one slot's record(s) on the lane's channel and counts them; the
 * lane's thread only, outside the pool's lock. */
int multifd_lane_send(struct lane *lane, struct send_slot *slot, struct gw_error *err);

#endif
