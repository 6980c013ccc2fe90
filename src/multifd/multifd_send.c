/* The source's sender pool, the stream's page sink: the migration thread
 * fills records (page pointers into guest RAM, zero runs, device buffers)
 * into slots of a sending thread ("lane"), and each lane writes its own:
 * checking pages for zero (zero-page-detection multifd), computing each
 * page's CRC and compressing, so CPU work and socket copies overlap, and
 * with multifd spread over threads. Without multifd one lane writes to the
 * main channel while a pass runs. A guest write between the CRC and the
 * send makes the destination see a torn page; that write re-dirtied the
 * page, so a later pass sends it again. */
#include "multifd_send.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

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
            rc = multifd_lane_send(lane, slot, &err);
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
    int rc;

    if (!sender->zero_count)
        return 0;
    /* The open batch is its lane's next slot, which a claim on that lane
     * would hand out again: queue it first, or its pages are lost. */
    if ((rc = flush_batch(sender, err)) < 0)
        return rc;
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
