/* Dirty-limit: per-vCPU quotas kept at ring-full. QEMU measures each vCPU's
 * rate and nudges a sleep per ring-full up or down until the rate fits;
 * here the quota is a token bucket charged with the pages each ring-full
 * harvest took, so the sleep is what the quota says it owes, from the
 * first ring-full on: with a quota of q MB/s, a vCPU that dirtied D bytes
 * sleeps until D bytes fit in q since it last slept, less a period's burst.
 * A limited vCPU's ring is left to fill: when it is half full the reaper
 * takes it and the vCPU is kicked out of the guest to pay, as at a
 * ring-full exit (dirty_ring_reaper.c says why half). */
#include "dirty_limit.h"
#include "clock.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "memory.h"

#define MB (1ULL << 20)


static double quota_bytes_per_us(const struct vcpu_dirty_limit *vcpu)
{
    return (double)vcpu->quota * (double)MB / 1e6;
}

/* Under lock: starts a new measuring period for cpu. */
static void start_period(struct dirty_limit *limit, unsigned cpu, uint64_t now)
{
    struct vcpu_dirty_limit *vcpu = &limit->vcpus[cpu];

    vcpu->period_start_us = now;
    vcpu->period_start_pages = dirty_ring_harvested(limit->ring, cpu);
}

/* The reaper's tick: each vCPU's rate over the period that ended. */
static void dirty_limit_tick(void *opaque)
{
    struct dirty_limit *limit = opaque;
    uint64_t now = monotonic_us();

    pthread_mutex_lock(&limit->lock);
    for (unsigned cpu = 0; cpu < limit->nr_vcpus; cpu++) {
        struct vcpu_dirty_limit *vcpu = &limit->vcpus[cpu];
        uint64_t elapsed = now - vcpu->period_start_us;
        if (elapsed < limit->period_ms * 1000)
            continue;
        uint64_t pages = dirty_ring_harvested(limit->ring, cpu) - vcpu->period_start_pages;
        vcpu->current_rate = (uint64_t)((double)pages * MEMORY_PAGE_SIZE * 1e6 /
                                        (double)elapsed / (double)MB);
        start_period(limit, cpu, now);
    }
    pthread_mutex_unlock(&limit->lock);
}

/* The reaper took a limited vCPU's ring at its fill limit: as a ring-full
 * exit would, the vCPU is to pay for what it dirtied. */
static void dirty_limit_filled(void *opaque, unsigned cpu)
{
    struct dirty_limit *limit = opaque;

    if (limit->request_throttle)
        limit->request_throttle(limit->opaque, cpu);
}

int dirty_limit_init(struct dirty_limit *limit, struct dirty_ring *ring, unsigned nr_vcpus,
                     void (*request_throttle)(void *opaque, unsigned cpu), void *opaque,
                     struct gw_error *err)
{
    *limit = (struct dirty_limit){ .ring = ring, .nr_vcpus = nr_vcpus,
                                   .request_throttle = request_throttle, .opaque = opaque,
                                   .period_ms = DIRTY_LIMIT_PERIOD_DEFAULT_MS };
    pthread_mutex_init(&limit->lock, NULL);
    pthread_mutex_init(&limit->set_lock, NULL);
    limit->vcpus = calloc(nr_vcpus ? nr_vcpus : 1, sizeof(*limit->vcpus));
    if (!limit->vcpus)
        return gw_error_set(err, -ENOMEM, "out of memory for the dirty limits");
    if (dirty_ring_enabled(ring)) {
        ring->hooks = (struct dirty_ring_hooks){ .tick = dirty_limit_tick,
                                                 .filled = dirty_limit_filled, .opaque = limit };
    }
    return 0;
}

void dirty_limit_cleanup(struct dirty_limit *limit)
{
    if (!limit->vcpus)
        return;
    free(limit->vcpus);
    limit->vcpus = NULL;
    pthread_mutex_destroy(&limit->lock);
    pthread_mutex_destroy(&limit->set_lock);
}

/* Under lock: tokens topped up to now, to at most a period's worth. */
static void refill(struct dirty_limit *limit, struct vcpu_dirty_limit *vcpu, uint64_t now)
{
    double burst = quota_bytes_per_us(vcpu) * (double)limit->period_ms * 1000;

    vcpu->tokens += quota_bytes_per_us(vcpu) * (double)(now - vcpu->refilled_us);
    if (vcpu->tokens > burst)
        vcpu->tokens = burst;
    vcpu->refilled_us = now;
}

static uint64_t owed_locked(const struct vcpu_dirty_limit *vcpu)
{
    return vcpu->quota && vcpu->tokens < 0
               ? (uint64_t)(-vcpu->tokens / quota_bytes_per_us(vcpu)) : 0;
}

uint64_t dirty_limit_charge(struct dirty_limit *limit, unsigned cpu)
{
    struct vcpu_dirty_limit *vcpu;
    uint64_t owed = 0, pages;

    if (cpu >= limit->nr_vcpus)
        return 0;
    vcpu = &limit->vcpus[cpu];
    pthread_mutex_lock(&limit->lock);
    if (vcpu->quota) {
        uint64_t now = monotonic_us();
        refill(limit, vcpu, now);
        /* From its last sleep to this fill it ran free: its ring-full time. */
        if (vcpu->resumed_us)
            vcpu->ring_full_us = now - vcpu->resumed_us;
        vcpu->resumed_us = 0;
        pages = dirty_ring_harvested(limit->ring, cpu) - vcpu->charged;
        vcpu->charged += pages;
        vcpu->tokens -= (double)(pages * MEMORY_PAGE_SIZE);
        owed = owed_locked(vcpu);
        vcpu->round_sleep_us = owed;
        if (!owed)
            vcpu->resumed_us = now;
    }
    pthread_mutex_unlock(&limit->lock);
    return owed;
}

uint64_t dirty_limit_owed_us(struct dirty_limit *limit, unsigned cpu)
{
    uint64_t owed = 0, now = monotonic_us();

    if (cpu >= limit->nr_vcpus)
        return 0;
    pthread_mutex_lock(&limit->lock);
    if (limit->vcpus[cpu].quota) {
        refill(limit, &limit->vcpus[cpu], now);
        owed = owed_locked(&limit->vcpus[cpu]);
        if (!owed)
            limit->vcpus[cpu].resumed_us = now;
    }
    pthread_mutex_unlock(&limit->lock);
    return owed;
}

/* Under lock: one vCPU's quota; its bucket starts empty, and what it
 * dirtied before is not charged. */
static void set_vcpu(struct dirty_limit *limit, unsigned cpu, uint64_t mb_per_s, uint64_t now)
{
    struct vcpu_dirty_limit *vcpu = &limit->vcpus[cpu];

    if (mb_per_s && !vcpu->quota) {
        vcpu->tokens = 0;
        vcpu->refilled_us = now;
        vcpu->charged = dirty_ring_harvested(limit->ring, cpu);
    }
    vcpu->quota = mb_per_s;
    if (!mb_per_s)
        vcpu->round_sleep_us = vcpu->ring_full_us = vcpu->resumed_us = 0;
    if (cpu < limit->ring->nr_vcpus)
        atomic_store(&limit->ring->vcpus[cpu].fill_limit,
                     mb_per_s ? limit->ring->entries / 2 : 0);
}

/* Under lock: applies the quotas; returns whether any vCPU has one. */
static bool apply(struct dirty_limit *limit, int cpu, uint64_t mb_per_s, uint64_t period_ms)
{
    uint64_t now = monotonic_us();
    bool any = false;

    for (unsigned c = 0; c < limit->nr_vcpus; c++)
        if (cpu < 0 || (unsigned)cpu == c)
            set_vcpu(limit, c, mb_per_s, now);
    if (period_ms != limit->period_ms) {
        limit->period_ms = period_ms;
        for (unsigned c = 0; c < limit->nr_vcpus; c++)
            start_period(limit, c, now);
    }
    for (unsigned c = 0; c < limit->nr_vcpus; c++)
        any |= limit->vcpus[c].quota != 0;
    return any;
}

int dirty_limit_set(struct dirty_limit *limit, int cpu, uint64_t mb_per_s, uint64_t period_ms,
                    bool by_migration, struct gw_error *err)
{
    bool was, any;
    int rc = 0;

    if (!dirty_ring_enabled(limit->ring))
        return gw_error_set(err, -ENOTSUP, "a dirty page rate limit needs KVM's dirty ring; "
                            "start godwit-vm with --accel kvm,dirty-ring-size=N");
    if (cpu < -1 || (cpu >= 0 && (unsigned)cpu >= limit->nr_vcpus))
        return gw_error_set(err, -EINVAL, "cpu-index %d is not a vCPU of this VM; its vCPUs "
                            "are 0 to %u", cpu, limit->nr_vcpus - 1);
    pthread_mutex_lock(&limit->set_lock);
    pthread_mutex_lock(&limit->lock);
    if (limit->by_migration && !by_migration) {
        pthread_mutex_unlock(&limit->lock);
        pthread_mutex_unlock(&limit->set_lock);
        return gw_error_set(err, -EBUSY, "can't change the dirty page rate limit while a "
                            "migration with the dirty-limit capability holds it; its rate is "
                            "the parameter vcpu-dirty-limit");
    }
    was = limit->in_service;
    any = apply(limit, cpu, mb_per_s, period_ms);
    limit->in_service = any;
    limit->by_migration = any && by_migration;
    pthread_mutex_unlock(&limit->lock);
    /* The ring's lock is never taken under ours: its reaper calls our tick. */
    if (any != was)
        rc = dirty_ring_use(limit->ring, DIRTY_RING_USER_LIMIT, any, err);
    if (rc < 0 && any) {
        pthread_mutex_lock(&limit->lock);
        apply(limit, -1, 0, period_ms);
        limit->in_service = limit->by_migration = false;
        pthread_mutex_unlock(&limit->lock);
    }
    pthread_mutex_unlock(&limit->set_lock);
    return rc;
}

void dirty_limit_stats(struct dirty_limit *limit, uint64_t *throttle_us_per_round,
                       uint64_t *ring_full_us)
{
    uint64_t longest = 0, total = 0;
    unsigned dirtying = 0;

    pthread_mutex_lock(&limit->lock);
    for (unsigned c = 0; c < limit->nr_vcpus; c++) {
        const struct vcpu_dirty_limit *vcpu = &limit->vcpus[c];
        if (vcpu->quota && vcpu->round_sleep_us > longest)
            longest = vcpu->round_sleep_us;
        if (vcpu->ring_full_us) {
            total += vcpu->ring_full_us;
            dirtying++;
        }
    }
    pthread_mutex_unlock(&limit->lock);
    *throttle_us_per_round = longest;
    *ring_full_us = dirtying ? total / dirtying : 0;
}

json_t *dirty_limit_query(struct dirty_limit *limit)
{
    json_t *list = json_array();

    pthread_mutex_lock(&limit->lock);
    for (unsigned c = 0; c < limit->nr_vcpus; c++)
        if (limit->vcpus[c].quota)
            json_array_append_new(list, json_pack("{s:i,s:I,s:I}", "cpu-index", (int)c,
                                                  "limit-rate",
                                                  (json_int_t)limit->vcpus[c].quota,
                                                  "current-rate",
                                                  (json_int_t)limit->vcpus[c].current_rate));
    pthread_mutex_unlock(&limit->lock);
    return list;
}
