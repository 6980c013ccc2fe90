/* The downtime estimate (query-migrate's expected-downtime and
 * downtime-detail.expected): the link's rate measured from each pass, what
 * the channels still hold, and the estimate made of them and of the
 * switchover's steps that move no bytes. The migration thread's; the
 * parameters are read under the migration's lock. */
#include "migration_estimate.h"

#include "util/capped_us.h"

#include <sched.h>
#include <unistd.h>

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

unsigned migration_host_cores(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (unsigned)online : 1;
}

/* Device state in the switchover is a pipeline of pieces (16 MiB at most:
 * save_piece's, or a whole state cut into buffers): the migration thread
 * saves a piece and hands it to a lane (the main channel, or a multifd
 * channel's thread, which sends it while the next is saved), the
 * destination's load thread loads each piece as it arrives. A pipeline
 * takes as long as its slowest stage, plus one piece through the others
 * (the first piece is saved before any is sent, the last loaded after it
 * arrived), not the sum of its stages. Its stages:
 *  - save: the devices' time on their state, as timed here;
 *  - the lanes: each carries its share of the pieces at the rate one lane
 *    moved RAM at (the link's rate measured over measured_lanes lanes, a
 *    share each): one lane carries all of it at that one lane's rate, and
 *    more lanes than were measured never beat the link itself. That is
 *    multifd's premise, a lane held back by its own threads; on a link
 *    that one lane alone would fill, state on fewer lanes than RAM had
 *    crosses faster, and this errs high;
 *  - load: the destination's time, which it does not report before the
 *    switchover: taken to be the save's (the same bytes, copied once more).
 * The stages also share the CPUs (cores, and as many on the destination):
 * moving the bytes takes the link's time with all the CPUs the measured
 * lanes used (on a loopback, all of them), and the save and the load add
 * their work, spread over the cores but for the first piece's save and
 * the last one's load, which nothing runs beside. The pipeline beats
 * neither bound: it takes the longer. Where the link, not the CPUs, held
 * RAM back, the second errs high by at most (save + load) / cores; on one
 * core it is the sum of the three.
 * Seen on 2 cores (issue 11, docs/benchmarks.md): one lane carries 400 MiB
 * at half the rate of the two RAM lanes, whatever saves and loads beside
 * it; two lanes are held to the CPUs' share. The sum of the stages, the
 * estimate before, foretold the same for both, 1.12 to 1.28 times what two
 * lanes took. */
uint64_t device_pipeline_us(const struct device_pipeline *pipeline)
{
    if (!pipeline->bytes)
        return 0;
    double bandwidth = pipeline->bandwidth ? (double)pipeline->bandwidth : 1;
    double lanes = pipeline->lanes ? pipeline->lanes : 1;
    double measured = pipeline->measured_lanes ? pipeline->measured_lanes : 1;
    double cores = pipeline->cores ? pipeline->cores : 1;
    double save = (double)pipeline->save_us, load = (double)pipeline->load_us;
    double wire = (double)pipeline->bytes * 1e6 / bandwidth;
    double lane = lanes < measured ? wire * measured / lanes : wire;
    double slowest = save > lane ? save : lane;
    slowest = load > slowest ? load : slowest;
    double piece = (double)DEVICE_BUFFER_MAX / (double)pipeline->bytes;
    piece = piece < 1 ? piece : 1;
    double fill = (save + lane + load - slowest) * piece;
    /* the first piece's save and the last one's load run alone */
    double alone = (save + load) * piece;
    double shared = alone + (save + load - alone) / cores + wire;
    return capped_us(slowest + fill > shared ? slowest + fill : shared);
}

/* The lanes device state takes (seed 002): with multifd and its channel
 * headers, the devices that take multifd go on the dedicated device-state
 * channels, or where there are none mixed into the RAM channels (a device
 * saving in pieces keeps at most VMSTATE_PIECES_IN_FLIGHT on them at
 * once); everything else on the main channel. RAM's rate was measured over
 * the RAM channels, or the main channel alone. The multifd devices'
 * state is sent first, then the main channel's: their times add up. */
static uint64_t device_part_us(const struct migration *migration,
                               const struct estimate_input *input, uint64_t bandwidth,
                               struct downtime_estimate *estimate)
{
    const struct migration_config *config = &migration->config;
    struct device_route main = input->devices->main, multifd = input->devices->multifd;
    unsigned measured = config->multifd && config->channels ? config->channels : 1;
    unsigned lanes = config->device_channels ? config->device_channels : config->channels;

    if (!config->multifd || !config->channel_header) {
        main.bytes += multifd.bytes;
        main.save_us += multifd.save_us;
        multifd = (struct device_route){ 0 };
    }
    if (multifd.pieces && lanes > VMSTATE_PIECES_IN_FLIGHT)
        lanes = VMSTATE_PIECES_IN_FLIGHT;
    struct device_pipeline on_lanes = {
        .bytes = multifd.bytes, .save_us = multifd.save_us, .load_us = multifd.save_us,
        .lanes = lanes, .measured_lanes = measured, .cores = input->cores,
        .bandwidth = bandwidth,
    };
    struct device_pipeline on_main = on_lanes;
    on_main.bytes = main.bytes;
    on_main.save_us = on_main.load_us = main.save_us;
    on_main.lanes = 1;
    estimate->device_save_us = main.save_us + multifd.save_us;
    estimate->device_lanes = multifd.bytes ? lanes : main.bytes ? 1 : 0;
    estimate->cores = input->cores;
    double us = (double)device_pipeline_us(&on_lanes) + (double)device_pipeline_us(&on_main);
    return capped_us(us);
}

/* Seed 004's estimate, (dirty RAM + device stop-copy bytes) over the
 * switchover bandwidth, with the device state reckoned as the pipeline it
 * is (device_pipeline_us): a device saves its state while the guest is
 * stopped (a copy out of the device, a read from a driver), each piece
 * before it goes out, and the destination loads it, at rates of their own
 * that RAM's bandwidth says nothing about (issue 11: 400 MiB of accel
 * state took twice what RAM's rate foretold). avail-switchover-bandwidth
 * is the user's word for how fast the switchover moves its bytes, device
 * state included (seed 004): taken as it is, with no device part.
 * The switchover's steps that move no bytes cost time too, and at small
 * downtimes they are most of it: the final sync (as long as the last one),
 * the VMM's time to stop the guest, which it timed at setup, and two waits
 * for the destination: for READY after END, what the channels still hold
 * (on a slow link megabytes queued) at the switchover bandwidth and a
 * round trip; for RUNNING after GO, a round trip (the main channel's
 * shortest, as TCP measured it: queues make the others longer) and the
 * guest's start, as long as the VMM took to start it here at setup. */
uint64_t migration_estimate_downtime(struct migration *migration,
                                     struct downtime_estimate *estimate,
                                     const struct estimate_input *input)
{
    struct migration_stats *stats = &migration->stats;
    uint64_t avail;

    pthread_mutex_lock(&migration->lock);
    avail = migration->params.avail_switchover_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    *estimate = (struct downtime_estimate){ 0 };
    estimate->bytes = input->ram_bytes + input->devices->stopcopy;
    estimate->bandwidth = migration_switchover_bandwidth(migration);
    uint64_t sent_at_bandwidth = avail ? estimate->bytes : input->ram_bytes;
    double transfer = (double)sent_at_bandwidth * 1e6 / (double)estimate->bandwidth;
    estimate->parts[ESTIMATE_TRANSFER] = capped_us(transfer);
    /* reckoned whatever the bandwidth, so downtime-detail says how */
    uint64_t device_us = device_part_us(migration, input, estimate->bandwidth, estimate);
    estimate->parts[ESTIMATE_DEVICE] = avail ? 0 : device_us;
    estimate->parts[ESTIMATE_SYNC] = atomic_load(&stats->last_sync_us);
    estimate->parts[ESTIMATE_STOP] = input->stop_cost_us;
    uint64_t round_trip = channel_round_trip_us(&migration->channel);
    double drain = (double)migration_in_flight_bytes(migration) * 1e6 / (double)estimate->bandwidth;
    estimate->parts[ESTIMATE_READY] = capped_us(drain) + round_trip;
    estimate->parts[ESTIMATE_RUNNING] = round_trip + input->start_cost_us;
    uint64_t us = 0;
    for (int part = 0; part < ESTIMATE_PARTS; part++)
        us = us + estimate->parts[part] < us ? UINT64_MAX : us + estimate->parts[part];
    return us > CAPPED_US_MAX ? CAPPED_US_MAX : us;
}
