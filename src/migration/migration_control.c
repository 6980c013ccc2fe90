/* The life cycle of a migration: the object made and freed, a migration
 * launched on its own thread (source or destination) once nothing else
 * runs, and cancel. What the monitor commands call. */
#include "migration_internal.h"
#include "migration_throttle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void migration_request_cancel(struct migration *migration);

struct migration *migration_new(const struct migration_host *host, struct qmp_server *qmp,
                                struct gw_error *err)
{
    struct migration *migration;

    if (host->nr_blocks == 0 || host->nr_blocks > STREAM_BLOCKS_MAX) {
        gw_error_set(err, -EINVAL, "a migration needs 1 to %d RAM blocks", STREAM_BLOCKS_MAX);
        return NULL;
    }
    for (unsigned i = 0; i < host->nr_blocks; i++) {
        if (ram_block_validate(&host->blocks[i], err) < 0 ||
            host->blocks[i].page_size != host->blocks[0].page_size ||
            host->blocks[i].page_size > STREAM_PAGE_SIZE_MAX) {
            if (!err || !err->code)
                gw_error_set(err, -EINVAL, "every RAM block needs the same page size of at "
                             "most 64 KiB");
            return NULL;
        }
    }
    migration = calloc(1, sizeof(*migration));
    if (!migration) {
        gw_error_set(err, -ENOMEM, "out of memory creating the migration state");
        return NULL;
    }
    migration->objects = objects_new();
    if (!migration->objects) {
        free(migration);
        gw_error_set(err, -ENOMEM, "out of memory creating the migration state");
        return NULL;
    }
    migration->host = *host;
    migration->qmp = qmp;
    migration->params.downtime_limit_ms = 300;
    migration->params.multifd_channels = 2;
    migration->params.multifd_zstd_level = 1;
    migration->params.packet_pages = STREAM_PAGES_PER_RECORD;
    migration->params.zero_page_detection = ZERO_DETECT_MULTIFD;
    migration->params.cpu_throttle_initial = 20;   /* QEMU's defaults */
    migration->params.cpu_throttle_increment = 10;
    migration->params.max_cpu_throttle = CPU_THROTTLE_MAX;
    migration->params.throttle_trigger_threshold = 50;
    migration->params.vcpu_dirty_limit = VCPU_DIRTY_LIMIT_DEFAULT;
    migration->params.vcpu_dirty_limit_period = VCPU_DIRTY_LIMIT_PERIOD_DEFAULT_MS;
    migration->params.rdma_chunk_size = RDMA_CHUNK_DEFAULT;
    migration->channel.fd = -1;
    migration->cancel_pipe[0] = migration->cancel_pipe[1] = -1;
    pthread_mutex_init(&migration->lock, NULL);
    pthread_mutex_init(&migration->rp_write_lock, NULL);
    pthread_mutex_init(&migration->preempt.lock, NULL);
    migration->preempt.channel.fd = -1;
    pthread_cond_init(&migration->changed, NULL);
    return migration;
}

bool migration_begin_cancel(struct migration *migration)
{
    bool cancelling;

    /* Checked and set under one lock: a migration that ends meanwhile must
     * not be left "cancelling" forever. On a destination, as in QEMU, the
     * incoming migration fails and the guest never runs here. */
    pthread_mutex_lock(&migration->lock);
    cancelling = migration_in_progress(migration->status) &&
                 migration->status != MIGRATION_CANCELLING &&
                 !migration_in_postcopy(migration->status);
    if (cancelling) {
        migration->status = MIGRATION_CANCELLING;
        pthread_cond_broadcast(&migration->changed);
        if (migration->cap_events && migration->qmp)
            qmp_server_emit_event(migration->qmp, "MIGRATION",
                                  json_pack("{s:s}", "status", "cancelling"));
    }
    pthread_mutex_unlock(&migration->lock);
    if (cancelling)
        migration_request_cancel(migration);
    return cancelling;
}

/* Asks whatever runs to stop: flags it, shuts the channel down so blocked I/O
 * returns, and wakes a destination waiting for its source. */
static void migration_request_cancel(struct migration *migration)
{
    atomic_store(&migration->cancel_requested, true);
    pthread_mutex_lock(&migration->lock);
    /* A destination that said READY may get GO any moment: it must still
     * answer RP_ERROR, or the source would take GO as the end of its
     * guest. Its wait for GO wakes on the cancel pipe instead. */
    if (!(migration->is_destination && migration->ready_sent))
        channel_shutdown(&migration->channel);
    migration_shutdown_multifd_locked(migration);
    if (migration->cancel_pipe[1] >= 0 && write(migration->cancel_pipe[1], "x", 1) < 0) {
        /* the pipe is full: a wake-up is already pending */
    }
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
}

static void migration_join(struct migration *migration)
{
    bool running;

    pthread_mutex_lock(&migration->lock);
    running = migration->thread_running;
    migration->thread_running = false;
    pthread_mutex_unlock(&migration->lock);
    if (running)
        pthread_join(migration->thread, NULL);
}

void migration_free(struct migration *migration)
{
    if (!migration)
        return;
    migration_request_cancel(migration);
    migration_join(migration);
    ram_bitmaps_free(migration->bitmaps, STREAM_BLOCKS_MAX);
    migration_tls_release(migration);
    objects_free(migration->objects);
    for (int i = 0; i < 2; i++)
        if (migration->cancel_pipe[i] >= 0)
            close(migration->cancel_pipe[i]);
    pthread_mutex_destroy(&migration->lock);
    pthread_mutex_destroy(&migration->rp_write_lock);
    pthread_mutex_destroy(&migration->preempt.lock);
    pthread_cond_destroy(&migration->changed);
    free(migration->qmp_commands);
    free(migration->hmp_commands);
    free(migration);
}

/* The pipe a cancel writes to, to wake a thread blocked in connect or
 * accept: made once, emptied of an earlier migration's wake-ups. */
static int prepare_cancel_pipe(struct migration *migration, struct gw_error *err)
{
    char drained[64];

    if (migration->cancel_pipe[0] < 0 &&
        pipe2(migration->cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return gw_error_set(err, -errno, "pipe failed: %s", strerror(errno));
    while (read(migration->cancel_pipe[0], drained, sizeof(drained)) > 0)
        ;
    return 0;
}

int migration_take_named_fd(struct migration *migration, struct uri *uri, struct gw_error *err)
{
    int fd;

    if (uri->kind != URI_FD || !uri->path[0])
        return 0;
    if (!migration->qmp)
        return gw_error_set(err, -ENOENT, "File descriptor named '%s' not found", uri->path);
    fd = qmp_server_take_fd(migration->qmp, uri->path, err);
    if (fd < 0)
        return fd;
    uri->fd = fd;
    return 0;
}

int migration_check_idle(struct migration *migration, struct gw_error *err)
{
    enum migration_status status = migration_status(migration);

    if (migration_in_progress(status))
        return gw_error_set(err, -EBUSY, "a migration is already in progress (status %s); "
                            "wait for it or cancel it with migrate_cancel",
                            migration_status_name(status));
    return 0;
}

/* Starts a thread for a new migration; refuses while one is in progress
 * (only the monitor thread launches, so the check cannot go stale). */
int migration_launch(struct migration *migration, const struct uri *uri, bool destination,
                     struct gw_error *err)
{
    int rc = migration_check_idle(migration, err);

    if (rc < 0)
        return rc;
    rc = prepare_cancel_pipe(migration, err);
    if (rc < 0)
        return rc;
    migration_join(migration);   /* the previous, finished thread */
    rc = migration_tls_prepare(migration, uri, destination, err);
    if (rc < 0)
        return rc;
    ram_bitmaps_free(migration->bitmaps, STREAM_BLOCKS_MAX);
    memset(&migration->stats, 0, sizeof(migration->stats));
    atomic_store(&migration->cancel_requested, false);
    atomic_store(&migration->switchover_requested, false);
    migration->error[0] = '\0';
    migration->rp_error[0] = '\0';
    migration->rp_ready = migration->rp_running_seen = migration->rp_closed = false;
    migration->source_finishing = false;
    migration->go_sent_us = migration->rp_running_us = 0;
    migration->rp_refused = migration->ready_sent = false;
    migration->rp_error_sent = false;
    migration->rp_postcopy_done = false;
    atomic_store(&migration->postcopy_requested, false);
    migration->uri = *uri;
    migration->is_destination = destination;
    atomic_store(&migration->stats.start_ms, migration_now_us() / 1000);
    migration_set_status(migration, MIGRATION_SETUP);
    rc = pthread_create(&migration->thread, NULL,
                        destination ? migration_destination_thread : migration_source_thread,
                        migration);
    if (rc) {
        struct gw_error thread_err;
        gw_error_set(&thread_err, -rc, "cannot start the migration thread: %s", strerror(rc));
        migration_fail(migration, &thread_err);
        return gw_error_set(err, -rc, "%s", thread_err.msg);
    }
    pthread_mutex_lock(&migration->lock);
    migration->thread_running = true;
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

int migration_incoming(struct migration *migration, const char *uri_text, struct gw_error *err)
{
    struct uri uri;
    int rc = migration_parse_uri(migration, uri_text, &uri, err);

    if (rc < 0)
        return rc;
    if (migration->status != MIGRATION_NONE)
        return gw_error_set(err, -EBUSY, "an incoming migration was already started here "
                            "(status %s); start a new destination VM for another",
                            migration_status_name(migration->status));
    if ((rc = migration_take_named_fd(migration, &uri, err)) < 0)
        return rc;
    /* Listen now, so the socket exists and its errors reach the caller
     * before anyone tries to connect. */
    if (uri.kind == URI_RDMA) {
        struct rdma_options options;
        migration_rdma_options(migration, &options);
        migration->listener = (struct channel_listener){ .fd = -1, .uri = uri };
        rc = rdma_channel_listen(&uri, &options, &migration->listener, err);
    } else {
        rc = channel_listen(&uri, &migration->listener, err);
    }
    if (rc == 0) {
        migration->incoming_expected = false;
        rc = migration_launch(migration, &uri, true, err);
        if (rc < 0)
            channel_listener_close(&migration->listener);
    }
    if (rc < 0 && uri.kind == URI_FD && uri.path[0])
        close(uri.fd);   /* taken from getfd: ours to close */
    return rc;
}

/* What the capabilities and parameters ask of a URI: multifd needs tcp: or
 * unix:, device-state channels need multifd and x-channel-header. */
int migration_check_uri(struct migration *migration, const struct uri *uri, struct gw_error *err)
{
    bool multifd, header, postcopy, preempt;
    uint64_t device_channels;

    pthread_mutex_lock(&migration->lock);
    multifd = migration->cap_multifd;
    postcopy = migration->cap_postcopy_ram;
    preempt = migration->cap_postcopy_preempt;
    header = migration->cap_channel_header;
    device_channels = migration->params.device_channels;
    pthread_mutex_unlock(&migration->lock);
    if (multifd && uri->kind == URI_RDMA)
        return gw_error_set(err, -EINVAL, "multifd does not apply to rdma: (RAM goes by RDMA "
                            "WRITE, not by stream channels): turn the multifd capability off "
                            "or use a tcp: or unix: URI");
    if (multifd && uri->kind != URI_TCP && uri->kind != URI_UNIX)
        return gw_error_set(err, -EINVAL, "multifd needs a tcp: or unix: URI, which can carry "
                            "several connections; file: and fd: carry one: turn the multifd "
                            "capability off");
    if (postcopy && (uri->kind == URI_FILE || uri->kind == URI_RDMA))
        return gw_error_set(err, -EINVAL, "postcopy-ram needs a connection with a return path "
                            "for page requests (tcp:, unix: or fd: of a socket); %s has none "
                            "godwit can use: turn the postcopy-ram capability off",
                            uri->kind == URI_FILE ? "file:" : "rdma:");
    if (preempt && !postcopy)
        return gw_error_set(err, -EINVAL, "postcopy-preempt needs postcopy-ram: turn it on "
                            "too, or postcopy-preempt off");
    if (preempt && uri->kind != URI_TCP && uri->kind != URI_UNIX)
        return gw_error_set(err, -EINVAL, "postcopy-preempt needs a tcp: or unix: URI, which "
                            "can carry a second connection; fd: carries one: turn "
                            "postcopy-preempt off");
    if (device_channels && (!multifd || !header))
        return gw_error_set(err, -EINVAL, "x-multifd-channels-device-state %" PRIu64 " needs "
                            "the multifd and x-channel-header capabilities; set them or set "
                            "the parameter to 0", device_channels);
    return migration_tls_check_uri(migration, uri, err);
}

int migration_parse_uri(struct migration *migration, const char *text, struct uri *uri,
                        struct gw_error *err)
{
    int rc = uri_parse(text, uri, err);

    return rc < 0 ? rc : migration_check_uri(migration, uri, err);
}

void migration_expect_incoming(struct migration *migration)
{
    migration->incoming_expected = true;
}
