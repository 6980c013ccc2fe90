/* Auto-converge (migration_throttle.h): the trigger, the cpu throttle's
 * steps, and the source's use of both. Never touches the guest itself: the
 * VMM slows its vCPUs through migration_host.set_cpu_throttle. */
#include "migration_throttle.h"

#include "migration_internal.h"

static void start_period(struct throttle_trigger *trigger, uint64_t now_us, uint64_t transferred)
{
    trigger->period_start_us = now_us;
    trigger->transferred_at_start = transferred;
    trigger->dirty_bytes = 0;
}

void throttle_trigger_start(struct throttle_trigger *trigger, uint64_t now_us,
                            uint64_t transferred)
{
    trigger->high_periods = 0;
    start_period(trigger, now_us, transferred);
}

bool throttle_trigger_sync(struct throttle_trigger *trigger, uint64_t now_us,
                           uint64_t transferred, uint64_t newly_dirty_bytes,
                           unsigned threshold_percent, struct throttle_period *period)
{
    uint64_t sent;

    trigger->dirty_bytes += newly_dirty_bytes;
    if (now_us < trigger->period_start_us + THROTTLE_PERIOD_MIN_US)
        return false;   /* the period goes on: its syncs add up */
    sent = transferred - trigger->transferred_at_start;
    *period = (struct throttle_period){
        .dirty_bytes = trigger->dirty_bytes,
        /* in two steps: sent * threshold would overflow past 2^57 bytes */
        .threshold_bytes = sent / 100 * threshold_percent + sent % 100 * threshold_percent / 100,
    };
    start_period(trigger, now_us, transferred);
    if (period->dirty_bytes <= period->threshold_bytes ||
        ++trigger->high_periods < THROTTLE_HIGH_PERIODS)
        return false;
    trigger->high_periods = 0;
    return true;
}

/* tailslow: the share of time the guest runs now, scaled by how far the
 * period's dirtied bytes were over the threshold, is the share that would
 * have met it; the step goes no further than that (at least 1: the
 * dirtied bytes were over). */
static unsigned tailslow_increment(unsigned current, unsigned increment,
                                   const struct throttle_period *period)
{
    unsigned running = 100 - current;
    double ideal = (double)running * (double)period->threshold_bytes /
                   (double)period->dirty_bytes;
    unsigned needed = running - (unsigned)ideal;

    return needed < increment ? needed : increment;
}

unsigned cpu_throttle_step(unsigned current, const struct cpu_throttle_params *params,
                           const struct throttle_period *period)
{
    unsigned next;

    if (current == 0)
        next = params->initial;
    else
        next = current + (params->tailslow ? tailslow_increment(current, params->increment, period)
                                           : params->increment);
    if (next > params->max)
        next = params->max;
    return next > CPU_THROTTLE_MAX ? CPU_THROTTLE_MAX : next;
}

/* auto-converge's answer to the trigger: one step of the cpu throttle. */
static void cpu_throttle_up(struct migration *migration, const struct cpu_throttle_params *params,
                            const struct throttle_period *period)
{
    struct migration_stats *stats = &migration->stats;
    unsigned current = (unsigned)atomic_load(&stats->cpu_throttle_percentage);
    unsigned next = cpu_throttle_step(current, params, period);

    if (next == current || !migration->host.set_cpu_throttle)
        return;
    migration->host.set_cpu_throttle(migration->host.opaque, next);
    atomic_store(&stats->cpu_throttle_percentage, next);
}

bool migration_throttle_sync(struct migration *migration, struct throttle_trigger *trigger,
                             uint64_t newly_dirty_bytes)
{
    struct cpu_throttle_params params;
    struct throttle_period period;
    unsigned threshold;
    bool auto_converge;

    pthread_mutex_lock(&migration->lock);
    auto_converge = migration->cap_auto_converge;
    threshold = (unsigned)migration->params.throttle_trigger_threshold;
    params = (struct cpu_throttle_params){
        .initial = (unsigned)migration->params.cpu_throttle_initial,
        .increment = (unsigned)migration->params.cpu_throttle_increment,
        .max = (unsigned)migration->params.max_cpu_throttle,
        .tailslow = migration->params.cpu_throttle_tailslow != 0,
    };
    pthread_mutex_unlock(&migration->lock);
    if (!throttle_trigger_sync(trigger, migration_now_us(),
                               atomic_load(&migration->stats.transferred), newly_dirty_bytes,
                               threshold, &period))
        return false;
    /* Throttle now: each way of slowing the guest that is on takes it
     * (dirty-limit: migration_dirty_limit.c, from what this returns). */
    if (auto_converge)
        cpu_throttle_up(migration, &params, &period);
    return true;
}

void migration_throttle_end(struct migration *migration)
{
    if (atomic_exchange(&migration->stats.cpu_throttle_percentage, 0) &&
        migration->host.set_cpu_throttle)
        migration->host.set_cpu_throttle(migration->host.opaque, 0);
}
