/* The source's side of QEMU's dirty-limit capability. As QEMU 8.1+: when
 * the throttle trigger fires (migration_throttle.c: the guest dirtied more
 * than throttle-trigger-threshold % of what was sent, in two periods), the
 * host limits every vCPU to vcpu-dirty-limit MB/s, measured over
 * x-vcpu-dirty-limit-period; the limit stays until the migration ends,
 * completed, failed or cancelled, and the guest then runs at full speed
 * again. Unlike QEMU, which applies a changed vcpu-dirty-limit only when the
 * trigger fires again, a change of either parameter reaches the host at the
 * next sync. Runs on the migration thread. */
#include "migration_internal.h"

void migration_dirty_limit_begin(struct migration *migration, struct dirty_limit_control *control)
{
    pthread_mutex_lock(&migration->lock);
    *control = (struct dirty_limit_control){
        .enabled = migration->cap_dirty_limit && migration->host.dirty_limit_start,
    };
    pthread_mutex_unlock(&migration->lock);
}

int migration_dirty_limit_after_sync(struct migration *migration,
                                     struct dirty_limit_control *control, bool fired,
                                     struct gw_error *err)
{
    uint64_t rate, period_ms;
    int rc;

    if (!control->enabled)
        return 0;
    pthread_mutex_lock(&migration->lock);
    rate = migration->params.vcpu_dirty_limit;
    period_ms = migration->params.vcpu_dirty_limit_period;
    pthread_mutex_unlock(&migration->lock);
    if (!(fired && !control->active) &&
        !(control->active && (rate != control->rate || period_ms != control->period_ms)))
        return 0;
    rc = migration->host.dirty_limit_start(migration->host.opaque, rate, period_ms, err);
    if (rc < 0) {
        gw_error_prefix(err, "cannot limit the guest's dirty page rate (dirty-limit)");
        return rc;
    }
    control->active = true;
    control->rate = rate;
    control->period_ms = period_ms;
    atomic_store(&migration->stats.dirty_limit_on, true);
    return 0;
}

void migration_dirty_limit_end(struct migration *migration, struct dirty_limit_control *control)
{
    if (!control->active)
        return;
    migration->host.dirty_limit_stop(migration->host.opaque);
    control->active = false;
    atomic_store(&migration->stats.dirty_limit_on, false);
}
