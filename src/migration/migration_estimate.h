/* The downtime estimate (migration_estimate.c): how long the switchover
 * will keep the guest stopped, part by part (struct downtime_estimate). */
#ifndef GODWIT_MIGRATION_ESTIMATE_H
#define GODWIT_MIGRATION_ESTIMATE_H

#include "migration_internal.h"
#include "vmstate/vmstate_internal.h"

/* What the channels hold that the destination has not taken yet (bytes). */
uint64_t migration_in_flight_bytes(struct migration *migration);
/* After a pass: the link's rate from what crossed it (stats->link_bandwidth). */
void migration_measure_link(struct migration_stats *stats, uint64_t written,
                            uint64_t in_flight_after, uint64_t paced_us, uint64_t sent_us);
/* avail-switchover-bandwidth, or the link's rate; bytes/s, never 0. */
uint64_t migration_switchover_bandwidth(struct migration *migration);
/* The CPUs this process may run on: the stages of the switchover share
 * them (and the destination is taken to have as many). At least 1. */
unsigned migration_host_cores(void);

/* Device state that travels one way in the switchover, as a pipeline of
 * pieces: the devices save each piece (the migration thread), lanes carry
 * it, the destination's load thread loads it. */
struct device_pipeline {
    uint64_t bytes;
    uint64_t save_us, load_us;   /* the devices' time on all of the bytes */
    unsigned lanes;              /* lanes the pieces are spread over; the main channel: 1 */
    unsigned measured_lanes;     /* lanes the link's rate was measured over */
    unsigned cores;              /* CPUs the stages share */
    uint64_t bandwidth;          /* the link's bytes/s, all lanes together */
};
/* How long the pipeline keeps the guest stopped (us, at most 2^62):
 * migration_estimate.c says how it is reckoned. */
uint64_t device_pipeline_us(const struct device_pipeline *pipeline);

/* What the estimate is made of: the dirty RAM left, the devices' pending
 * state (vmstate_pending), the VMM's stop and start of the guest timed at
 * setup, and the CPUs the switchover's stages share. */
struct estimate_input {
    uint64_t ram_bytes;
    const struct device_pending *devices;
    uint64_t stop_cost_us, start_cost_us;
    unsigned cores;
};
/* Fills *estimate and returns its total in us, at most 2^62. */
uint64_t migration_estimate_downtime(struct migration *migration,
                                     struct downtime_estimate *estimate,
                                     const struct estimate_input *input);

/* The part of the estimate that more passes can shrink: the bytes left
 * and the devices' time on theirs. The rest (a stop, a sync, round trips,
 * what the link still holds) every switchover pays. */
static inline uint64_t downtime_left_to_send_us(const struct downtime_estimate *estimate)
{
    return estimate->parts[ESTIMATE_TRANSFER] + estimate->parts[ESTIMATE_DEVICE];
}

#endif
