/* postcopy-preempt (docs/stream.md, "Postcopy"): the pages the destination
 * asks for travel on a connection of their own, so they never wait behind
 * the background stream on the main channel. The source's return-path
 * thread, which reads the requests, writes their pages itself; the
 * destination reads them on a receiver thread of its own into landing
 * lane 1. The channel carries a channel header (type 4), a stream header,
 * PAGES and ZERO_PAGES, and CHANNEL_END before the main channel's END. */
#include "migration_internal.h"

#include "channel/channel_header.h"
#include "multifd/multifd.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

/* --- source --- */

int preempt_connect(struct migration *migration, uint32_t page_size, struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    uint8_t header[CHANNEL_HEADER_SIZE];
    struct iovec part = { header, sizeof(header) };
    struct channel channel;
    int rc = channel_connect(&migration->uri, migration->cancel_pipe[0], &channel, err);

    if (rc == 0 && (rc = migration_tls_start(migration, &channel, false, err)) < 0)
        channel_close(&channel);
    if (rc < 0) {
        gw_error_prefix(err, "the postcopy preempt channel");
        return rc;
    }
    pthread_mutex_lock(&migration->lock);
    preempt->channel = channel;
    if (migration_cancelled(migration))
        channel_shutdown(&preempt->channel);
    pthread_mutex_unlock(&migration->lock);
    pthread_mutex_lock(&preempt->lock);
    preempt->writer = (struct stream_writer){ .io = channel_stream_io(&preempt->channel) };
    channel_header_encode(header, CHANNEL_POSTCOPY, 0, migration->config.id);
    rc = preempt->writer.io.writev(preempt->writer.io.opaque, &part, 1, err);
    if (rc == 0)
        rc = stream_write_header(&preempt->writer, page_size, err);
    preempt->open = rc == 0;
    pthread_mutex_unlock(&preempt->lock);
    migration_count_sent(migration, sizeof(header) + preempt->writer.offset, false);
    return rc;
}

int preempt_send(struct migration *migration, const struct postcopy_request *request,
                 struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    struct migration_stats *stats = &migration->stats;
    uint64_t bytes = 0, normal = 0, zero = 0;
    int rc = 0;

    pthread_mutex_lock(&preempt->lock);
    if (preempt->open) {
        /* Sent here: the background need not send them again. */
        postcopy_clear_dirty(migration->bitmaps[request->block], request->first,
                             request->pages);
        rc = postcopy_write_pages(&preempt->writer, &migration->host.blocks[request->block],
                                  request->block, request->first, request->pages, &bytes,
                                  &normal, &zero, err);
        rc = rc < 0 ? rc : 1;
        /* Counted before preempt_end can take the lock: END carries the
         * counts, and the destination compares them with what it got. */
        atomic_fetch_add(&stats->transferred, bytes);
        atomic_fetch_add(&stats->postcopy_bytes, bytes);
        atomic_fetch_add(&stats->preempt_bytes, bytes);
        atomic_fetch_add(&stats->normal_pages, normal);
        atomic_fetch_add(&stats->zero_pages, zero);
    }
    pthread_mutex_unlock(&preempt->lock);
    if (rc < 0)
        gw_error_prefix(err, "the postcopy preempt channel");
    return rc;
}

int preempt_end(struct migration *migration, struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    uint64_t before;
    int rc = 0;

    pthread_mutex_lock(&preempt->lock);
    if (preempt->open) {
        before = preempt->writer.offset;
        rc = stream_write_record(&preempt->writer, REC_CHANNEL_END, NULL, 0, err);
        migration_count_sent(migration, preempt->writer.offset - before, false);
        preempt->open = false;
    }
    pthread_mutex_unlock(&preempt->lock);
    return rc;
}

void preempt_close(struct migration *migration)
{
    struct postcopy_preempt *preempt = &migration->preempt;

    pthread_mutex_lock(&preempt->lock);
    preempt->open = false;
    pthread_mutex_unlock(&preempt->lock);
    pthread_mutex_lock(&migration->lock);
    channel_shutdown(&preempt->channel);   /* a receiver blocked in a read returns */
    pthread_mutex_unlock(&migration->lock);
    if (preempt->thread_running) {
        pthread_join(preempt->thread, NULL);
        preempt->thread_running = false;
        ram_loader_destroy(&preempt->loader);
    }
    pthread_mutex_lock(&migration->lock);
    channel_close(&preempt->channel);
    pthread_mutex_unlock(&migration->lock);
}

/* --- destination --- */

static int receive_pages(struct migration *migration, struct stream_reader *reader,
                         struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    struct stream_record record;
    int rc = stream_read_header(reader, err);

    while (rc == 0) {
        if ((rc = stream_read_record(reader, &record, err)) < 0)
            break;
        if (record.type == REC_CHANNEL_END)
            return 0;
        if (record.type == REC_PAGES)
            rc = ram_load_pages(reader, &record, &preempt->loader, &preempt->counts, err);
        else if (record.type == REC_ZERO_PAGES)
            rc = ram_load_zero_pages(&preempt->loader, &preempt->counts, reader->page_size,
                                     record.body, record.length, err);
        else
            rc = gw_error_set(err, -EPROTO, "%s record at offset %" PRIu64 " of the postcopy "
                              "preempt channel, which carries PAGES, ZERO_PAGES and "
                              "CHANNEL_END only", stream_record_name(record.type),
                              record.offset);
    }
    return rc;
}

/* Owns the preempt channel's read side and its loader's counts. A failure
 * shuts the main channel down, so the main thread stops and reports it. */
static void *preempt_thread(void *opaque)
{
    struct migration *migration = opaque;
    struct postcopy_preempt *preempt = &migration->preempt;
    struct stream_reader reader = { .io = channel_stream_io(&preempt->channel) };

    preempt->rc = receive_pages(migration, &reader, &preempt->error);
    if (preempt->rc < 0) {
        gw_error_prefix(&preempt->error, "the postcopy preempt channel");
        pthread_mutex_lock(&migration->lock);
        channel_shutdown(&migration->channel);
        pthread_mutex_unlock(&migration->lock);
    }
    stream_reader_free(&reader);
    return NULL;
}

int preempt_recv_start(struct migration *migration, struct channel_listener *listener,
                       struct pending *pending, struct postcopy_ram *ram, uint32_t page_size,
                       struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    struct page_landing landing = postcopy_ram_landing(ram, 1);
    struct channel channel;
    int rc = multifd_accept_postcopy(migration, listener, pending, &channel, err);

    (void)page_size;
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&migration->lock);
    preempt->channel = channel;
    if (migration_cancelled(migration))
        channel_shutdown(&preempt->channel);
    pthread_mutex_unlock(&migration->lock);
    ram_loader_init(&preempt->loader, migration->host.blocks, migration->host.nr_blocks,
                    &landing);
    preempt->counts = (struct ram_load_counts){ 0 };
    preempt->error = (struct gw_error){ 0 };
    preempt->rc = 0;
    rc = pthread_create(&preempt->thread, NULL, preempt_thread, migration);
    if (rc) {
        ram_loader_destroy(&preempt->loader);
        return gw_error_set(err, -rc, "cannot start the postcopy preempt receiver");
    }
    preempt->thread_running = true;
    return 0;
}

void preempt_recv_abandon(struct migration *migration, struct ram_load_counts *counts)
{
    struct postcopy_preempt *preempt = &migration->preempt;

    pthread_mutex_lock(&migration->lock);
    channel_shutdown(&preempt->channel);
    pthread_mutex_unlock(&migration->lock);
    if (preempt->thread_running) {
        pthread_join(preempt->thread, NULL);
        preempt->thread_running = false;
        counts->normal_pages += preempt->counts.normal_pages;
        counts->zero_pages += preempt->counts.zero_pages;
        ram_loader_destroy(&preempt->loader);
    }
    pthread_mutex_lock(&migration->lock);
    channel_close(&preempt->channel);
    pthread_mutex_unlock(&migration->lock);
}

int preempt_recv_finish(struct migration *migration, struct ram_load_counts *counts,
                        struct gw_error *err)
{
    struct postcopy_preempt *preempt = &migration->preempt;
    int rc;

    if (!preempt->thread_running)
        return 0;
    pthread_join(preempt->thread, NULL);
    preempt->thread_running = false;
    rc = preempt->rc;
    if (rc < 0)
        *err = preempt->error;
    else
        rc = ram_check_torn(&preempt->loader, err);
    counts->normal_pages += preempt->counts.normal_pages;
    counts->zero_pages += preempt->counts.zero_pages;
    ram_loader_destroy(&preempt->loader);
    return rc;
}
