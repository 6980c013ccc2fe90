/* What a migration reports: query-migrate's object, with QEMU's field
 * names and units (and godwit's own, marked in docs/qmp.md), and HMP's
 * "info migrate" made from the same object, so the two never disagree. */
#include "migration_internal.h"

#include <inttypes.h>
#include <string.h>

#include <godwit/hmp.h>
#include <godwit/size.h>

/* ram.remaining: what would still have to be sent if the pass ended now
 * (migration_convergence.c); nothing once completed. */
static uint64_t ram_remaining(struct migration *migration, enum migration_status status)
{
    if (status == MIGRATION_COMPLETED)
        return 0;
    return convergence_ram_remaining(migration, status == MIGRATION_ACTIVE);
}

static json_t *ram_info(struct migration *migration, enum migration_status status)
{
    struct migration_stats *stats = &migration->stats;
    uint64_t page_size = migration->host.blocks[0].page_size, total = 0;
    uint64_t transfer_us = atomic_load(&stats->transfer_time_us);
    uint64_t pass_started = atomic_load(&stats->pass_started_us);

    if (pass_started)   /* a pass in progress counts too: live figures */
        transfer_us += migration_now_us() - pass_started;
    uint64_t precopy = atomic_load(&stats->precopy_bytes);
    uint64_t normal = atomic_load(&stats->normal_pages);

    for (unsigned i = 0; i < migration->host.nr_blocks; i++)
        total += migration->host.blocks[i].size;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
        "transferred", (json_int_t)atomic_load(&stats->transferred),
        "remaining", (json_int_t)ram_remaining(migration, status),
        "total", (json_int_t)total,
        "duplicate", (json_int_t)atomic_load(&stats->zero_pages),
        "normal", (json_int_t)normal,
        "normal-bytes", (json_int_t)(normal * page_size),
        "dirty-pages-rate", (json_int_t)atomic_load(&stats->dirty_pages_rate),
        "mbps", transfer_us ? (double)precopy * 8 / (double)transfer_us : 0.0,
        "dirty-sync-count", (json_int_t)atomic_load(&stats->dirty_sync_count),
        "pages-per-second", (json_int_t)atomic_load(&stats->pages_per_second),
        "precopy-bytes", (json_int_t)precopy,
        "downtime-bytes", (json_int_t)atomic_load(&stats->downtime_bytes),
        "dirty-sync-time", (json_int_t)(atomic_load(&stats->dirty_sync_time_us) / 1000),
        "multifd-bytes", (json_int_t)atomic_load(&stats->multifd_bytes),
        "page-size", (json_int_t)page_size);
}

/* Postcopy's figures: on the source the requests it answered and the bytes
 * it sent after the switch (ram.postcopy-requests, ram.postcopy-bytes); on
 * the destination the requests it made and, with the postcopy-blocktime
 * capability, the guest's stall and the requests' latency (QEMU 10.1's
 * names: postcopy-blocktime in ms, postcopy-latency in us, and
 * postcopy-latency-dist, bucket N counting answers in [2^N, 2^(N+1)) us). */
static void postcopy_info(struct migration *migration, json_t *info, json_t *ram)
{
    struct postcopy_stats stats;
    bool blocktime;

    pthread_mutex_lock(&migration->lock);
    blocktime = migration->cap_postcopy_blocktime;
    const struct postcopy_stats *live = migration->postcopy_ram
                                            ? postcopy_ram_stats(migration->postcopy_ram)
                                            : &migration->stats.postcopy;
    memcpy(&stats, live, sizeof(stats));
    pthread_mutex_unlock(&migration->lock);
    if (!migration->is_destination) {
        struct migration_stats *own = &migration->stats;
        json_object_set_new(ram, "postcopy-requests",
                            json_integer((json_int_t)atomic_load(&own->postcopy_requests)));
        json_object_set_new(ram, "postcopy-bytes",
                            json_integer((json_int_t)atomic_load(&own->postcopy_bytes)));
        json_object_set_new(ram, "x-postcopy-preempt-bytes",
                            json_integer((json_int_t)atomic_load(&own->preempt_bytes)));
        return;
    }
    uint64_t requests = atomic_load(&stats.requests);
    json_object_set_new(ram, "postcopy-requests", json_integer((json_int_t)requests));
    if (!blocktime)
        return;
    uint64_t answered = 0;
    json_t *dist = json_array();
    for (int i = 0; i < POSTCOPY_LATENCY_BUCKETS; i++) {
        answered += atomic_load(&stats.latency[i]);
        json_array_append_new(dist, json_integer((json_int_t)atomic_load(&stats.latency[i])));
    }
    /* QEMU's: every vCPU waiting at once; without the vCPUs' threads, the
     * time any thread waited (also ours as x-postcopy-wait-time). */
    uint64_t wait_ms = atomic_load(&stats.wait_us) / 1000;
    json_object_set_new(info, "postcopy-blocktime", json_integer((json_int_t)(
        stats.nr_vcpus ? atomic_load(&stats.blocktime_us) / 1000 : wait_ms)));
    json_object_set_new(info, "x-postcopy-wait-time", json_integer((json_int_t)wait_ms));
    if (stats.nr_vcpus) {
        json_t *vcpus = json_array();
        for (unsigned v = 0; v < stats.nr_vcpus; v++)
            json_array_append_new(vcpus, json_integer((json_int_t)(
                atomic_load(&stats.vcpu_blocktime_us[v]) / 1000)));
        json_object_set_new(info, "postcopy-vcpu-blocktime", vcpus);
    }
    json_object_set_new(info, "postcopy-latency",
                        json_integer((json_int_t)(answered ? atomic_load(&stats.latency_total_us) /
                                                                 answered : 0)));
    json_object_set_new(info, "postcopy-latency-dist", dist);
    json_object_set_new(info, "x-postcopy-placed",
                        json_pack("{s:I,s:I}", "pages", (json_int_t)atomic_load(&stats.placed),
                                  "duplicates", (json_int_t)atomic_load(&stats.duplicates)));
}

/* Ours: where the last dirty-bitmap sync's time went (seed 001: sync time
 * decides which guests converge), in microseconds. */
static json_t *last_sync_info(struct migration_stats *stats)
{
    return json_pack("{s:I,s:I,s:I,s:I}",
        "total", (json_int_t)atomic_load(&stats->last_sync_us),
        "fetch", (json_int_t)atomic_load(&stats->last_sync_fetch_us),
        "merge", (json_int_t)atomic_load(&stats->last_sync_merge_us),
        "device", (json_int_t)atomic_load(&stats->last_sync_device_us));
}

/* Ours: an rdma: migration's figures (docs/rdma.md), on either side. */
static json_t *rdma_info(struct rdma_stats *stats)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
        "chunk-size", (json_int_t)atomic_load(&stats->chunk_size),
        "chunks-registered", (json_int_t)atomic_load(&stats->chunks_registered),
        "registrations", (json_int_t)atomic_load(&stats->registrations),
        "writes-posted", (json_int_t)atomic_load(&stats->writes_posted),
        "completions-waited", (json_int_t)atomic_load(&stats->completions_waited),
        "bytes-write", (json_int_t)atomic_load(&stats->bytes_write),
        "bytes-send", (json_int_t)atomic_load(&stats->bytes_send),
        "zero-chunks-skipped", (json_int_t)atomic_load(&stats->zero_chunks_skipped));
}

/* The switchover in us (ours): what was expected, what it took, and its
 * parts in the order they happened; they add up to the total. */
static json_t *expected_detail(struct migration *migration)
{
    static const char *const names[ESTIMATE_PARTS] = {
        [ESTIMATE_STOP] = "stop", [ESTIMATE_SYNC] = "sync", [ESTIMATE_TRANSFER] = "transfer",
        [ESTIMATE_DEVICE] = "device", [ESTIMATE_READY] = "ready",
        [ESTIMATE_RUNNING] = "running",
    };
    struct downtime_estimate estimate;

    pthread_mutex_lock(&migration->lock);
    estimate = migration->stats.estimate_at_switchover;
    pthread_mutex_unlock(&migration->lock);
    json_t *expected = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}",
        "total", (json_int_t)atomic_load(&migration->stats.expected_downtime_at_switchover_us),
        "bytes", (json_int_t)estimate.bytes, "bandwidth", (json_int_t)estimate.bandwidth,
        "device-save", (json_int_t)estimate.device_save_us,
        "device-lanes", (json_int_t)estimate.device_lanes, "cores", (json_int_t)estimate.cores);
    for (int part = 0; part < ESTIMATE_PARTS; part++)
        json_object_set_new(expected, names[part], json_integer((json_int_t)estimate.parts[part]));
    return expected;
}

static json_t *downtime_detail(struct migration *migration)
{
    struct migration_stats *stats = &migration->stats;
    static const char *const names[DOWNTIME_PARTS] = {
        [DOWNTIME_STOP] = "stop", [DOWNTIME_SYNC] = "sync", [DOWNTIME_RAM] = "ram",
        [DOWNTIME_DEVICE] = "device", [DOWNTIME_FLUSH] = "flush", [DOWNTIME_LOAD] = "load",
        [DOWNTIME_RESUME] = "resume",
    };
    json_t *detail = json_pack("{s:I,s:I,s:o}",
        "total", (json_int_t)atomic_load(&stats->downtime_us),
        "bytes", (json_int_t)atomic_load(&stats->downtime_bytes),
        "expected", expected_detail(migration));

    for (int part = 0; part < DOWNTIME_PARTS; part++)
        json_object_set_new(detail, names[part],
                            json_integer((json_int_t)atomic_load(&stats->downtime_parts_us[part])));
    return detail;
}

json_t *migration_info(struct migration *migration)
{
    struct migration_stats *stats = &migration->stats;
    enum migration_status status;
    char error[GW_ERROR_MSG_MAX];
    json_t *info;

    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    memcpy(error, migration->error, sizeof(error));
    pthread_mutex_unlock(&migration->lock);
    if (status == MIGRATION_NONE)
        return json_object();
    info = json_pack("{s:s}", "status", migration_status_name(status));
    uint64_t total = migration_in_progress(status)
                         ? migration_now_us() / 1000 - atomic_load(&stats->start_ms)
                         : atomic_load(&stats->total_ms);
    json_object_set_new(info, "total-time", json_integer((json_int_t)total));
    if (status != MIGRATION_SETUP)
        json_object_set_new(info, "setup-time",
                            json_integer((json_int_t)atomic_load(&stats->setup_ms)));
    if (status == MIGRATION_ACTIVE || status == MIGRATION_DEVICE ||
        status == MIGRATION_PRE_SWITCHOVER)
        json_object_set_new(info, "expected-downtime",
                            json_integer((json_int_t)atomic_load(&stats->expected_downtime_ms)));
    if (status == MIGRATION_COMPLETED && !migration->is_destination) {
        json_object_set_new(info, "downtime",
                            json_integer((json_int_t)atomic_load(&stats->downtime_ms)));
        json_object_set_new(info, "expected-downtime-at-switchover",
                            json_integer((json_int_t)atomic_load(
                                &stats->expected_downtime_at_switchover_ms)));
        json_object_set_new(info, "downtime-detail", downtime_detail(migration));
    }
    if (status != MIGRATION_SETUP) {
        uint64_t precopy = atomic_load(&stats->device_precopy_pending);
        uint64_t stopcopy = atomic_load(&stats->device_stopcopy_pending);
        json_t *ram = ram_info(migration, status);

        json_object_set_new(ram, "last-dirty-sync", last_sync_info(stats));
        /* QEMU's system-wide figure: RAM not sent yet plus what the devices
         * still hold (their stop-copy size includes their precopy data). */
        uint64_t remaining = (uint64_t)json_integer_value(json_object_get(ram, "remaining")) +
                             (migration_in_progress(status) ? stopcopy : 0);
        json_object_set_new(info, "remaining", json_integer((json_int_t)remaining));
        json_t *convergence = convergence_info(migration, migration_in_progress(status));
        if (convergence)
            json_object_set_new(info, "convergence", convergence);
        postcopy_info(migration, info, ram);
        json_object_set_new(info, "ram", ram);
        json_object_set_new(info, "device-state",
                            json_pack("{s:I,s:I,s:I}", "transferred",
                                      (json_int_t)atomic_load(&stats->device_transferred),
                                      "precopy-pending",
                                      (json_int_t)(migration_in_progress(status) ? precopy : 0),
                                      "stopcopy-pending",
                                      (json_int_t)(migration_in_progress(status) ? stopcopy : 0)));
    }
    /* As QEMU: there while auto-converge throttles the guest. */
    uint64_t throttle = atomic_load(&stats->cpu_throttle_percentage);
    if (throttle)
        json_object_set_new(info, "cpu-throttle-percentage", json_integer((json_int_t)throttle));
    /* QEMU's, while dirty-limit throttles the guest (us). */
    if (atomic_load(&stats->dirty_limit_on) && migration->host.dirty_limit_stats) {
        uint64_t per_round, ring_full;
        migration->host.dirty_limit_stats(migration->host.opaque, &per_round, &ring_full);
        json_object_set_new(info, "dirty-limit-throttle-time-per-round",
                            json_integer((json_int_t)per_round));
        json_object_set_new(info, "dirty-limit-ring-full-time",
                            json_integer((json_int_t)ring_full));
    }
    migration_tls_info(migration, info);
    if (migration->uri.kind == URI_RDMA && status != MIGRATION_SETUP)
        json_object_set_new(info, "rdma", rdma_info(&stats->rdma));
    if ((status == MIGRATION_FAILED || status == MIGRATION_CANCELLED) && error[0])
        json_object_set_new(info, "error-desc", json_string(error));
    return info;
}

static uint64_t field(json_t *object, const char *name)
{
    return (uint64_t)json_integer_value(json_object_get(object, name));
}

static const char *human(uint64_t bytes, char *buf, size_t len)
{
    return size_format(bytes, buf, len);
}

/* Postcopy's line: the requests, and the bytes after the switch (source)
 * or the stall and the latency with its nonzero buckets (destination). */
static void hmp_postcopy(struct hmp_output *out, json_t *info, json_t *ram)
{
    char a[32];
    json_t *dist = json_object_get(info, "postcopy-latency-dist"), *count;
    size_t bucket;

    hmp_printf(out, "Postcopy:               requests=%" PRIu64, field(ram, "postcopy-requests"));
    if (json_object_get(ram, "postcopy-bytes"))
        hmp_printf(out, ", bytes=%s", human(field(ram, "postcopy-bytes"), a, sizeof(a)));
    if (json_object_get(info, "postcopy-blocktime"))
        hmp_printf(out, ", blocktime=%" PRIu64 " ms, latency=%" PRIu64 " us",
                   field(info, "postcopy-blocktime"), field(info, "postcopy-latency"));
    hmp_printf(out, "\r\n");
    if (!dist)
        return;
    hmp_printf(out, "  Latency (us: count):  ");
    json_array_foreach(dist, bucket, count)
        if (json_integer_value(count))
            hmp_printf(out, "[%llu,%llu): %" PRIu64 "  ", 1ULL << bucket, 2ULL << bucket,
                       (uint64_t)json_integer_value(count));
    hmp_printf(out, "\r\n");
}

/* The layout of QEMU's newer "info migrate" (seed 004), with godwit's own
 * lines (device state, sync time) marked by what they show. */
int migration_hmp_info(const char *args, struct hmp_output *out, struct gw_error *err,
                       void *opaque)
{
    struct migration *migration = opaque;
    json_t *info = migration_info(migration), *ram = json_object_get(info, "ram");
    json_t *device = json_object_get(info, "device-state");
    const char *status = json_string_value(json_object_get(info, "status"));
    char a[32], b[32], c[32];

    (void)args;
    (void)err;
    hmp_printf(out, "Status:                 %s\r\n", status ? status : "none");
    if (!status) {
        json_decref(info);
        return 0;
    }
    hmp_printf(out, "Time (ms):              total=%" PRIu64, field(info, "total-time"));
    if (json_object_get(info, "setup-time"))
        hmp_printf(out, ", setup=%" PRIu64, field(info, "setup-time"));
    if (json_object_get(info, "expected-downtime"))
        hmp_printf(out, ", exp_down=%" PRIu64, field(info, "expected-downtime"));
    if (json_object_get(info, "downtime"))
        hmp_printf(out, ", down=%" PRIu64 " (predicted %" PRIu64 ")", field(info, "downtime"),
                   field(info, "expected-downtime-at-switchover"));
    hmp_printf(out, "\r\n");
    json_t *detail = json_object_get(info, "downtime-detail");
    if (detail)
        hmp_printf(out, "Downtime (us):          total=%" PRIu64 " (predicted %" PRIu64 "): stop=%"
                   PRIu64 ", sync=%" PRIu64 ", ram=%" PRIu64 ", device=%" PRIu64 ", flush=%"
                   PRIu64 ", load=%" PRIu64 ", resume=%" PRIu64 "\r\n",
                   field(detail, "total"), field(json_object_get(detail, "expected"), "total"),
                   field(detail, "stop"),
                   field(detail, "sync"), field(detail, "ram"), field(detail, "device"),
                   field(detail, "flush"), field(detail, "load"), field(detail, "resume"));
    json_t *expected = detail ? json_object_get(detail, "expected") : NULL;
    if (expected)
        hmp_printf(out, "Predicted (us):         stop=%" PRIu64 ", sync=%" PRIu64 ", transfer=%"
                   PRIu64 " (%s at %s/s), device=%" PRIu64 ", ready=%" PRIu64 ", running=%"
                   PRIu64 "\r\n", field(expected, "stop"), field(expected, "sync"),
                   field(expected, "transfer"), human(field(expected, "bytes"), a, sizeof(a)),
                   human(field(expected, "bandwidth"), b, sizeof(b)), field(expected, "device"),
                   field(expected, "ready"), field(expected, "running"));
    if (json_object_get(info, "cpu-throttle-percentage"))
        hmp_printf(out, "CPU throttle (%%):       %" PRIu64 "\r\n",
                   field(info, "cpu-throttle-percentage"));
    if (json_object_get(info, "remaining"))
        hmp_printf(out, "Remaining (bytes):      %s\r\n",
                   human(field(info, "remaining"), a, sizeof(a)));
    if (ram) {
        hmp_printf(out, "RAM info:\r\n");
        hmp_printf(out, "  Throughput (Mbps):    %.2f\r\n",
                   json_real_value(json_object_get(ram, "mbps")));
        hmp_printf(out, "  Sizes:                pagesize=%s, total=%s\r\n",
                   human(migration->host.blocks[0].page_size, a, sizeof(a)),
                   human(field(ram, "total"), b, sizeof(b)));
        hmp_printf(out, "  Transfers:            transferred=%s, remain=%s\r\n",
                   human(field(ram, "transferred"), a, sizeof(a)),
                   human(field(ram, "remaining"), b, sizeof(b)));
        hmp_printf(out, "    Channels:           precopy=%s, downtime=%s, multifd=%s\r\n",
                   human(field(ram, "precopy-bytes"), a, sizeof(a)),
                   human(field(ram, "downtime-bytes"), b, sizeof(b)),
                   human(field(ram, "multifd-bytes"), c, sizeof(c)));
        hmp_printf(out, "    Page Types:         normal=%" PRIu64 ", zero=%" PRIu64 "\r\n",
                   field(ram, "normal"), field(ram, "duplicate"));
        hmp_printf(out, "  Page Rates (pps):     transfer=%" PRIu64 ", dirty=%" PRIu64 "\r\n",
                   field(ram, "pages-per-second"), field(ram, "dirty-pages-rate"));
        hmp_printf(out, "  Others:               dirty_syncs=%" PRIu64 ", sync_time=%" PRIu64
                   " ms\r\n", field(ram, "dirty-sync-count"), field(ram, "dirty-sync-time"));
        json_t *sync = json_object_get(ram, "last-dirty-sync");
        hmp_printf(out, "  Last sync (us):       total=%" PRIu64 ", fetch=%" PRIu64 ", merge=%"
                   PRIu64 ", device=%" PRIu64 "\r\n", field(sync, "total"), field(sync, "fetch"),
                   field(sync, "merge"), field(sync, "device"));
    }
    if (ram && json_object_get(ram, "postcopy-requests"))
        hmp_postcopy(out, info, ram);
    if (json_object_get(info, "convergence"))
        hmp_printf(out, "Convergence:            %s\r\n", json_string_value(json_object_get(
                   json_object_get(info, "convergence"), "reason")));
    if (device)
        hmp_printf(out, "Device state:           transferred=%s, precopy pending=%s, "
                   "stop-copy pending=%s\r\n",
                   human(field(device, "transferred"), a, sizeof(a)),
                   human(field(device, "precopy-pending"), b, sizeof(b)),
                   human(field(device, "stopcopy-pending"), c, sizeof(c)));
    json_t *rdma = json_object_get(info, "rdma");
    if (rdma)
        hmp_printf(out, "RDMA:                   chunk=%s, registrations=%" PRIu64 ", writes=%"
                   PRIu64 ", completions waited=%" PRIu64 ", zero chunks=%" PRIu64 "\r\n",
                   human(field(rdma, "chunk-size"), a, sizeof(a)), field(rdma, "registrations"),
                   field(rdma, "writes-posted"), field(rdma, "completions-waited"),
                   field(rdma, "zero-chunks-skipped"));
    if (json_object_get(info, "dirty-limit-throttle-time-per-round"))
        hmp_printf(out, "Dirty-limit:            throttle per round=%" PRIu64 " us, ring full "
                   "time=%" PRIu64 " us\r\n", field(info, "dirty-limit-throttle-time-per-round"),
                   field(info, "dirty-limit-ring-full-time"));
    json_t *tls = json_object_get(info, "tls");
    if (tls)
        hmp_printf(out, "TLS:                    %s %s, %s\r\n",
                   json_string_value(json_object_get(tls, "protocol")),
                   json_string_value(json_object_get(tls, "cipher")),
                   json_is_true(json_object_get(tls, "ktls")) ? "kTLS" : "GnuTLS in user space");
    if (json_object_get(info, "error-desc"))
        hmp_printf(out, "Error: %s\r\n", json_string_value(json_object_get(info, "error-desc")));
    json_decref(info);
    return 0;
}

