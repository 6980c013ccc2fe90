/* The source's return path: a thread of its own reads the destination's
 * answers (RP_READY, RP_RUNNING, RP_ERROR) off the main channel and
 * records them under the migration lock; the migration thread waits for
 * them here, with a deadline. The thread owns the main channel's read side
 * and nothing else. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The return path's RP_RECV_BITMAP and RP_RESUME_ACK, under the lock. */
static int rp_recover_record(struct migration *migration, const struct stream_record *record)
{
    struct postcopy_bitmap_part part;
    struct gw_error err = { 0 };

    if (migration->status != MIGRATION_POSTCOPY_RECOVER) {
        snprintf(migration->rp_error, sizeof(migration->rp_error), "it sent %s outside "
                 "postcopy recovery", stream_record_name(record->type));
        return -EPROTO;
    }
    if (record->type == REC_RP_RESUME_ACK) {
        if (record->length != sizeof(migration->resume_counts)) {
            snprintf(migration->rp_error, sizeof(migration->rp_error), "its RP_RESUME_ACK has "
                     "%u bytes, not 16", record->length);
            return -EPROTO;
        }
        memcpy(migration->resume_counts, record->body, sizeof(migration->resume_counts));
        migration->rp_resume_ack = true;
        return 0;
    }
    if (postcopy_bitmap_decode(record->body, record->length, migration->host.blocks,
                               migration->host.nr_blocks, &part, &err) < 0) {
        snprintf(migration->rp_error, sizeof(migration->rp_error), "%s", err.msg);
        return -EPROTO;
    }
    memcpy(migration->recover_bitmaps[part.block] + part.first_word, part.bits,
           (size_t)part.words * 8);
    return 0;
}

/* Postcopy: a page request, checked, queued for the migration thread.
 * Under the migration lock. */
static int queue_request(struct migration *migration, const struct stream_record *record)
{
    struct postcopy_queue *queue = migration->postcopy_queue;
    struct postcopy_request request;
    struct gw_error err = { 0 };

    if (!queue) {
        snprintf(migration->rp_error, sizeof(migration->rp_error), "it asked for pages at "
                 "return-path offset %llu before the switch to postcopy",
                 (unsigned long long)record->offset);
        return -EPROTO;
    }
    if (postcopy_request_decode(record->body, record->length, migration->host.blocks,
                                migration->host.nr_blocks, &request, &err) < 0) {
        snprintf(migration->rp_error, sizeof(migration->rp_error), "%s", err.msg);
        return -EPROTO;
    }
    if (queue->count == POSTCOPY_QUEUE_MAX) {
        snprintf(migration->rp_error, sizeof(migration->rp_error), "it has more than %d page "
                 "requests waiting", POSTCOPY_QUEUE_MAX);
        return -EPROTO;
    }
    queue->requests[(queue->head + queue->count++) % POSTCOPY_QUEUE_MAX] = request;
    atomic_fetch_add(&migration->stats.postcopy_requests, 1);
    return 0;
}

/* True when the request went out on the preempt channel; false leaves it
 * to the queue (no preempt channel, or a request queue_request refuses). A
 * failed write is the return path's error. */
static bool send_preempt(struct migration *migration, const struct stream_record *record)
{
    struct postcopy_request request;
    struct gw_error err = { 0 };
    int rc;

    if (postcopy_request_decode(record->body, record->length, migration->host.blocks,
                                migration->host.nr_blocks, &request, &err) < 0)
        return false;
    rc = preempt_send(migration, &request, &err);
    if (rc == 0)
        return false;
    pthread_mutex_lock(&migration->lock);
    if (rc > 0) {
        atomic_fetch_add(&migration->stats.postcopy_requests, 1);
        if (migration->postcopy_queue)
            postcopy_queue_follow(migration->postcopy_queue, &request);
    } else if (!migration->rp_error[0])
        snprintf(migration->rp_error, sizeof(migration->rp_error), "%s", err.msg);
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
    return true;
}

/* Under the lock. When RP_RUNNING came, less how long the guest had run
 * by then (stream.md): the downtime's end. A body of none (an older
 * destination) or a time longer than the wait since GO counts as 0. */
static void record_running(struct migration *migration, const struct stream_record *record)
{
    uint64_t now_us = migration_now_us(), running_for_us = 0;

    if (record->length == sizeof(running_for_us))
        memcpy(&running_for_us, record->body, sizeof(running_for_us));
    if (!migration->go_sent_us || running_for_us > now_us - migration->go_sent_us)
        running_for_us = 0;
    migration->rp_running_us = now_us - running_for_us;
    migration->rp_running_seen = true;
}

static bool sender_may_be_blocked(struct migration *migration)
{
    return !migration->source_finishing && !migration_cancelled(migration) &&
           !migration_in_postcopy(migration->status);
}

/* The destination went away without an RP_ERROR (a TLS destination whose
 * session broke cannot send one): the migration thread sees rp_closed
 * wherever it waits, but not inside a write to a peer that stopped
 * reading, with the socket's buffers full. Give it a second to end on
 * its own, so that the first error it meets (an RDMA WRITE's failure, the
 * destination's reason) is the one reported, then shut the channels down
 * under it. Postcopy pauses instead, and shuts down what it must. */
static void wake_a_blocked_sender(struct migration *migration)
{
    uint64_t deadline = migration_now_us() + 1000000;

    pthread_mutex_lock(&migration->lock);
    while (sender_may_be_blocked(migration) && migration_now_us() < deadline)
        migration_wait_changed(migration);
    if (sender_may_be_blocked(migration)) {
        channel_shutdown(&migration->channel);
        migration_shutdown_multifd_locked(migration);
    }
    pthread_mutex_unlock(&migration->lock);
}

void *migration_return_path_thread(void *opaque)
{
    struct migration *migration = opaque;
    struct stream_reader reader = { .io = channel_stream_io(&migration->channel),
                                    .page_size = 4096 };
    struct stream_record record;
    struct gw_error err = { 0 };
    int rc;

    while ((rc = stream_read_record(&reader, &record, &err)) == 0) {
        /* postcopy-preempt: the pages go at once, on their own channel. */
        if (record.type == REC_RP_REQ_PAGES && send_preempt(migration, &record))
            continue;
        pthread_mutex_lock(&migration->lock);
        if (record.type == REC_RP_READY) {
            migration->rp_ready = true;
        } else if (record.type == REC_RP_RUNNING) {
            record_running(migration, &record);
        } else if (record.type == REC_RP_POSTCOPY_DONE) {
            migration->rp_postcopy_done = true;
        } else if (record.type == REC_RP_RECV_BITMAP || record.type == REC_RP_RESUME_ACK) {
            if (rp_recover_record(migration, &record) < 0)
                record.type = REC_RP_ERROR;   /* end the migration as for an error */
        } else if (record.type == REC_RP_REQ_PAGES) {
            if (queue_request(migration, &record) < 0)
                record.type = REC_RP_ERROR;   /* end the migration as for an error */
        } else if (record.type == REC_RP_ERROR && record.length >= 4) {
            migration->rp_refused = true;
            snprintf(migration->rp_error, sizeof(migration->rp_error), "%.*s",
                     (int)(record.length - 4), (const char *)record.body + 4);
        } else if (!migration->rp_error[0]) {
            snprintf(migration->rp_error, sizeof(migration->rp_error),
                     "its return path carried a %s record at offset %llu, which only "
                     "flows the other way", stream_record_name(record.type),
                     (unsigned long long)record.offset);
            record.type = REC_RP_ERROR;   /* end the migration as for an error */
        }
        pthread_cond_broadcast(&migration->changed);
        pthread_mutex_unlock(&migration->lock);
        if (record.type == REC_RP_ERROR) {
            /* Stop every sender at once: a lane blocked on a multifd
             * channel the destination no longer reads must not hold the
             * migration thread. */
            channel_shutdown(&migration->channel);
            migration_shutdown_multifd(migration);
            break;
        }
    }
    pthread_mutex_lock(&migration->lock);
    /* An end or a reset is the destination going away; bytes that are not
     * a well-formed record are an error of its own, worth naming. */
    if ((rc == -EPROTO || rc == -EBADMSG) && !migration->rp_error[0] &&
        !migration_cancelled(migration))
        snprintf(migration->rp_error, sizeof(migration->rp_error),
                 "its return path is corrupt: %.450s", err.msg);
    /* TLS: the destination ended the session with an alert (it refused
     * this side's certificate or key after the handshake, as TLS 1.3
     * lets a server do) */
    if (rc == -EACCES && !migration->rp_error[0] && !migration_cancelled(migration))
        snprintf(migration->rp_error, sizeof(migration->rp_error), "%.500s", err.msg);
    migration->rp_closed = true;
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
    if (rc != 0)
        wake_a_blocked_sender(migration);
    stream_reader_free(&reader);
    return NULL;
}

/* Waits until the return path sets *flag, fails, or the deadline passes. */
int migration_wait_for_destination(struct migration *migration, bool *flag,
                                   uint64_t timeout_us, const char *what, struct gw_error *err)
{
    uint64_t deadline = migration_now_us() + timeout_us;
    int rc = 0;

    pthread_mutex_lock(&migration->lock);
    while (!*flag && !migration->rp_error[0] && !migration->rp_closed &&
           !migration_cancelled(migration)) {
        uint64_t now = migration_now_us();
        if (now >= deadline) {
            rc = gw_error_set(err, -ETIMEDOUT, "the destination did not say %s within %" PRIu64
                              " s", what, timeout_us / 1000000);
            break;
        }
        migration_wait_changed(migration);
    }
    if (!rc && !*flag)
        rc = migration->rp_error[0]
                 ? gw_error_set(err, -EIO, "the destination failed: %s", migration->rp_error)
                 : migration_cancelled(migration)
                       ? gw_error_set(err, -ECANCELED, "the migration was cancelled")
                       : gw_error_set(err, -EPIPE, "the destination closed the connection "
                                      "before it said %s", what);
    pthread_mutex_unlock(&migration->lock);
    return rc;
}

/* A multifd channel's write can fail before the return path delivers the
 * destination's reason (it refused, and closed everything): give the
 * return path a moment, so the user reads the reason, not "broken pipe". */
void migration_wait_for_rp_error(struct migration *migration)
{
    uint64_t deadline = migration_now_us() + 1000000;

    pthread_mutex_lock(&migration->lock);
    while (!migration->rp_error[0] && !migration->rp_closed && migration_now_us() < deadline)
        migration_wait_changed(migration);
    pthread_mutex_unlock(&migration->lock);
}

