/* The downtime estimate (migration_estimate.c): how long the switchover
 * will keep the guest stopped, part by part (struct downtime_estimate). */
#ifndef GODWIT_MIGRATION_ESTIMATE_H
#define GODWIT_MIGRATION_ESTIMATE_H

#include "migration_internal.h"

/* What the channels hold that the destination has not taken yet (bytes). */
uint64_t migration_in_flight_bytes(struct migration *migration);
/* After a pass: the link's rate from what crossed it (stats->link_bandwidth). */
void migration_measure_link(struct migration_stats *stats, uint64_t written,
                            uint64_t in_flight_after, uint64_t paced_us, uint64_t sent_us);
/* avail-switchover-bandwidth, or the link's rate; bytes/s, never 0. */
uint64_t migration_switchover_bandwidth(struct migration *migration);
/* Fills *estimate and returns its total in us, at most 2^62. remaining:
 * dirty RAM and device stop-copy bytes; device_us: the devices' own time
 * on theirs; stop_cost_us, start_cost_us: the VMM's stop and start of
 * the guest, timed at setup. */
uint64_t migration_estimate_downtime(struct migration *migration,
                                     struct downtime_estimate *estimate, uint64_t remaining,
                                     uint64_t device_us, uint64_t stop_cost_us,
                                     uint64_t start_cost_us);

/* The part of the estimate that more passes can shrink: the bytes left
 * and the devices' time on theirs. The rest (a stop, a sync, round trips,
 * what the link still holds) every switchover pays. */
static inline uint64_t downtime_left_to_send_us(const struct downtime_estimate *estimate)
{
    return estimate->parts[ESTIMATE_TRANSFER] + estimate->parts[ESTIMATE_DEVICE];
}

#endif
