/* The helpers every thread of a migration uses: status transitions and
 * their events, the byte counts, the first error, and the return path's
 * error record. Calls nothing above it. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

const char *migration_status_name(enum migration_status status)
{
    static const char *const names[] = {
        [MIGRATION_NONE] = "none", [MIGRATION_SETUP] = "setup",
        [MIGRATION_ACTIVE] = "active", [MIGRATION_DEVICE] = "device",
        [MIGRATION_CANCELLING] = "cancelling", [MIGRATION_CANCELLED] = "cancelled",
        [MIGRATION_FAILED] = "failed", [MIGRATION_COMPLETED] = "completed",
        [MIGRATION_PRE_SWITCHOVER] = "pre-switchover",
        [MIGRATION_POSTCOPY_ACTIVE] = "postcopy-active",
        [MIGRATION_POSTCOPY_PAUSED] = "postcopy-paused",
        [MIGRATION_POSTCOPY_RECOVER_SETUP] = "postcopy-recover-setup",
        [MIGRATION_POSTCOPY_RECOVER] = "postcopy-recover",
    };
    return names[status];
}

uint64_t migration_now_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

void migration_count_sent(struct migration *migration, uint64_t bytes, bool vm_stopped)
{
    struct migration_stats *stats = &migration->stats;

    atomic_fetch_add(&stats->transferred, bytes);
    atomic_fetch_add(vm_stopped ? &stats->downtime_bytes : &stats->precopy_bytes, bytes);
}

void migration_emit(struct migration *migration, const char *event, json_t *data)
{
    bool events;

    pthread_mutex_lock(&migration->lock);
    events = migration->cap_events;
    pthread_mutex_unlock(&migration->lock);
    if (events && migration->qmp)
        qmp_server_emit_event(migration->qmp, event, data);
    else
        json_decref(data);
}

bool migration_in_postcopy(enum migration_status status)
{
    return status == MIGRATION_POSTCOPY_ACTIVE || status == MIGRATION_POSTCOPY_PAUSED ||
           status == MIGRATION_POSTCOPY_RECOVER_SETUP || status == MIGRATION_POSTCOPY_RECOVER;
}

bool migration_in_progress(enum migration_status status)
{
    return status == MIGRATION_SETUP || status == MIGRATION_ACTIVE ||
           status == MIGRATION_DEVICE || status == MIGRATION_PRE_SWITCHOVER ||
           status == MIGRATION_CANCELLING || migration_in_postcopy(status);
}

void migration_set_status(struct migration *migration, enum migration_status status)
{
    pthread_mutex_lock(&migration->lock);
    /* Once cancelling, a migration only ends: the thread's own progress
     * (setup done, stop-copy begun) must not be shown as a step back. */
    if (migration->status == status ||
        (migration->status == MIGRATION_CANCELLING && migration_in_progress(status))) {
        pthread_mutex_unlock(&migration->lock);
        return;
    }
    migration->status = status;
    pthread_cond_broadcast(&migration->changed);
    /* Emitted under the lock, so events arrive in the order the status
     * changed (the QMP server never holds its output lock while it runs a
     * command, so this order of locks is safe). */
    if (migration->cap_events && migration->qmp)
        qmp_server_emit_event(migration->qmp, "MIGRATION",
                              json_pack("{s:s}", "status", migration_status_name(status)));
    pthread_mutex_unlock(&migration->lock);
}

void migration_fail(struct migration *migration, const struct gw_error *err)
{
    bool cancelled = migration_cancelled(migration);

    pthread_mutex_lock(&migration->lock);
    if (!migration->error[0] && !cancelled)
        snprintf(migration->error, sizeof(migration->error), "%s", err->msg);
    pthread_mutex_unlock(&migration->lock);
    migration_set_status(migration, cancelled ? MIGRATION_CANCELLED : MIGRATION_FAILED);
}

enum migration_status migration_status(struct migration *migration)
{
    enum migration_status status;

    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    pthread_mutex_unlock(&migration->lock);
    return status;
}

void migration_shutdown_multifd_locked(struct migration *migration)
{
    for (unsigned i = 0; i < migration->nr_multifd_channels; i++)
        channel_shutdown(&migration->multifd_channels[i]);
    channel_shutdown(&migration->preempt.channel);   /* postcopy-preempt's, if any */
}

void migration_shutdown_multifd(struct migration *migration)
{
    pthread_mutex_lock(&migration->lock);
    migration_shutdown_multifd_locked(migration);
    pthread_mutex_unlock(&migration->lock);
}

void migration_send_error(struct channel *channel, const struct gw_error *failure)
{
    struct stream_writer writer = { .io = channel_stream_io(channel) };
    uint8_t body[4 + STREAM_ERROR_TEXT_MAX];
    int32_t code = failure->code;
    size_t len = strnlen(failure->msg, sizeof(failure->msg));
    struct iovec part = { body, 4 + len };

    memcpy(body, &code, 4);
    memcpy(body + 4, failure->msg, len);
    stream_write_record(&writer, REC_RP_ERROR, &part, 1, NULL);   /* best effort */
}

void migration_send_rp_error(struct migration *migration, const struct gw_error *failure)
{
    pthread_mutex_lock(&migration->rp_write_lock);
    if (!migration->rp_error_sent && migration->channel.has_return_path) {
        migration->rp_error_sent = true;
        migration_send_error(&migration->channel, failure);
    }
    pthread_mutex_unlock(&migration->rp_write_lock);
}

int migration_rp_write(struct migration *migration, uint32_t type, const void *body,
                       size_t len, struct gw_error *err)
{
    struct stream_writer writer = { .io = channel_stream_io(&migration->channel) };
    struct iovec part = { (void *)body, len };
    int rc;

    pthread_mutex_lock(&migration->rp_write_lock);
    rc = migration->rp_paused
             ? gw_error_set(err, -EPIPE, "postcopy is paused: no connection to the source")
             : stream_write_record(&writer, type, &part, len ? 1 : 0, err);
    pthread_mutex_unlock(&migration->rp_write_lock);
    return rc;
}

/* Waits, holding the migration lock, for a change or 20 ms at most. */
void migration_wait_changed(struct migration *migration)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 20 * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&migration->changed, &migration->lock, &until);
}

void migration_rdma_options(struct migration *migration, struct rdma_options *options)
{
    pthread_mutex_lock(&migration->lock);
    *options = (struct rdma_options){ .chunk_size = migration->params.rdma_chunk_size,
                                      .pin_all = migration->cap_rdma_pin_all,
                                      .provider = (unsigned)migration->params.rdma_provider,
                                      .stats = &migration->stats.rdma };
    pthread_mutex_unlock(&migration->lock);
}
