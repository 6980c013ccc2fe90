/* Postcopy recovery (docs/stream.md, "Postcopy recovery"). After the
 * switch the guest runs on the destination and part of its RAM is only on
 * the source, so a broken link must not end the migration: both sides go
 * to postcopy-paused and keep everything (the guest's threads wait on
 * their missing pages). migrate-recover on the destination listens again,
 * migrate with resume on the source connects; the destination sends the
 * pages it has (RP_RECV_BITMAP) and its page counts (RP_RESUME_ACK), the
 * source sends again whatever the destination lacks, and postcopy goes
 * on. A failure during recovery pauses again. Never gives up on its own:
 * only the end of the VMM ends a paused migration. */
#include "migration_source.h"

#include "multifd/multifd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "migration_load.h"

/* How long a side waits, once connected, for the other's half of the
 * recovery handshake. */
#define RECOVER_TIMEOUT_US (30ULL * 1000000)

/* --- source --- */

int postcopy_keep_needed(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;

    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        size_t bytes = ram_block_bitmap_words(&migration->host.blocks[b]) * 8;
        source->postcopy_needed[b] = malloc(bytes);
        pthread_mutex_lock(&migration->lock);
        migration->recover_bitmaps[b] = calloc(1, bytes);
        pthread_mutex_unlock(&migration->lock);
        if (!source->postcopy_needed[b] || !migration->recover_bitmaps[b])
            return gw_error_set(err, -ENOMEM, "out of memory for postcopy's recovery bitmaps");
        memcpy(source->postcopy_needed[b], migration->bitmaps[b], bytes);
    }
    return 0;
}

void postcopy_free_needed(struct source *source)
{
    struct migration *migration = source->migration;

    for (unsigned b = 0; b < STREAM_BLOCKS_MAX; b++) {
        free(source->postcopy_needed[b]);
        source->postcopy_needed[b] = NULL;
        pthread_mutex_lock(&migration->lock);
        free(migration->recover_bitmaps[b]);
        migration->recover_bitmaps[b] = NULL;
        pthread_mutex_unlock(&migration->lock);
    }
}

/* Everything of the broken link goes: channels shut and closed, the
 * return-path thread joined, the queued requests dropped (the destination
 * asks again). */
static void source_drop_links(struct source *source)
{
    struct migration *migration = source->migration;

    pthread_mutex_lock(&migration->lock);
    channel_shutdown(&migration->channel);
    migration_shutdown_multifd_locked(migration);
    pthread_mutex_unlock(&migration->lock);
    if (migration->rp_running) {
        pthread_join(migration->rp_thread, NULL);
        migration->rp_running = false;
    }
    preempt_close(migration);
    pthread_mutex_lock(&migration->lock);
    channel_close(&migration->channel);
    if (migration->postcopy_queue) {
        migration->postcopy_queue->count = 0;
        migration->postcopy_queue->follow = false;
    }
    pthread_mutex_unlock(&migration->lock);
}

/* Until migrate with resume, or the end of the VMM. */
static int source_wait_resume(struct migration *migration, struct gw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&migration->lock);
    while (!migration->resume_requested && !migration_cancelled(migration))
        migration_wait_changed(migration);
    if (migration_cancelled(migration))
        rc = gw_error_set(err, -ECANCELED, "the VM is ending while postcopy is paused");
    migration->resume_requested = false;
    migration->rp_error[0] = '\0';
    migration->rp_closed = migration->rp_resume_ack = migration->rp_postcopy_done = false;
    pthread_mutex_unlock(&migration->lock);
    return rc;
}

static int source_connect(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint8_t id[16];
    struct iovec part = { id, sizeof(id) };
    struct channel channel;
    int rc = channel_connect(&migration->uri, migration->cancel_pipe[0], &channel, err);

    if (rc == 0 && (rc = migration_tls_start(migration, &channel, false, err)) < 0)
        channel_close(&channel);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&migration->lock);
    migration->channel = channel;
    for (unsigned b = 0; b < migration->host.nr_blocks; b++)
        memset(migration->recover_bitmaps[b], 0,
               ram_block_bitmap_words(&migration->host.blocks[b]) * 8);
    pthread_mutex_unlock(&migration->lock);
    source->writer = (struct stream_writer){ .io = channel_stream_io(&migration->channel) };
    rc = pthread_create(&migration->rp_thread, NULL, migration_return_path_thread, migration);
    if (rc)
        return gw_error_set(err, -rc, "cannot start the return-path thread");
    migration->rp_running = true;
    migration_set_status(migration, MIGRATION_POSTCOPY_RECOVER);
    memcpy(id, migration->config.id, sizeof(id));
    if ((rc = stream_write_header(&source->writer, source->page_size, err)) < 0)
        return rc;
    return source_write_record(source, REC_POSTCOPY_RESUME, &part, 1, err);
}

/* The destination lacks what was dirty at the switch and it has not got:
 * that is what is left to send. Its counts become ours, so END's compare
 * only what both sides saw. */
static void source_take_bitmap(struct source *source)
{
    struct migration *migration = source->migration;

    pthread_mutex_lock(&migration->lock);
    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        for (uint64_t w = 0; w < words; w++)
            __atomic_store_n(&migration->bitmaps[b][w],
                             source->postcopy_needed[b][w] & ~migration->recover_bitmaps[b][w],
                             __ATOMIC_RELAXED);
        source->postcopy_cursor[b] = 0;
    }
    source->postcopy_block = 0;
    atomic_store(&migration->stats.normal_pages, migration->resume_counts[0]);
    atomic_store(&migration->stats.zero_pages, migration->resume_counts[1]);
    pthread_mutex_unlock(&migration->lock);
}

int postcopy_source_recover(struct source *source, const struct gw_error *failure,
                            struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct gw_error why = *failure;
    int rc;

    for (;;) {
        fprintf(stderr, "godwit: postcopy paused: %s\n", why.msg);
        migration_set_status(migration, MIGRATION_POSTCOPY_PAUSED);
        source_drop_links(source);
        if ((rc = source_wait_resume(migration, err)) < 0)
            return rc;
        migration_set_status(migration, MIGRATION_POSTCOPY_RECOVER_SETUP);
        gw_error_clear(&why);
        rc = source_connect(source, &why);
        if (rc == 0)
            rc = migration_wait_for_destination(migration, &migration->rp_resume_ack,
                                                RECOVER_TIMEOUT_US, "what it has", &why);
        if (rc == 0) {
            source_take_bitmap(source);
            if (source->preempt)
                rc = preempt_connect(migration, source->page_size, &why);
        }
        if (rc == 0) {
            migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
            return 0;
        }
        gw_error_prefix(&why, "recovering postcopy");
    }
}

/* --- destination --- */

/* A read or write that failed because the link did, not because the
 * other side said something wrong: worth a pause. */
bool postcopy_link_broke(int rc)
{
    return rc != -EPROTO && rc != -EBADMSG && rc != -EINVAL && rc != -ENOMEM &&
           rc != -ENOTSUP && rc != -ECANCELED && rc != -EACCES && rc != -EPERM;
}

/* The broken link's channels go; what the preempt channel loaded counts.
 * Page requests fail (-EPIPE) until the new link is up, and are asked
 * again then. */
static void dest_drop_links(struct migration *migration, struct load_state *state)
{
    pthread_mutex_lock(&migration->rp_write_lock);
    migration->rp_paused = true;
    pthread_mutex_unlock(&migration->rp_write_lock);
    preempt_recv_abandon(migration, &state->counts);
    pthread_mutex_lock(&migration->lock);
    channel_shutdown(&migration->channel);
    channel_close(&migration->channel);
    pthread_mutex_unlock(&migration->lock);
}

/* Until migrate-recover (its listener), or the end of the VMM. */
static int dest_wait_recover(struct migration *migration, struct channel_listener *listener,
                             struct gw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&migration->lock);
    while (!migration->recover_requested && !migration_cancelled(migration))
        migration_wait_changed(migration);
    if (migration->recover_requested)
        *listener = migration->recover_listener;
    else
        rc = gw_error_set(err, -ECANCELED, "the VM is ending while postcopy is paused");
    migration->recover_requested = false;
    pthread_mutex_unlock(&migration->lock);
    return rc;
}

/* The new main channel's first words: a stream header and this
 * migration's POSTCOPY_RESUME. */
static int dest_read_resume(struct migration *migration, struct stream_reader *reader,
                            struct gw_error *err)
{
    struct stream_record record;
    int rc;

    stream_reader_free(reader);
    *reader = (struct stream_reader){ .io = channel_stream_io(&migration->channel) };
    if ((rc = stream_read_header(reader, err)) < 0 ||
        (rc = stream_read_record(reader, &record, err)) < 0)
        return rc;
    if (record.type != REC_POSTCOPY_RESUME || record.length != 16)
        return gw_error_set(err, -EPROTO, "a recovery connection starts with %s (%u bytes), "
                            "not POSTCOPY_RESUME", stream_record_name(record.type),
                            record.length);
    if (memcmp(record.body, migration->config.id, 16))
        return gw_error_set(err, -EPERM, "a recovery connection of another migration (its id "
                            "differs from this one's)");
    return 0;
}

/* What this side has: the pages placed in postcopy, block by block, then
 * the page counts so far. */
static int dest_send_bitmap(struct migration *migration, struct load_state *state,
                            struct gw_error *err)
{
    static uint8_t body[16 + 8 * POSTCOPY_BITMAP_WORDS_MAX];   /* the destination thread's */
    uint64_t counts[2] = { state->counts.normal_pages, state->counts.zero_pages };
    int rc;

    for (uint32_t b = 0; b < migration->host.nr_blocks; b++) {
        const uint64_t *bits = postcopy_ram_received(state->postcopy, b);
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        for (uint64_t first = 0; first < words; first += POSTCOPY_BITMAP_WORDS_MAX) {
            uint32_t n = (uint32_t)(words - first < POSTCOPY_BITMAP_WORDS_MAX
                                        ? words - first : POSTCOPY_BITMAP_WORDS_MAX);
            memcpy(body, &b, 4);
            memcpy(body + 4, &n, 4);
            memcpy(body + 8, &first, 8);
            for (uint32_t i = 0; i < n; i++) {
                uint64_t word = __atomic_load_n(&bits[first + i], __ATOMIC_RELAXED);
                memcpy(body + 16 + 8 * i, &word, 8);
            }
            if ((rc = migration_rp_write(migration, REC_RP_RECV_BITMAP, body, 16 + 8 * n,
                                         err)) < 0)
                return rc;
        }
    }
    return migration_rp_write(migration, REC_RP_RESUME_ACK, counts, sizeof(counts), err);
}

static int dest_reconnect(struct migration *migration, struct channel_listener *listener,
                          struct stream_reader *reader, struct load_state *state,
                          struct gw_error *err)
{
    struct pending *pending = NULL;
    int rc = multifd_accept_main(migration, listener, &pending, err);

    if (rc == 0) {
        migration_set_status(migration, MIGRATION_POSTCOPY_RECOVER);
        rc = dest_read_resume(migration, reader, err);
    }
    if (rc == 0) {
        pthread_mutex_lock(&migration->rp_write_lock);
        migration->rp_paused = false;
        pthread_mutex_unlock(&migration->rp_write_lock);
        rc = dest_send_bitmap(migration, state, err);
    }
    /* The source connects its preempt channel once it has our answer. */
    if (rc == 0 && state->preempt_advised)
        rc = preempt_recv_start(migration, listener, pending, state->postcopy,
                                (uint32_t)migration->host.blocks[0].page_size, err);
    multifd_free_pending(pending);
    if (rc == 0)
        postcopy_ram_request_again(state->postcopy);
    return rc;
}

int postcopy_dest_recover(struct migration *migration, struct stream_reader *reader,
                          struct load_state *state, const struct gw_error *failure,
                          struct gw_error *err)
{
    struct gw_error why = *failure;
    int rc;

    for (;;) {
        struct channel_listener listener;
        fprintf(stderr, "godwit: postcopy paused: %s\n", why.msg);
        migration_set_status(migration, MIGRATION_POSTCOPY_PAUSED);
        dest_drop_links(migration, state);
        if ((rc = dest_wait_recover(migration, &listener, err)) < 0)
            return rc;
        gw_error_clear(&why);
        rc = dest_reconnect(migration, &listener, reader, state, &why);
        channel_listener_close(&listener);
        if (rc == 0) {
            migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
            return 0;
        }
        gw_error_prefix(&why, "recovering postcopy");
    }
}
