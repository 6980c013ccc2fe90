/* The source's sender pool, the stream's page sink: the migration thread
 * fills records (page pointers into guest RAM, zero runs, device buffers)
 * into slots of a sending thread ("lane"), and each lane writes its own:
 * checking pages for zero (zero-page-detection multifd), computing each
 * page's CRC and compressing, so CPU work and socket copies overlap, and
 * with multifd spread over threads. Without multifd one lane writes to the
 * main channel while a pass runs. A guest write between the CRC and the
 * send makes the destination see a torn page; that write re-dirtied the
 * page, so a later pass sends it again. */
#include "multifd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

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

    /* `lock` guards every lane's queue, stopping and the first error;
     * `changed` wakes both sides. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool stopping;
    int send_rc;            /* the first error of any lane, kept */
    struct gw_error send_err;
};

static void *lane_thread(void *opaque);

static int start_lane(struct multifd_sender *sender, struct lane *lane, struct stream_writer *writer,
                      struct channel *channel, struct gw_error *err)
{
    lane->sender = sender;
    if (channel) {
        lane->own_writer.io = channel_stream_io(channel);
        lane->writer = &lane->own_writer;
        lane->multifd = true;
    } else {
        lane->writer = writer;
    }
    if (sender->compress) {
        lane->compressed_cap = ZSTD_compressBound((size_t)BATCH_PAGES * sender->page_size);
        lane->zstd = ZSTD_createCCtx();
        lane->compressed = malloc(lane->compressed_cap);
        if (!lane->zstd || !lane->compressed)
            return gw_error_set(err, -ENOMEM, "out of memory for zstd compression");
        ZSTD_CCtx_setParameter(lane->zstd, ZSTD_c_compressionLevel, sender->zstd_level);
    }
    int rc = pthread_create(&lane->thread, NULL, lane_thread, lane);
    if (rc)
        return gw_error_set(err, -rc, "cannot start a page-sending thread: %s", strerror(rc));
    lane->thread_started = true;
    return 0;
}

struct multifd_sender *multifd_sender_new(struct migration *migration,
                                          struct stream_writer *main_writer,
                                          uint32_t page_size, struct gw_error *err)
{
    const struct migration_config *config = &migration->config;
    struct multifd_sender *sender = calloc(1, sizeof(*sender));

    if (!sender) {
        gw_error_set(err, -ENOMEM, "out of memory for the page sender");
        return NULL;
    }
    sender->migration = migration;
    sender->page_size = page_size;
    sender->zero_detection = config->zero_detection;
    sender->compress = config->compression == COMPRESSION_ZSTD;
    pthread_mutex_lock(&migration->lock);
    sender->zstd_level = (int)migration->params.multifd_zstd_level;
    sender->packet_pages = (uint32_t)migration->params.packet_pages;
    pthread_mutex_unlock(&migration->lock);
    pthread_mutex_init(&sender->lock, NULL);
    pthread_mutex_init(&sender->pace_lock, NULL);
    pthread_cond_init(&sender->changed, NULL);
    sender->nr_lanes = config->multifd ? migration->nr_multifd_channels : 1;
    sender->nr_ram = config->multifd ? config->channels : 1;
    sender->lanes = calloc(sender->nr_lanes, sizeof(*sender->lanes));
    if (!sender->lanes) {
        gw_error_set(err, -ENOMEM, "out of memory for the page sender");
        multifd_sender_free(sender);
        return NULL;
    }
    for (unsigned i = 0; i < sender->nr_lanes; i++) {
        struct channel *channel = config->multifd ? &migration->multifd_channels[i] : NULL;
        if (start_lane(sender, &sender->lanes[i], main_writer, channel, err) < 0) {
            multifd_sender_free(sender);
            return NULL;
        }
    }
    return sender;
}

void multifd_sender_free(struct multifd_sender *sender)
{
    if (!sender)
        return;
    pthread_mutex_lock(&sender->lock);
    sender->stopping = true;
    pthread_cond_broadcast(&sender->changed);
    pthread_mutex_unlock(&sender->lock);
    for (unsigned i = 0; sender->lanes && i < sender->nr_lanes; i++) {
        struct lane *lane = &sender->lanes[i];
        if (lane->thread_started)
            pthread_join(lane->thread, NULL);
        ZSTD_freeCCtx(lane->zstd);
        free(lane->compressed);
    }
    free(sender->lanes);
    pthread_mutex_destroy(&sender->lock);
    pthread_mutex_destroy(&sender->pace_lock);
    pthread_cond_destroy(&sender->changed);
    free(sender);
}

/* When bytes sent since start are due at limit bytes/s. In 128 bits: a
 * limit up to 2^63 (libvirt's "unlimited") must mean no wait, and bytes *
 * 10^6 passes 64 bits at 18 TB. */
static uint64_t pace_due_us(uint64_t start_us, uint64_t bytes, uint64_t limit)
{
    unsigned __int128 us = (unsigned __int128)bytes * 1000000 / limit;

    return us > UINT64_MAX - start_us ? UINT64_MAX : start_us + (uint64_t)us;
}

/* Sleeps as needed to keep all lanes together to max-bandwidth, in slices
 * that notice cancel. */
static void pace(struct multifd_sender *sender, uint64_t bytes, bool vm_stopped)
{
    struct migration *migration = sender->migration;
    uint64_t limit, now = migration_now_us(), due_us;

    pthread_mutex_lock(&migration->lock);
    limit = migration->params.max_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!limit || vm_stopped)
        return;   /* the stop-copy phase is never throttled: it is downtime */
    pthread_mutex_lock(&sender->pace_lock);
    if (!sender->window_start_us || now - sender->window_start_us > 1000000) {
        sender->window_start_us = now;
        sender->window_bytes = 0;
    }
    sender->window_bytes += bytes;
    due_us = pace_due_us(sender->window_start_us, sender->window_bytes, limit);
    pthread_mutex_unlock(&sender->pace_lock);
    while (now < due_us && !migration_cancelled(migration)) {
        uint64_t nap = due_us - now > 20000 ? 20000 : due_us - now;
        struct timespec ts = { 0, (long)(nap * 1000) };
        nanosleep(&ts, NULL);
        now = migration_now_us();
    }
}

/* Writes one record on the lane and counts it. */
static int lane_write(struct lane *lane, uint32_t type, const struct iovec *parts, int nparts,
                      uint32_t crc_length, bool vm_stopped, struct gw_error *err)
{
    struct migration *migration = lane->sender->migration;
    uint64_t before = lane->writer->offset, bytes;
    int rc = stream_write_record_partial_crc(lane->writer, type, parts, nparts, crc_length, err);

    if (rc < 0)
        return rc;
    bytes = lane->writer->offset - before;
    migration_count_sent(migration, bytes, vm_stopped);
    if (lane->multifd)
        atomic_fetch_add(&migration->stats.multifd_bytes, bytes);
    if (type == REC_DEVICE)
        atomic_fetch_add(&migration->stats.device_transferred, bytes);
    pace(lane->sender, bytes, vm_stopped);
    return 0;
}

static uint32_t body_length(const struct iovec *parts, int nparts)
{
    size_t length = 0;

    for (int i = 0; i < nparts; i++)
        length += parts[i].iov_len;
    return (uint32_t)length;
}

static int write_zero_runs(struct lane *lane, uint32_t block, uint64_t (*runs)[2],
                           uint32_t count, bool vm_stopped, struct gw_error *err)
{
    uint32_t header[2] = { block, count };
    struct iovec parts[2] = { { header, sizeof(header) }, { runs, count * sizeof(runs[0]) } };
    uint64_t pages = 0;
    int rc;

    for (uint32_t i = 0; i < count; i++)
        pages += runs[i][1];
    rc = lane_write(lane, REC_ZERO_PAGES, parts, 2, body_length(parts, 2), vm_stopped, err);
    if (rc == 0)
        atomic_fetch_add(&lane->sender->migration->stats.zero_pages, pages);
    return rc;
}

/* zero-page-detection multifd: the lane reads each page; zero ones leave
 * the batch as runs. Returns the pages left with data. */
static uint32_t split_zero_pages(struct lane *lane, const struct send_slot *slot,
                                 uint32_t *nr_runs)
{
    uint32_t page_size = lane->sender->page_size, data = 0, runs = 0;

    for (uint32_t i = 0; i < slot->count; i++) {
        if (!ram_page_is_zero(slot->page[i], page_size)) {
            lane->data_pages[data] = slot->page[i];
            lane->data_index[data++] = slot->index[i];
        } else if (runs && lane->zero_runs[runs - 1][0] + lane->zero_runs[runs - 1][1] ==
                               slot->index[i]) {
            lane->zero_runs[runs - 1][1]++;
        } else {
            lane->zero_runs[runs][0] = slot->index[i];
            lane->zero_runs[runs++][1] = 1;
        }
    }
    *nr_runs = runs;
    return data;
}

static int compress_pages(struct lane *lane, uint32_t count, size_t *out_len,
                          struct gw_error *err)
{
    ZSTD_outBuffer out = { lane->compressed, lane->compressed_cap, 0 };
    size_t rc = ZSTD_CCtx_reset(lane->zstd, ZSTD_reset_session_only);

    for (uint32_t i = 0; i < count && !ZSTD_isError(rc); i++) {
        ZSTD_inBuffer in = { lane->data_pages[i], lane->sender->page_size, 0 };
        ZSTD_EndDirective mode = i + 1 == count ? ZSTD_e_end : ZSTD_e_continue;
        do {
            rc = ZSTD_compressStream2(lane->zstd, &out, &in, mode);
        } while (!ZSTD_isError(rc) && (in.pos < in.size || (mode == ZSTD_e_end && rc != 0)));
    }
    if (ZSTD_isError(rc))
        return gw_error_set(err, -EIO, "zstd compression failed: %s", ZSTD_getErrorName(rc));
    *out_len = out.pos;
    return 0;
}

/* PAGES (or PAGES_ZSTD): meta (block, count, indexes, CRCs, padding to 8),
 * covered by the record CRC, then the pages: straight from guest memory,
 * adjacent pages in one iovec, or one zstd frame. */
static int write_pages(struct lane *lane, uint32_t block, uint32_t count, bool vm_stopped,
                       struct gw_error *err)
{
    uint32_t page_size = lane->sender->page_size;
    uint32_t crc_length = 8 + 12 * count + (count % 2) * 4;
    int nparts = 1, rc;

    memcpy(lane->meta, &block, 4);
    memcpy(lane->meta + 4, &count, 4);
    memcpy(lane->meta + 8, lane->data_index, 8 * count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t crc = stream_crc32c(0, lane->data_pages[i], page_size);
        memcpy(lane->meta + 8 + 8 * count + 4 * i, &crc, 4);
    }
    memset(lane->meta + 8 + 12 * count, 0, 4);
    lane->parts[0] = (struct iovec){ lane->meta, crc_length };
    if (lane->sender->compress) {
        size_t len = 0;
        if ((rc = compress_pages(lane, count, &len, err)) < 0)
            return rc;
        lane->parts[1] = (struct iovec){ lane->compressed, len };
        rc = lane_write(lane, REC_PAGES_ZSTD, lane->parts, 2, crc_length + (uint32_t)len,
                        vm_stopped, err);
    } else {
        for (uint32_t i = 0; i < count; i++) {
            struct iovec *last = &lane->parts[nparts - 1];
            if (nparts > 1 && (const uint8_t *)last->iov_base + last->iov_len == lane->data_pages[i])
                last->iov_len += page_size;
            else
                lane->parts[nparts++] = (struct iovec){ (void *)lane->data_pages[i], page_size };
        }
        rc = lane_write(lane, REC_PAGES, lane->parts, nparts, crc_length, vm_stopped, err);
    }
    if (rc == 0)
        atomic_fetch_add(&lane->sender->migration->stats.normal_pages, count);
    return rc;
}

static int send_pages_slot(struct lane *lane, struct send_slot *slot, struct gw_error *err)
{
    uint32_t data = slot->count, runs = 0;
    int rc = 0;

    if (lane->sender->zero_detection == ZERO_DETECT_MULTIFD) {
        data = split_zero_pages(lane, slot, &runs);
    } else {
        memcpy(lane->data_pages, slot->page, slot->count * sizeof(slot->page[0]));
        memcpy(lane->data_index, slot->index, slot->count * sizeof(slot->index[0]));
    }
    if (runs)
        rc = write_zero_runs(lane, slot->block, lane->zero_runs, runs, slot->vm_stopped, err);
    if (rc == 0 && data)
        rc = write_pages(lane, slot->block, data, slot->vm_stopped, err);
    return rc;
}

static int send_slot(struct lane *lane, struct send_slot *slot, struct gw_error *err)
{
    struct iovec parts[2];

    switch (slot->kind) {
    case SLOT_PAGES:
        return send_pages_slot(lane, slot, err);
    case SLOT_ZERO:
        return write_zero_runs(lane, slot->block, slot->zero_runs, slot->count, slot->vm_stopped,
                               err);
    case SLOT_SYNC:
        parts[0] = (struct iovec){ &slot->pass, sizeof(slot->pass) };
        return lane_write(lane, REC_SYNC, parts, 1, sizeof(slot->pass), slot->vm_stopped, err);
    case SLOT_END:
        return lane_write(lane, REC_CHANNEL_END, NULL, 0, 0, slot->vm_stopped, err);
    case SLOT_DEVICE:
        parts[0] = (struct iovec){ slot->device_header, DEVICE_RECORD_HEADER };
        parts[1] = (struct iovec){ (void *)slot->device_data, slot->device_len };
        return lane_write(lane, REC_DEVICE, parts, 2, body_length(parts, 2), slot->vm_stopped,
                          err);
    }
    return 0;
}

/* A lane's thread: owns its channel's write side (or, without multifd, the
 * main channel's while a pass runs). */
static void *lane_thread(void *opaque)
{
    struct lane *lane = opaque;
    struct multifd_sender *sender = lane->sender;
    struct gw_error err = { 0 };

    pthread_mutex_lock(&sender->lock);
    for (;;) {
        while (!lane->queued && !sender->stopping)
            pthread_cond_wait(&sender->changed, &sender->lock);
        if (!lane->queued)
            break;
        struct send_slot *slot = &lane->slots[lane->next_send];
        int rc = sender->send_rc;
        pthread_mutex_unlock(&sender->lock);
        if (rc == 0)   /* after an error, queued records are dropped */
            rc = send_slot(lane, slot, &err);
        pthread_mutex_lock(&sender->lock);
        if (rc < 0 && !sender->send_rc) {
            sender->send_rc = rc;
            sender->send_err = err;
        }
        if (slot->kind == SLOT_DEVICE && slot->sent)
            atomic_store(slot->sent, true);
        lane->next_send = (lane->next_send + 1) % SEND_SLOTS;
        lane->queued--;
        pthread_cond_broadcast(&sender->changed);
    }
    pthread_mutex_unlock(&sender->lock);
    return NULL;
}

/* The first error of any lane; the caller holds sender->lock (lanes write
 * it under the lock). */
static int sender_error_locked(struct multifd_sender *sender, struct gw_error *err)
{
    int rc = sender->send_rc;

    if (rc < 0 && err)
        *err = sender->send_err;
    return rc;
}

static int sender_error(struct multifd_sender *sender, struct gw_error *err)
{
    pthread_mutex_lock(&sender->lock);
    int rc = sender_error_locked(sender, err);
    pthread_mutex_unlock(&sender->lock);
    return rc;
}

/* Waits for a free slot on one of lanes [first, first + count), taken
 * round robin from *next; returns it, or NULL after a send error. */
static struct send_slot *claim_slot(struct multifd_sender *sender, unsigned first, unsigned count,
                                    unsigned *next, struct lane **lane_out)
{
    struct send_slot *slot = NULL;

    pthread_mutex_lock(&sender->lock);
    while (!slot && !sender->send_rc) {
        for (unsigned i = 0; i < count && !slot; i++) {
            struct lane *lane = &sender->lanes[first + (*next + i) % count];
            if (lane->queued < SEND_SLOTS) {
                slot = &lane->slots[lane->next_fill];
                *lane_out = lane;
                *next = (*next + i + 1) % count;
            }
        }
        if (!slot)
            pthread_cond_wait(&sender->changed, &sender->lock);
    }
    pthread_mutex_unlock(&sender->lock);
    return slot;
}

static struct send_slot *claim_ram_slot(struct multifd_sender *sender, struct lane **lane)
{
    return claim_slot(sender, 0, sender->nr_ram, &sender->next_ram, lane);
}

static void queue_slot(struct multifd_sender *sender, struct lane *lane)
{
    pthread_mutex_lock(&sender->lock);
    lane->next_fill = (lane->next_fill + 1) % SEND_SLOTS;
    lane->queued++;
    pthread_cond_broadcast(&sender->changed);
    pthread_mutex_unlock(&sender->lock);
}

/* Returns once every queued record of every lane is written (or one failed). */
static int drain(struct multifd_sender *sender, struct gw_error *err)
{
    bool busy = true;
    int rc;

    pthread_mutex_lock(&sender->lock);
    while (busy) {
        busy = false;
        for (unsigned i = 0; i < sender->nr_lanes; i++)
            busy |= sender->lanes[i].queued != 0;
        if (busy)
            pthread_cond_wait(&sender->changed, &sender->lock);
    }
    rc = sender_error_locked(sender, err);
    pthread_mutex_unlock(&sender->lock);
    return rc;
}

static int flush_batch(struct multifd_sender *sender, struct gw_error *err)
{
    if (!sender->batch)
        return 0;
    sender->batch = NULL;
    queue_slot(sender, sender->batch_lane);
    return sender_error(sender, err);
}

static int flush_zero(struct multifd_sender *sender, struct gw_error *err)
{
    struct send_slot *slot;
    struct lane *lane;

    if (!sender->zero_count)
        return 0;
    slot = claim_ram_slot(sender, &lane);
    if (!slot)
        return sender_error(sender, err);
    slot->kind = SLOT_ZERO;
    slot->block = sender->zero_block;
    slot->count = sender->zero_count;
    slot->vm_stopped = sender->vm_stopped;
    memcpy(slot->zero_runs, sender->zero_runs, sender->zero_count * sizeof(sender->zero_runs[0]));
    sender->zero_count = 0;
    queue_slot(sender, lane);
    return 0;
}

static int add_zero(struct multifd_sender *sender, uint32_t block, uint64_t page,
                    struct gw_error *err)
{
    int rc;

    if (sender->zero_count && sender->zero_block == block) {
        uint64_t *last = sender->zero_runs[sender->zero_count - 1];
        if (last[0] + last[1] == page) {
            last[1]++;
            return 0;
        }
    }
    if (sender->zero_count == STREAM_ZERO_RUNS_PER_RECORD ||
        (sender->zero_count && sender->zero_block != block)) {
        rc = flush_zero(sender, err);
        if (rc < 0)
            return rc;
    }
    sender->zero_block = block;
    sender->zero_runs[sender->zero_count][0] = page;
    sender->zero_runs[sender->zero_count][1] = 1;
    sender->zero_count++;
    return 0;
}

/* Pages go straight into a slot of the lane that will send them. */
static int add_page(struct multifd_sender *sender, uint32_t block, uint64_t page,
                    const uint8_t *data, struct gw_error *err)
{
    struct send_slot *slot = sender->batch;
    int rc;

    if (slot && (slot->count == sender->packet_pages || slot->block != block)) {
        rc = flush_batch(sender, err);
        if (rc < 0)
            return rc;
        slot = NULL;
    }
    if (!slot) {
        slot = claim_ram_slot(sender, &sender->batch_lane);
        if (!slot)
            return sender_error(sender, err);
        slot->kind = SLOT_PAGES;
        slot->block = block;
        slot->count = 0;
        slot->vm_stopped = sender->vm_stopped;
        sender->batch = slot;
    }
    slot->index[slot->count] = page;
    slot->page[slot->count++] = data;
    return 0;
}

/* Queues a record without data on every lane of [first, first + count). */
static int queue_on_lanes(struct multifd_sender *sender, unsigned first, unsigned count,
                          enum slot_kind kind, uint64_t pass, struct gw_error *err)
{
    for (unsigned i = 0; i < count; i++) {
        unsigned next = 0;
        struct lane *lane;
        struct send_slot *slot = claim_slot(sender, first + i, 1, &next, &lane);
        if (!slot)
            return sender_error(sender, err);
        slot->kind = kind;
        slot->pass = pass;
        slot->vm_stopped = sender->vm_stopped;
        queue_slot(sender, lane);
    }
    return 0;
}

/* --- the page sink: called by the migration thread only --- */

static int sink_begin_pass(void *opaque, uint64_t pass, bool vm_stopped, struct gw_error *err)
{
    struct multifd_sender *sender = opaque;

    (void)pass;
    sender->vm_stopped = vm_stopped;
    sender->batch = NULL;
    return sender_error(sender, err);
}

static int sink_page(void *opaque, uint32_t block, uint64_t page, const uint8_t *data,
                     struct gw_error *err)
{
    return add_page(opaque, block, page, data, err);
}

static int sink_zero_page(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    return add_zero(opaque, block, page, err);
}

static int sink_end_pass(void *opaque, uint64_t pass, struct gw_error *err)
{
    struct multifd_sender *sender = opaque;
    int rc;

    if ((rc = flush_batch(sender, err)) < 0 || (rc = flush_zero(sender, err)) < 0)
        return rc;
    /* Invariant 3: the destination holds each RAM channel at SYNC(pass)
     * until all have reached it. */
    if (sender->migration->config.multifd &&
        (rc = queue_on_lanes(sender, 0, sender->nr_ram, SLOT_SYNC, pass, err)) < 0)
        return rc;
    return drain(sender, err);
}

/* Records already queued are written (or dropped after an error) before
 * this returns: none may point at a batch the next pass refills. */
static void sink_abort_pass(void *opaque)
{
    struct multifd_sender *sender = opaque;

    sender->batch = NULL;
    sender->zero_count = 0;
    drain(sender, NULL);
}

static const struct page_sink_ops sink_ops = {
    .begin_pass = sink_begin_pass,
    .page = sink_page,
    .zero_page = sink_zero_page,
    .end_pass = sink_end_pass,
    .abort_pass = sink_abort_pass,
};

struct page_sink multifd_sender_sink(struct multifd_sender *sender)
{
    return (struct page_sink){ .ops = &sink_ops, .opaque = sender };
}

int multifd_sender_wait_sent(struct multifd_sender *sender, atomic_bool *sent, struct gw_error *err)
{
    int rc;

    pthread_mutex_lock(&sender->lock);
    while (!atomic_load(sent) && !sender->send_rc)
        pthread_cond_wait(&sender->changed, &sender->lock);
    rc = sender_error_locked(sender, err);
    pthread_mutex_unlock(&sender->lock);
    return rc;
}

int multifd_sender_queue_device(struct multifd_sender *sender, const uint8_t *header, const uint8_t *data,
                            size_t len, atomic_bool *sent, struct gw_error *err)
{
    unsigned nr_device = sender->nr_lanes - sender->nr_ram;
    struct send_slot *slot;
    struct lane *lane;

    slot = nr_device ? claim_slot(sender, sender->nr_ram, nr_device, &sender->next_device, &lane)
                     : claim_ram_slot(sender, &lane);
    if (!slot)
        return sender_error(sender, err);
    slot->kind = SLOT_DEVICE;
    slot->vm_stopped = true;
    memcpy(slot->device_header, header, DEVICE_RECORD_HEADER);
    slot->device_data = data;
    slot->device_len = len;
    slot->sent = sent;
    if (sent)
        atomic_store(sent, false);
    queue_slot(sender, lane);
    return 0;
}

int multifd_sender_finish(struct multifd_sender *sender, struct gw_error *err)
{
    int rc = queue_on_lanes(sender, 0, sender->nr_lanes, SLOT_END, 0, err);

    return rc < 0 ? rc : drain(sender, err);
}
