/* Dirty-limit, QEMU's per-vCPU dirty page rate limit (QEMU 8.1+): a vCPU
 * that dirties faster than its quota sleeps where KVM stops it anyway, when
 * its dirty ring fills, long enough to keep to the quota; a vCPU that does
 * not dirty never sleeps. Set by QMP set-vcpu-dirty-limit, or by the
 * migration engine (the dirty-limit capability) through migration_host.
 * Needs the dirty ring: while a quota is set the ring's logging stays on.
 *
 * Rates are QEMU's "MB/s", which QEMU computes in MiB (2^20 bytes) per
 * second; so do we. Threads: quotas change on the monitor or migration
 * thread; each vCPU thread charges and sleeps for its own vCPU; the
 * reaper's tick measures rates. All of it under lock. */
#ifndef GODWIT_VM_DIRTY_LIMIT_H
#define GODWIT_VM_DIRTY_LIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <godwit/error.h>

#include "dirty_ring.h"

/* QEMU's period when no migration sets x-vcpu-dirty-limit-period. */
#define DIRTY_LIMIT_PERIOD_DEFAULT_MS 1000

struct vcpu_dirty_limit {
    uint64_t quota;           /* MB/s; 0: not limited */
    /* The quota as a token bucket: bytes it may still dirty (negative:
     * owed), topped up at the quota's rate, to at most a period's worth. */
    double tokens;
    uint64_t refilled_us;
    uint64_t charged;         /* pages of its ring already charged */
    uint64_t round_sleep_us;  /* what its last ring-full cost it */
    uint64_t resumed_us;      /* when it last paid off what it owed (0: not since) */
    uint64_t ring_full_us;    /* from then to its next ring-full: how long it runs free */
    /* Its rate over the last period: pages taken from its ring. */
    uint64_t period_start_us, period_start_pages;
    uint64_t current_rate;    /* MB/s */
};

struct dirty_limit {
    struct dirty_ring *ring;
    /* How a vCPU whose ring the reaper took at its fill limit is told to
     * pay (the VMM kicks it out of the guest to sleep: vcpu.c). */
    void (*request_throttle)(void *opaque, unsigned cpu);
    void *opaque;
    unsigned nr_vcpus;
    pthread_mutex_t set_lock;     /* one quota change at a time, ring use included */
    pthread_mutex_t lock;         /* the fields below */
    struct vcpu_dirty_limit *vcpus;
    uint64_t period_ms;
    bool in_service;          /* some vCPU has a quota: the ring's logging is ours */
    bool by_migration;        /* the engine set it: QMP may not change it meanwhile */
};

int dirty_limit_init(struct dirty_limit *limit, struct dirty_ring *ring, unsigned nr_vcpus,
                     void (*request_throttle)(void *opaque, unsigned cpu), void *opaque,
                     struct gw_error *err);
void dirty_limit_cleanup(struct dirty_limit *limit);

/* Quota mb_per_s for vCPU cpu (-1: every vCPU), rates measured over
 * period_ms; 0 cancels. by_migration marks (or, for a cancel, ends) the
 * engine's hold; a QMP change while the engine holds it is refused. */
int dirty_limit_set(struct dirty_limit *limit, int cpu, uint64_t mb_per_s, uint64_t period_ms,
                    bool by_migration, struct gw_error *err);

/* vCPU cpu's ring filled and was harvested: charges what it dirtied and
 * returns how long it owes, in us (0 if it keeps to its quota or has none). */
uint64_t dirty_limit_charge(struct dirty_limit *limit, unsigned cpu);
/* What it still owes now, for a sleep taken in slices. */
uint64_t dirty_limit_owed_us(struct dirty_limit *limit, unsigned cpu);

/* QEMU's query-migrate figures, in us: the longest sleep per ring-full of a
 * limited vCPU (its last), and the average time the limited vCPUs last ran
 * between paying and filling their ring again (to its fill limit, half the
 * ring: dirty_ring_reaper.c). */
void dirty_limit_stats(struct dirty_limit *limit, uint64_t *throttle_us_per_round,
                       uint64_t *ring_full_us);

/* query-vcpu-dirty-limit's list: {cpu-index, limit-rate, current-rate} of
 * each limited vCPU. */
json_t *dirty_limit_query(struct dirty_limit *limit);

#endif
