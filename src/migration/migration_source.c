/* The source's migration thread. It owns the channel's write side, the
 * dirty bitmaps and the page sender; the return-path thread owns the read
 * side. The guest is stopped only in switchover(), and every failure path
 * after that puts it back as it was (running, or paused): until the
 * destination has said RP_READY and GO has been sent, or if it answers GO
 * with RP_ERROR, the source still owns the guest. */
#include "migration_source.h"
#include "migration_estimate.h"
#include "migration_throttle.h"

#include "channel/channel_header.h"
#include "multifd/multifd.h"
#include "vmstate/vmstate_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The small-downtime and shrink rules: CONVERGENCE_SMALL_DOWNTIME_US and
 * CONVERGENCE_SHRINK_PERCENT (migration_convergence.h), which the verdict
 * in query-migrate predicts. */
/* Waiting for the destination's answers during switchover. */
#define READY_TIMEOUT_US (60ULL * 1000000)
#define RUNNING_TIMEOUT_US (10ULL * 1000000)
/* Device precopy data sent per device per pass, at most (each buffer asks
 * the device for no more than what is left of it). */
#define DEVICE_PASS_BUDGET (64ULL << 20)
/* Between passes that found nothing dirty. */
#define IDLE_PASS_PAUSE_NS (5 * 1000000)


static uint64_t count_dirty(struct migration *migration)
{
    return ram_bitmaps_count(migration->bitmaps, migration->host.blocks,
                             migration->host.nr_blocks);
}


/* As QEMU: one MIGRATION_PASS per dirty-bitmap sync, numbered by
 * dirty-sync-count, the final sync with the guest stopped included. */
static void emit_pass(struct migration *migration, uint64_t count)
{
    migration_emit(migration, "MIGRATION_PASS", json_pack("{s:I}", "pass", (json_int_t)count));
}

/* The device saver's way out: DEVICE records on the main channel, or
 * (with device state on multifd) queued on the multifd channels. */
static int write_device_record(void *opaque, const uint8_t *header, const uint8_t *data,
                               size_t len, struct gw_error *err)
{
    struct source *source = opaque;
    struct iovec parts[2] = { { (void *)header, DEVICE_RECORD_HEADER }, { (void *)data, len } };
    uint64_t before = source->writer.offset;
    int rc = source_write_record(source, REC_DEVICE, parts, 2, err);

    atomic_fetch_add(&source->migration->stats.device_transferred,
                     source->writer.offset - before);
    return rc;
}

static int queue_device_record(void *opaque, const uint8_t *header, const uint8_t *data,
                               size_t len, atomic_bool *sent, struct gw_error *err)
{
    struct source *source = opaque;

    return multifd_sender_queue_device(source->sender, header, data, len, sent, err);
}

static int wait_device_sent(void *opaque, atomic_bool *sent, struct gw_error *err)
{
    struct source *source = opaque;

    return multifd_sender_wait_sent(source->sender, sent, err);
}

/* The rdma sink's counts, as the stream's lanes count theirs. */
static void rdma_count_sent(void *opaque, uint64_t bytes, bool vm_stopped)
{
    struct source *source = opaque;

    migration_count_sent(source->migration, bytes, vm_stopped);
}

static void rdma_count_pages(void *opaque, uint64_t normal, uint64_t zero)
{
    struct source *source = opaque;

    atomic_fetch_add(&source->migration->stats.normal_pages, normal);
    atomic_fetch_add(&source->migration->stats.zero_pages, zero);
}

/* max-bandwidth over the pass: sleeps once the WRITEs are ahead of it. */
static void rdma_pace(void *opaque, uint64_t bytes)
{
    struct source *source = opaque;
    struct migration *migration = source->migration;
    uint64_t limit, now = migration_now_us();

    pthread_mutex_lock(&migration->lock);
    limit = migration->params.max_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!limit || !source->pace_start_us || now - source->pace_start_us > 1000000) {
        source->pace_start_us = now;
        source->pace_bytes = 0;
    }
    source->pace_bytes += bytes;
    if (!limit)
        return;
    uint64_t due = source->pace_start_us + source->pace_bytes * 1000000 / limit;
    if (due > now) {
        struct timespec pause = { (time_t)((due - now) / 1000000),
                                  (long)((due - now) % 1000000) * 1000 };
        nanosleep(&pause, NULL);
        /* Left out of the link's rate, as the lanes' sleeps are. */
        atomic_fetch_add(&migration->stats.paced_us, migration_now_us() - now);
    }
}

static int setup_sending(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    const struct migration_config *config = &migration->config;
    struct device_sink device_sink = { .opaque = source, .write_main = write_device_record,
                                       .wait_sent = wait_device_sent };

    source->walker = (struct ram_walker){
        .blocks = migration->host.blocks, .nr_blocks = migration->host.nr_blocks,
        .bitmaps = migration->bitmaps, .dirty = source->dirty,
        .dirty_opaque = source->dirty_opaque,
        .cancelled = &migration->cancel_requested,
        .end_pass_now = &migration->switchover_requested,
    };
    ram_zero_hints_init(&source->walker.zero, config->zero_detection, migration->host.blocks,
                        migration->host.nr_blocks);
    source->sender = multifd_sender_new(migration, &source->writer, source->page_size, err);
    if (!source->sender)
        return -ENOMEM;
    source->sink = multifd_sender_sink(source->sender);
    if (rdma_channel_is(&migration->channel)) {
        struct rdma_sink_counts counts = { .sent = rdma_count_sent, .pages = rdma_count_pages,
                                           .pace = rdma_pace, .opaque = source };
        source->rdma_sink = rdma_sink_new(&migration->channel, migration->host.blocks,
                                          migration->host.nr_blocks, &counts, err);
        if (!source->rdma_sink)
            return -ENOMEM;
        source->sink = rdma_sink_page_sink(source->rdma_sink);
    }
    /* Seed 002: device state on multifd channels needs their headers. */
    if (config->multifd && config->channel_header)
        device_sink.queue_multifd = queue_device_record;
    source->saver = vmstate_saver_new(migration->host.devices, &device_sink, err);
    return source->saver ? 0 : -ENOMEM;
}

/* What the devices still have to send, for query-migrate and the
 * estimate (vmstate_pending). */
static void ask_devices(struct migration *migration, struct device_pending *pending)
{
    vmstate_pending(migration->host.devices, pending);
    atomic_store(&migration->stats.device_precopy_pending, pending->precopy);
    atomic_store(&migration->stats.device_stopcopy_pending, pending->stopcopy);
}

static int setup(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint8_t blocks_body[8 + STREAM_BLOCKS_MAX * 48], config_body[CONFIG_RECORD_SIZE];
    uint8_t channel_header[CHANNEL_HEADER_SIZE];
    struct iovec part = { blocks_body, 0 }, config_part = { config_body, sizeof(config_body) };
    struct iovec header_part = { channel_header, sizeof(channel_header) };
    struct channel channel;
    int rc;

    migration_snapshot_config(migration, &migration->config);
    if ((rc = migration_new_id(&migration->config, err)) < 0)
        return rc;
    config_part.iov_len = config_encode(&migration->config, config_body);
    /* A local update hands the RAM over first: the new process maps it and
     * builds its machine before it listens on the main channel. */
    if (migration->local && (rc = migration_local_hand_over(migration, err)) < 0)
        return rc;
    source->dirty = migration->local ? &migration_local_untracked : migration->host.dirty;
    source->dirty_opaque = migration->host.dirty_opaque;
    if (migration->uri.kind == URI_RDMA) {
        struct rdma_options options;
        migration_rdma_options(migration, &options);
        rc = rdma_channel_connect(&migration->uri, &options, migration->cancel_pipe[0], &channel,
                                  err);
    } else {
        rc = channel_connect(&migration->uri, migration->cancel_pipe[0], &channel, err);
    }
    if (rc < 0)
        return rc;
    if ((rc = migration_tls_start(migration, &channel, false, err)) < 0) {
        channel_close(&channel);
        return rc;
    }
    pthread_mutex_lock(&migration->lock);
    migration->channel = channel;
    if (migration_cancelled(migration))
        channel_shutdown(&migration->channel);
    pthread_mutex_unlock(&migration->lock);
    source->writer.io = channel_stream_io(&migration->channel);
    source->page_size = (uint32_t)migration->host.blocks[0].page_size;
    part.iov_len = ram_blocks_record(migration->host.blocks, migration->host.nr_blocks,
                                     blocks_body);
    /* Listen before speaking: a destination that refuses at once must have
     * its RP_ERROR read, not lost when its socket closes. */
    if (migration->channel.has_return_path) {
        rc = pthread_create(&migration->rp_thread, NULL, migration_return_path_thread, migration);
        if (rc)
            return gw_error_set(err, -rc, "cannot start the return-path thread");
        migration->rp_running = true;
    }
    if (migration->config.channel_header) {
        channel_header_encode(channel_header, CHANNEL_MAIN, 0, migration->config.id);
        rc = source->writer.io.writev(source->writer.io.opaque, &header_part, 1, err);
        migration_count_sent(migration, sizeof(channel_header), false);
        if (rc < 0)
            return rc;
    }
    uint64_t before = source->writer.offset;
    rc = stream_write_header(&source->writer, source->page_size, err);
    migration_count_sent(migration, source->writer.offset - before, false);
    if (rc < 0 || (rc = source_write_record(source, REC_RAM_BLOCKS, &part, 1, err)) < 0 ||
        (rc = source_write_record(source, REC_CONFIG, &config_part, 1, err)) < 0 ||
        (rc = postcopy_advise(source, err)) < 0 ||
        (rc = multifd_connect(migration, source->page_size, err)) < 0)
        return rc;
    /* Every page is dirty before the first pass: all of RAM remains; none
     * in a local update, whose RAM stays where it is. */
    if ((rc = ram_bitmaps_alloc(migration->bitmaps, migration->host.blocks,
                                migration->host.nr_blocks, !migration->local, err)) < 0 ||
        (rc = vmstate_save_setup(migration->host.devices, err)) < 0)
        return rc;
    convergence_pass_begin(migration, count_dirty(migration), false);
    /* remaining counts device state from the start */
    ask_devices(migration, &source->devices);
    source->cores = migration_host_cores();
    /* The estimate it feeds decides nothing in a local update, which goes
     * to the switchover after one pass: the guest is spared the stop. */
    if (migration->host.time_stop && !migration->local)
        source->stop_cost_us = migration->host.time_stop(migration->host.opaque,
                                                         &source->start_cost_us);
    rc = source->dirty->start(source->dirty_opaque, err);
    if (rc < 0)
        return rc;
    source->tracking = true;
    throttle_trigger_start(&source->trigger, migration_now_us(),
                           atomic_load(&migration->stats.transferred));
    migration_dirty_limit_begin(migration, &source->dirty_limit);
    /* Starting to track, every page dirty, is the first sync: QEMU counts
     * it too, so dirty-sync-count is 1 during the first pass. */
    atomic_store(&migration->stats.dirty_sync_count, 1);
    emit_pass(migration, 1);
    /* As QEMU, before the first pass has measured anything the expected
     * downtime shown is the limit. */
    pthread_mutex_lock(&migration->lock);
    atomic_store(&migration->stats.expected_downtime_ms, migration->params.downtime_limit_ms);
    pthread_mutex_unlock(&migration->lock);
    return setup_sending(source, err);
}

/* The tracker's sync and the devices' pending query are the whole of a
 * sync: both are timed, so query-migrate can say where its time went. The
 * final sync, with the guest stopped, leaves the devices alone: their
 * stop-copy state is sent right after, whatever it is. */
static int sync_dirty(struct source *source, bool query_devices, struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct migration_stats *stats = &migration->stats;
    struct dirty_sync_times times = { 0 };
    uint64_t started = migration_now_us(), tracked, ended;
    int rc;

    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        rc = source->dirty->sync(source->dirty_opaque, b, migration->bitmaps[b], &times, err);
        if (rc < 0)
            return rc;
    }
    tracked = migration_now_us();
    if (query_devices)
        ask_devices(migration, &source->devices);
    ended = migration_now_us();
    /* A tracker that cannot split its time reports none: all of it is fetch. */
    if (times.fetch_us + times.merge_us == 0)
        times.fetch_us = tracked - started;
    atomic_store(&stats->last_sync_fetch_us, times.fetch_us);
    atomic_store(&stats->last_sync_merge_us, times.merge_us);
    atomic_store(&stats->last_sync_device_us, ended - tracked);
    atomic_store(&stats->last_sync_us, ended - started);
    atomic_fetch_add(&stats->dirty_sync_time_us, ended - started);
    emit_pass(migration, atomic_fetch_add(&stats->dirty_sync_count, 1) + 1);
    return 0;
}

/* Sends one pass and updates the estimates; fills what the pass did (the
 * dirty pages left, the bytes sent, its time). */
static int run_pass(struct source *source, uint64_t pass, struct pass_figures *figures,
                    struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct migration_stats *stats = &migration->stats;
    uint64_t bytes_before = atomic_load(&stats->transferred);
    uint64_t started = migration_now_us(), sent_us, bytes;
    uint64_t paced_before = atomic_load(&stats->paced_us);
    struct iovec part = { &pass, sizeof(pass) };
    uint64_t in_flight_before = migration_in_flight_bytes(migration);
    bool fired;
    int rc;

    atomic_store(&stats->pass_started_us, started);
    source->pass = pass;
    rc = ram_send_dirty(&source->walker, &source->sink, true, false, pass, err);
    /* A switchover asked for now does not wait for device precopy data:
     * the stop-copy phase sends it all. */
    if (rc == 0 && !atomic_load(&migration->switchover_requested))
        rc = vmstate_save_precopy(source->saver, DEVICE_PASS_BUDGET, err);
    atomic_store(&stats->pass_started_us, 0);
    if (rc == 0)
        rc = source_write_record(source, REC_PASS_END, &part, 1, err);
    if (rc < 0)
        return rc;
    sent_us = migration_now_us() - started;
    bytes = atomic_load(&stats->transferred) - bytes_before;
    atomic_fetch_add(&stats->transfer_time_us, sent_us);
    sent_us = sent_us ? sent_us : 1;   /* a rate below, never a division by 0 */
    /* A pass of a few pages says more about latency than bandwidth: it only
     * replaces an estimate from a pass that moved real data if there is
     * none yet (it then underestimates, which errs on the safe side). */
    if (bytes > 0 && (bytes >= (1u << 20) || !atomic_load(&stats->bandwidth))) {
        atomic_store(&stats->bandwidth, bytes * 1000000 / sent_us);
        atomic_store(&stats->pages_per_second, (bytes / source->page_size) * 1000000 / sent_us);
    }
    migration_measure_link(stats, bytes + in_flight_before, migration_in_flight_bytes(migration),
                 atomic_load(&stats->paced_us) - paced_before, sent_us);
    uint64_t left_dirty = count_dirty(migration);   /* 0 unless the pass was cut short */
    rc = sync_dirty(source, true, err);
    if (rc < 0)
        return rc;
    figures->time_us = migration_now_us() - started;
    figures->sent_bytes = bytes;
    figures->dirty_pages = count_dirty(migration);
    atomic_store(&stats->dirty_pages_rate, figures->dirty_pages * 1000000 /
                                               (figures->time_us + 1));
    /* The next pass's pages are counted from here: what is left never
     * reads as the finished pass's nothing. */
    convergence_pass_begin(migration, figures->dirty_pages, true);
    rc = convergence_sample(migration, &source->sampler, figures->time_us,
                            figures->dirty_pages, err);
    if (rc < 0)
        return rc;
    if (count_dirty(migration) != figures->dirty_pages) {
        /* The sample's pages join the pass, and its time too. */
        figures->dirty_pages = count_dirty(migration);
        figures->time_us = migration_now_us() - started;
        convergence_pass_begin(migration, figures->dirty_pages, true);
    }
    /* The sync and the sample's syncs found these newly dirty; the trigger
     * fires auto-converge's step or dirty-limit's start. */
    fired = migration_throttle_sync(migration, &source->trigger,
                                    (figures->dirty_pages - left_dirty) * source->page_size);
    rc = migration_dirty_limit_after_sync(migration, &source->dirty_limit, fired, err);
    if (rc < 0)
        return rc;
    return 0;
}

/* Bytes the stop-copy phase would send now: dirty RAM and device state,
 * as of the last sync. */
static uint64_t stopcopy_bytes(struct source *source, uint64_t dirty_pages)
{
    return dirty_pages * source->page_size + source->devices.stopcopy;
}

static int precopy(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint64_t previous = UINT64_MAX, remaining, limit_us;
    struct pass_figures figures;
    int rc;

    for (uint64_t pass = 1;; pass++) {
        rc = run_pass(source, pass, &figures, err);
        if (rc < 0)
            return rc;
        remaining = stopcopy_bytes(source, figures.dirty_pages);
        struct estimate_input input = {
            .ram_bytes = figures.dirty_pages * source->page_size, .devices = &source->devices,
            .stop_cost_us = source->stop_cost_us, .start_cost_us = source->start_cost_us,
            .cores = source->cores,
        };
        source->expected_downtime_us = migration_estimate_downtime(migration, &source->estimate,
                                                                   &input);
        atomic_store(&migration->stats.expected_downtime_ms,
                     (source->expected_downtime_us + 999) / 1000);
        pthread_mutex_lock(&migration->lock);
        limit_us = migration->params.downtime_limit_ms * 1000;
        pthread_mutex_unlock(&migration->lock);
        figures.left_bytes = remaining;
        figures.expected_downtime_us = source->expected_downtime_us;
        figures.limit_us = limit_us;
        figures.switchover_bandwidth = migration_switchover_bandwidth(migration);
        convergence_after_pass(migration, &figures);
        if (atomic_load(&migration->switchover_requested))
            return 0;   /* x-migrate-switchover-now: whatever the downtime */
        /* QEMU stops as soon as the estimate fits; we go on while passes
         * still shrink what is left, so the stop-copy phase is as short as
         * this guest allows. */
        bool shrinking = previous == UINT64_MAX ||
                         remaining * 100 < previous * CONVERGENCE_SHRINK_PERCENT;
        if (source->expected_downtime_us <= limit_us &&
            (downtime_left_to_send_us(&source->estimate) <= CONVERGENCE_SMALL_DOWNTIME_US ||
             !shrinking))
            return 0;
        if (shrinking)
            previous = remaining;
        if (migration_cancelled(migration))
            return gw_error_set(err, -ECANCELED, "the migration was cancelled");
        /* Nothing to send and still no switchover (the limit is below what
         * the device state alone needs): let pages get dirty rather than
         * spin on syncs. */
        if (figures.dirty_pages == 0) {
            struct timespec pause = { 0, IDLE_PASS_PAUSE_NS };
            nanosleep(&pause, NULL);
        }
    }
}

/* A local update moves no RAM: one pass, with nothing dirty, carries the
 * devices' precopy data while the guest runs; then the switchover. */
static int local_precopy(struct source *source, struct gw_error *err)
{
    uint64_t pass = 1;
    struct iovec part = { &pass, sizeof(pass) };
    int rc;

    source->pass = pass;
    if ((rc = ram_send_dirty(&source->walker, &source->sink, true, false, pass, err)) < 0 ||
        (rc = vmstate_save_precopy(source->saver, DEVICE_PASS_BUDGET, err)) < 0)
        return rc;
    return source_write_record(source, REC_PASS_END, &part, 1, err);
}


/* pause-before-switchover (QEMU's): with the guest stopped and nothing of
 * the stop-copy phase sent, waits in pre-switchover for migrate-continue.
 * migrate_cancel, or a destination that fails or goes away meanwhile, ends
 * the migration and the guest goes back to its state here, unchanged. */
static int pause_before_switchover(struct migration *migration, struct gw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&migration->lock);
    migration->continue_requested = false;
    pthread_mutex_unlock(&migration->lock);
    migration_set_status(migration, MIGRATION_PRE_SWITCHOVER);
    pthread_mutex_lock(&migration->lock);
    while (!migration->continue_requested && !migration_cancelled(migration) &&
           !migration->rp_error[0] && !migration->rp_closed)
        migration_wait_changed(migration);
    if (migration_cancelled(migration))
        rc = gw_error_set(err, -ECANCELED, "the migration was cancelled");
    else if (!migration->continue_requested)
        rc = migration->rp_error[0]
                 ? gw_error_set(err, -EIO, "the destination failed: %s", migration->rp_error)
                 : gw_error_set(err, -EPIPE, "the destination closed the connection while the "
                                "source waited for migrate-continue");
    pthread_mutex_unlock(&migration->lock);
    if (rc == 0)
        migration_set_status(migration, MIGRATION_DEVICE);
    return rc;
}

/* Records the part of the downtime that ends now. */
static void downtime_mark_at(struct migration_stats *stats, enum downtime_part part,
                             uint64_t *mark, uint64_t now)
{
    atomic_store(&stats->downtime_parts_us[part], now - *mark);
    *mark = now;
}

static void downtime_mark(struct migration_stats *stats, enum downtime_part part, uint64_t *mark)
{
    downtime_mark_at(stats, part, mark, migration_now_us());
}

static void downtime_end(struct migration_stats *stats, uint64_t stop_us, uint64_t end_us,
                         bool round_up)
{
    uint64_t us = end_us - stop_us;

    atomic_store(&stats->downtime_us, us);
    atomic_store(&stats->downtime_ms, (us + (round_up ? 999 : 0)) / 1000);
}

static int switchover(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct migration_stats *stats = &migration->stats;
    bool pause;
    int rc;

    source->walker.end_pass_now = NULL;   /* the stop-copy pass sends every page */
    source->postcopy = atomic_load(&migration->postcopy_requested);
    pthread_mutex_lock(&migration->lock);
    pause = migration->cap_pause_before_switchover;
    pthread_mutex_unlock(&migration->lock);
    if (!pause)
        migration_set_status(migration, MIGRATION_DEVICE);
    /* Downtime starts when the guest is asked to stop, as QEMU counts it. */
    source->stop_us = migration_now_us();
    uint64_t mark = source->stop_us, end_us;
    /* QEMU's global state: a guest paused here arrives paused. */
    uint32_t run_state[2] = { migration->host.stop_for_switchover(migration->host.opaque), 0 };
    struct iovec run_state_part = { run_state, sizeof(run_state) };
    source->vm_stopped = true;
    if (pause && (rc = pause_before_switchover(migration, err)) < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_STOP, &mark);
    atomic_store(&stats->expected_downtime_at_switchover_ms,
                 (source->expected_downtime_us + 999) / 1000);
    atomic_store(&stats->expected_downtime_at_switchover_us, source->expected_downtime_us);
    pthread_mutex_lock(&migration->lock);
    stats->estimate_at_switchover = source->estimate;
    pthread_mutex_unlock(&migration->lock);
    /* Tells the destination that precopy data is over, so it may load
     * device state from the multifd channels as soon as it arrives. */
    if ((rc = source_write_record(source, REC_SWITCHOVER, NULL, 0, err)) < 0 ||
        (rc = source_write_record(source, REC_RUN_STATE, &run_state_part, 1, err)) < 0)
        return rc;
    if ((rc = sync_dirty(source, false, err)) < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_SYNC, &mark);
    convergence_pass_begin(migration, count_dirty(migration), false);
    /* Postcopy leaves the dirty pages for after the switch. */
    if (!source->postcopy &&
        (rc = ram_send_dirty(&source->walker, &source->sink, false, true, source->pass + 1,
                             err)) < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_RAM, &mark);
    if ((rc = vmstate_save_stopcopy(source->saver, err)) < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_DEVICE, &mark);
    if ((migration->config.multifd && (rc = multifd_sender_finish(source->sender, err)) < 0) ||
        (rc = source->postcopy ? postcopy_send_switch(source, err)
                               : source_send_end(source, err)) < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_FLUSH, &mark);
    if (!migration->channel.has_return_path) {
        /* A file or a pipe: nobody answers. The stream is whole; done. */
        downtime_end(stats, source->stop_us, migration_now_us(), false);
        return 0;
    }
    rc = migration_wait_for_destination(migration, &migration->rp_ready, READY_TIMEOUT_US,
                              "it loaded everything", err);
    if (rc < 0)
        return rc;
    downtime_mark(stats, DOWNTIME_LOAD, &mark);
    /* The point of no return: after GO the destination owns the guest,
     * unless it says it gave up first (below). */
    pthread_mutex_lock(&migration->lock);
    migration->go_sent_us = migration_now_us();
    pthread_mutex_unlock(&migration->lock);
    /* Postcopy: from GO on the guest runs there before its RAM is all
     * there, so nothing may cancel any more (migration_begin_cancel). */
    if (source->postcopy)
        migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
    rc = source_write_record(source, REC_GO, NULL, 0, err);
    if (rc < 0)
        return rc;
    source->vm_stopped = false;   /* not ours to put back, but for an RP_ERROR */
    rc = migration_wait_for_destination(migration, &migration->rp_running_seen, RUNNING_TIMEOUT_US,
                              "it took the guest over", err);
    if (rc < 0) {
        /* An RP_ERROR says the destination gave up before GO reached it
         * (its deadline for GO passed, or it was cancelled) and will never
         * run the guest: it is ours again. Silence or a closed connection
         * says nothing: GO went out, so the destination may well run; keep
         * the source stopped. Downtime is then measured to GO. */
        pthread_mutex_lock(&migration->lock);
        source->vm_stopped = migration->rp_refused;
        pthread_mutex_unlock(&migration->lock);
        if (source->vm_stopped)
            return rc;
        gw_error_clear(err);
    }
    /* The guest ran when RP_RUNNING says, not when this thread woke to it. */
    pthread_mutex_lock(&migration->lock);
    end_us = migration->rp_running_seen ? migration->rp_running_us : migration_now_us();
    pthread_mutex_unlock(&migration->lock);
    end_us = end_us > mark ? end_us : mark;
    downtime_mark_at(stats, DOWNTIME_RESUME, &mark, end_us);
    downtime_end(stats, source->stop_us, end_us, true);
    return source->postcopy ? postcopy_send_rest(source, err) : 0;
}

static void finish(struct source *source, int rc, struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct migration_stats *stats = &migration->stats;

    pthread_mutex_lock(&migration->lock);
    migration->source_finishing = true;
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
    if (source->tracking)
        source->dirty->stop(source->dirty_opaque);
    /* Before a rollback runs the guest again: at its full speed. */
    migration_throttle_end(migration);
    migration_dirty_limit_end(migration, &source->dirty_limit);
    if (rc < 0 && source->vm_stopped)
        migration->host.rollback(migration->host.opaque);
    if ((rc == -EPIPE || rc == -ECONNRESET) && migration->rp_running)
        migration_wait_for_rp_error(migration);
    pthread_mutex_lock(&migration->lock);
    channel_shutdown(&migration->channel);
    migration_shutdown_multifd_locked(migration);
    pthread_mutex_unlock(&migration->lock);
    multifd_sender_free(source->sender);
    source->sender = NULL;
    rdma_sink_free(source->rdma_sink);   /* before the channel's connection closes */
    source->rdma_sink = NULL;
    multifd_close_channels(migration);
    preempt_close(migration);
    vmstate_saver_free(source->saver);   /* no channel holds its buffers now */
    dirty_sampler_free(&source->sampler);
    pthread_mutex_lock(&migration->lock);
    free(migration->postcopy_queue);
    migration->postcopy_queue = NULL;
    pthread_mutex_unlock(&migration->lock);
    ram_zero_hints_free(&source->walker.zero);
    if (migration->rp_running) {
        pthread_join(migration->rp_thread, NULL);
        migration->rp_running = false;
    }
    pthread_mutex_lock(&migration->lock);
    channel_close(&migration->channel);
    if (rc < 0 && migration->rp_error[0] && !migration_cancelled(migration))
        gw_error_set(err, -EIO, "the destination failed: %s", migration->rp_error);
    pthread_mutex_unlock(&migration->lock);
    atomic_store(&stats->total_ms, migration_now_us() / 1000 - atomic_load(&stats->start_ms));
    if (rc < 0) {
        migration_fail(migration, err);
        return;
    }
    migration->host.source_completed(migration->host.opaque);
    /* The new process owns the guest's memory now: this one lets go of it
     * before anyone is told the migration completed. */
    if (migration->local && migration->host.release_ram)
        migration->host.release_ram(migration->host.opaque);
    migration_set_status(migration, MIGRATION_COMPLETED);
}

void *migration_source_thread(void *opaque)
{
    struct source source = { .migration = opaque, .walker.zero.pagemap_fd = -1 };
    struct migration *migration = opaque;
    struct gw_error err = { 0 };
    int rc;

    rc = setup(&source, &err);
    if (rc == 0) {
        atomic_store(&migration->stats.setup_ms,
                     migration_now_us() / 1000 - atomic_load(&migration->stats.start_ms));
        migration_set_status(migration, MIGRATION_ACTIVE);
        rc = migration->local ? local_precopy(&source, &err) : precopy(&source, &err);
    }
    if (rc == 0)
        rc = switchover(&source, &err);
    if (rc < 0 && migration_cancelled(migration))
        gw_error_set(&err, -ECANCELED, "the migration was cancelled");
    finish(&source, rc, &err);
    return NULL;
}
