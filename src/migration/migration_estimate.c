/* The downtime estimate (query-migrate's expected-downtime and
 * downtime-detail.expected): the link's rate measured from each pass, what
 * the channels still hold, and the estimate made of them and of the
 * switchover's steps that move no bytes. The migration thread's; the
 * parameters are read under the migration's lock. */
#include "migration_estimate.h"

/* The least a pass must move across the link to measure its rate. */
#define LINK_MEASURE_MIN (8ULL << 20)

/* What the channels hold that the destination has not taken yet: the
 * switchover must wait for it to cross before the destination can answer. */
uint64_t migration_in_flight_bytes(struct migration *migration)
{
    uint64_t bytes;

    pthread_mutex_lock(&migration->lock);
    bytes = channel_unsent_bytes(&migration->channel);
    for (unsigned i = 0; migration->multifd_channels && i < migration->nr_multifd_channels; i++)
        bytes += channel_unsent_bytes(&migration->multifd_channels[i]);
    pthread_mutex_unlock(&migration->lock);
    return bytes;
}

/* The switchover's bandwidth, from a pass: what crossed the link (the
 * bytes written, less what the socket buffers and a slow link's queue
 * still held at the end beyond what they held at the start: a pass that
 * fits in them would read as memory speed) over the time max-bandwidth's
 * pacing did not hold the lanes back. Below 8 MiB crossed, the rate says
 * more about latency, or about a burst a link's buffers let through at
 * once after a pause, and only stands in for none. */
void migration_measure_link(struct migration_stats *stats, uint64_t written,
                            uint64_t in_flight_after, uint64_t paced_us, uint64_t sent_us)
{
    uint64_t crossed = written > in_flight_after ? written - in_flight_after : 0;
    uint64_t unpaced_us = paced_us < sent_us ? sent_us - paced_us : 1;

    if (crossed >= LINK_MEASURE_MIN || (crossed && !atomic_load(&stats->link_bandwidth)))
        atomic_store(&stats->link_bandwidth, crossed * 1000000 / unpaced_us);
}

/* avail-switchover-bandwidth, or the rate the last pass moved its bytes
 * at when max-bandwidth's pacing did not hold it back: the stop-copy phase
 * is never paced, so the paced rate would foretell a downtime several
 * times too long (seed 001's formula assumes it; QEMU added
 * avail-switchover-bandwidth for users to correct it by hand). */
uint64_t migration_switchover_bandwidth(struct migration *migration)
{
    uint64_t bandwidth;

    pthread_mutex_lock(&migration->lock);
    bandwidth = migration->params.avail_switchover_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!bandwidth)
        bandwidth = atomic_load(&migration->stats.link_bandwidth);
    return bandwidth ? bandwidth : 1;   /* nothing measured yet: expect the worst */
}

/* Seed 004's estimate, (dirty RAM + device stop-copy bytes) over the
 * switchover bandwidth. A bandwidth measured on RAM passes gets the
 * devices' own time on their state added: a device saves it while the
 * guest is stopped (a copy out of the device, a read from a driver), each
 * piece before it goes out, and the destination loads it, at rates of
 * their own that RAM's bandwidth says nothing about (issue 11: 400 MiB of
 * accel state took twice what RAM's rate foretold). avail-switchover-
 * bandwidth is the user's word for how fast the switchover moves its
 * bytes, device state included (seed 004): taken as it is.
 * The switchover's steps that move no bytes cost time too, and at small
 * downtimes they are most of it: the final sync (as long as the last one),
 * the VMM's time to stop the guest, which it timed at setup, and two waits
 * for the destination: for READY after END, what the channels still hold
 * (on a slow link megabytes queued) at the switchover bandwidth and a
 * round trip; for RUNNING after GO, a round trip (the main channel's
 * shortest, as TCP measured it: queues make the others longer) and the
 * guest's start, as long as the VMM took to start it here at setup. */
uint64_t migration_estimate_downtime(struct migration *migration,
                                     struct downtime_estimate *estimate, uint64_t remaining,
                                     uint64_t device_us, uint64_t stop_cost_us,
                                     uint64_t start_cost_us)
{
    struct migration_stats *stats = &migration->stats;
    uint64_t avail;

    pthread_mutex_lock(&migration->lock);
    avail = migration->params.avail_switchover_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    estimate->bytes = remaining;
    estimate->bandwidth = migration_switchover_bandwidth(migration);
    double transfer = (double)remaining * 1e6 / (double)estimate->bandwidth;
    /* Past 2^62 us (146000 years) it is "never"; a cast beyond 2^64 would be
     * undefined and the ms rounding after it would wrap. */
    estimate->parts[ESTIMATE_TRANSFER] = transfer >= 0x1p62 ? 1ULL << 62 : (uint64_t)transfer;
    estimate->parts[ESTIMATE_DEVICE] = avail ? 0 : device_us;
    estimate->parts[ESTIMATE_SYNC] = atomic_load(&stats->last_sync_us);
    estimate->parts[ESTIMATE_STOP] = stop_cost_us;
    uint64_t round_trip = channel_round_trip_us(&migration->channel);
    double drain = (double)migration_in_flight_bytes(migration) * 1e6 / (double)estimate->bandwidth;
    estimate->parts[ESTIMATE_READY] = (drain >= 0x1p61 ? 1ULL << 61 : (uint64_t)drain) + round_trip;
    estimate->parts[ESTIMATE_RUNNING] = round_trip + start_cost_us;
    uint64_t us = 0;
    for (int part = 0; part < ESTIMATE_PARTS; part++)
        us = us + estimate->parts[part] < us ? UINT64_MAX : us + estimate->parts[part];
    return us > 1ULL << 62 ? 1ULL << 62 : us;
}
