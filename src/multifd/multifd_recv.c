/* The destination's multifd side: one receiving thread per channel and
 * the pass barrier of invariant 3. Pages go to the shared RAM loader,
 * device state to the device loader, whose load thread loads it, so a slow
 * device load never holds up a channel.
 *
 * Ownership: each receiver owns its reader and its counts; `lock` guards
 * the barrier, the ends and the first error. */
#include "multifd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

struct receiver {
    struct multifd_recv *recv;
    unsigned index;
    bool ram;                       /* takes part in the pass barrier */
    struct channel *channel;
    struct stream_reader reader;
    struct ram_load_counts counts;
    uint64_t next_pass;
    ZSTD_DCtx *dctx;
    uint8_t *scratch;
    pthread_t thread;
    bool started;
};

struct multifd_recv {
    struct migration *migration;
    struct ram_loader *ram;         /* shared by every receiver and the main channel */
    struct device_loader *devices;
    uint32_t page_size;
    struct receiver *receivers;
    unsigned nr_receivers, nr_ram;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned at_barrier, ended_ram, ended;
    uint64_t barrier_generation;
    bool failed;
    struct gw_error error;
};

/* Records the first error and wakes the receivers at the barrier and the
 * device loader. The source hears it at once on the return path and ends,
 * which ends the main thread's read too; the multifd channels are shut so
 * that no source write waits on a receiver that is gone. */
static void recv_fail(struct multifd_recv *recv, const struct gw_error *err)
{
    struct migration *migration = recv->migration;
    bool first;

    pthread_mutex_lock(&recv->lock);
    first = !recv->failed;
    if (first) {
        recv->failed = true;
        recv->error = *err;
    }
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    device_loader_fail(recv->devices, err);
    if (first && err->code != -ECANCELED)
        migration_send_rp_error(migration, err);
    migration_shutdown_multifd(migration);
}

/* SYNC(pass): nobody reads pass+1 before every RAM channel has finished
 * pass. */
static int barrier(struct receiver *receiver, const struct stream_record *record,
                   struct gw_error *err)
{
    struct multifd_recv *recv = receiver->recv;
    uint64_t pass, generation;
    int rc = 0;

    if (!receiver->ram || record->length != 8)
        return gw_error_set(err, -EPROTO, "SYNC record at stream offset %" PRIu64 " on %s",
                            record->offset, receiver->ram ? "has the wrong size"
                                                          : "a device-state channel");
    memcpy(&pass, record->body, 8);
    if (pass != receiver->next_pass)
        return gw_error_set(err, -EPROTO, "multifd channel %u synchronised pass %" PRIu64
                            ", expected pass %" PRIu64, receiver->index, pass,
                            receiver->next_pass);
    receiver->next_pass++;
    pthread_mutex_lock(&recv->lock);
    if (recv->ended_ram)
        rc = gw_error_set(err, -EPROTO, "multifd channel %u reached pass %" PRIu64 " after "
                          "another RAM channel had ended", receiver->index, pass);
    generation = recv->barrier_generation;
    if (rc == 0 && ++recv->at_barrier == recv->nr_ram) {
        recv->at_barrier = 0;
        recv->barrier_generation++;
        pthread_cond_broadcast(&recv->changed);
    }
    while (rc == 0 && recv->barrier_generation == generation && !recv->failed)
        pthread_cond_wait(&recv->changed, &recv->lock);
    if (rc == 0 && recv->failed)
        rc = gw_error_set(err, -ECANCELED, "another channel failed");
    pthread_mutex_unlock(&recv->lock);
    return rc;
}

static int receive_record(struct receiver *receiver, struct stream_record *record,
                          struct gw_error *err)
{
    struct multifd_recv *recv = receiver->recv;

    switch (record->type) {
    case REC_PAGES:
        if (receiver->ram && !receiver->dctx)
            return ram_load_pages(&receiver->reader, record, recv->ram, &receiver->counts, err);
        break;
    case REC_PAGES_ZSTD:
        if (receiver->dctx)
            return ram_load_pages_zstd(record, recv->ram, &receiver->counts, recv->page_size,
                                       receiver->dctx, receiver->scratch, err);
        break;
    case REC_ZERO_PAGES:
        if (receiver->ram)
            return ram_load_zero_pages(recv->ram, &receiver->counts, recv->page_size,
                                       record->body, record->length, err);
        break;
    case REC_SYNC:
        return barrier(receiver, record, err);
    case REC_DEVICE:
        return device_loader_feed(recv->devices, &receiver->reader, record, true, err);
    default:
        break;
    }
    return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64 " does not belong "
                        "on a multifd %s channel%s", stream_record_name(record->type),
                        record->offset, receiver->ram ? "RAM" : "device-state",
                        record->type == REC_PAGES ? " with multifd-compression zstd" : "");
}

static void *receiver_thread(void *opaque)
{
    struct receiver *receiver = opaque;
    struct multifd_recv *recv = receiver->recv;
    struct stream_record record;
    struct gw_error err = { 0 };
    int rc = stream_read_header(&receiver->reader, &err);

    while (rc == 0 && (rc = stream_read_record(&receiver->reader, &record, &err)) == 0) {
        if (record.type == REC_CHANNEL_END)
            break;
        rc = receive_record(receiver, &record, &err);
    }
    pthread_mutex_lock(&recv->lock);
    if (rc == 0 && receiver->ram && recv->at_barrier)
        rc = gw_error_set(&err, -EPROTO, "multifd channel %u ended while other channels wait "
                          "at the end of a pass", receiver->index);
    pthread_mutex_unlock(&recv->lock);
    /* The failure is recorded before the end is counted: END must never see
     * every channel ended and no error when one failed. */
    if (rc < 0) {
        gw_error_prefix(&err, "multifd %s channel %u", receiver->ram ? "RAM" : "device-state",
                        receiver->ram ? receiver->index : receiver->index - recv->nr_ram);
        recv_fail(recv, &err);
    }
    pthread_mutex_lock(&recv->lock);
    recv->ended++;
    recv->ended_ram += receiver->ram;
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    return NULL;
}

/* A device here takes pieces of its state from multifd channels. */
static bool pieces_on_multifd(const struct migration *migration)
{
    const struct device_registry *devices = migration->host.devices;

    for (unsigned i = 0; devices && i < devices->count; i++)
        if (devices->devices[i].ops->multifd && devices->devices[i].ops->load_piece)
            return migration->config.channel_header;
    return false;
}

static int start_receiver(struct multifd_recv *recv, unsigned index, bool pieces,
                          struct gw_error *err)
{
    struct receiver *receiver = &recv->receivers[index];
    struct migration *migration = recv->migration;
    int rc;

    receiver->recv = recv;
    receiver->index = index;
    receiver->ram = index < recv->nr_ram;
    receiver->channel = &migration->multifd_channels[index];
    receiver->reader.io = channel_stream_io(receiver->channel);
    /* Room for a whole device-state piece, touched now rather than in the
     * downtime, so a piece is read in place and handed on without a copy. */
    if (pieces && (!receiver->ram || !migration->config.device_channels) &&
        stream_reader_prepare(&receiver->reader, DEVICE_PIECE_RECORD_MAX, err) < 0)
        return -ENOMEM;
    receiver->next_pass = 1;
    if (receiver->ram && migration->config.compression == COMPRESSION_ZSTD) {
        receiver->dctx = ZSTD_createDCtx();
        receiver->scratch = malloc((size_t)STREAM_PAGES_PER_RECORD * recv->page_size);
        if (!receiver->dctx || !receiver->scratch)
            return gw_error_set(err, -ENOMEM, "out of memory for zstd decompression");
    }
    rc = pthread_create(&receiver->thread, NULL, receiver_thread, receiver);
    if (rc)
        return gw_error_set(err, -rc, "cannot start a multifd receiving thread: %s",
                            strerror(rc));
    receiver->started = true;
    return 0;
}

int multifd_recv_start(struct migration *migration, struct ram_loader *ram,
                       struct device_loader *devices, uint32_t page_size,
                       struct multifd_recv **recv_out, struct gw_error *err)
{
    struct multifd_recv *recv = calloc(1, sizeof(*recv));
    bool pieces = pieces_on_multifd(migration);
    int rc;

    *recv_out = recv;
    if (!recv)
        return gw_error_set(err, -ENOMEM, "out of memory for the multifd receivers");
    recv->migration = migration;
    recv->ram = ram;
    recv->devices = devices;
    recv->page_size = page_size;
    recv->nr_receivers = migration->nr_multifd_channels;
    recv->nr_ram = migration->config.channels;
    pthread_mutex_init(&recv->lock, NULL);
    pthread_cond_init(&recv->changed, NULL);
    recv->receivers = calloc(recv->nr_receivers ? recv->nr_receivers : 1, sizeof(*recv->receivers));
    if (!recv->receivers)
        return gw_error_set(err, -ENOMEM, "out of memory for the multifd receivers");
    for (unsigned i = 0; i < recv->nr_receivers; i++)
        if ((rc = start_receiver(recv, i, pieces, err)) < 0)
            return rc;
    return 0;
}

int multifd_recv_finish(struct multifd_recv *recv, struct ram_load_counts *counts,
                        struct gw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&recv->lock);
    while (!recv->failed && recv->ended < recv->nr_receivers)
        pthread_cond_wait(&recv->changed, &recv->lock);
    if (recv->failed) {
        *err = recv->error;
        rc = err->code ? err->code : -EIO;
    }
    pthread_mutex_unlock(&recv->lock);
    for (unsigned i = 0; rc == 0 && i < recv->nr_receivers; i++) {
        counts->normal_pages += recv->receivers[i].counts.normal_pages;
        counts->zero_pages += recv->receivers[i].counts.zero_pages;
    }
    return rc;
}

bool multifd_recv_error(struct multifd_recv *recv, struct gw_error *err)
{
    bool failed;

    if (!recv)
        return false;
    pthread_mutex_lock(&recv->lock);
    failed = recv->failed && recv->error.code != -ECANCELED;
    if (failed)
        *err = recv->error;
    pthread_mutex_unlock(&recv->lock);
    return failed;
}

/* The receivers' readers are theirs until they end: called once
 * multifd_recv_stop has joined them. */
uint64_t multifd_recv_bytes(const struct multifd_recv *recv)
{
    uint64_t bytes = 0;

    for (unsigned i = 0; recv && i < recv->nr_receivers; i++)
        bytes += recv->receivers[i].reader.offset;
    return bytes;
}

void multifd_recv_stop(struct multifd_recv *recv)
{
    struct gw_error stopped;

    if (!recv)
        return;
    migration_shutdown_multifd(recv->migration);
    gw_error_set(&stopped, -ECANCELED, "the incoming migration ended");
    device_loader_fail(recv->devices, &stopped);   /* wakes a receiver waiting for a buffer */
    pthread_mutex_lock(&recv->lock);
    recv->failed = true;   /* releases the barrier */
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    for (unsigned i = 0; recv->receivers && i < recv->nr_receivers; i++) {
        struct receiver *receiver = &recv->receivers[i];
        if (receiver->started)
            pthread_join(receiver->thread, NULL);
        receiver->started = false;
    }
}

void multifd_recv_free(struct multifd_recv *recv)
{
    if (!recv)
        return;
    multifd_recv_stop(recv);
    for (unsigned i = 0; recv->receivers && i < recv->nr_receivers; i++) {
        struct receiver *receiver = &recv->receivers[i];
        stream_reader_free(&receiver->reader);
        ZSTD_freeDCtx(receiver->dctx);
        free(receiver->scratch);
    }
    free(recv->receivers);
    pthread_mutex_destroy(&recv->lock);
    pthread_cond_destroy(&recv->changed);
    free(recv);
}
