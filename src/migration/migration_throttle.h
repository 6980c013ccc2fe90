/* When and how hard to slow down a guest that dirties memory faster than
 * its migration sends it (QEMU's auto-converge), in two halves kept apart
 * so that another way of slowing the guest (dirty-limit) can take the
 * first and leave the second:
 *  - the trigger, at every dirty-bitmap sync of a precopy pass: the bytes
 *    the guest dirtied in the period against the bytes sent in it. A period
 *    lasts from one evaluation to the next, a second at least (QEMU's). One
 *    in which the dirtied bytes pass throttle-trigger-threshold % of those
 *    sent counts; at the second that counts (in a row or not, as QEMU's),
 *    the trigger says "throttle now" and counts again from none;
 *  - the cpu throttle's step: cpu-throttle-initial the first time, then
 *    cpu-throttle-increment more each time (with cpu-throttle-tailslow, no
 *    more than what would bring the period's dirtied bytes down to the
 *    threshold), never above max-cpu-throttle.
 * The migration thread owns its trigger; nothing here takes a lock but the
 * migration's, to read the parameters. */
#ifndef GODWIT_MIGRATION_THROTTLE_H
#define GODWIT_MIGRATION_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

#define THROTTLE_PERIOD_MIN_US 1000000   /* QEMU evaluates at most once a second */
#define THROTTLE_HIGH_PERIODS 2          /* periods over the threshold before a step */
#define CPU_THROTTLE_MAX 99              /* QEMU's CPU_THROTTLE_PCT_MAX */

struct throttle_trigger {
    uint64_t period_start_us;
    uint64_t transferred_at_start;   /* the migration's transferred bytes then */
    uint64_t dirty_bytes;            /* newly dirtied at this period's syncs */
    unsigned high_periods;           /* over the threshold since the last step */
};

/* The period that made the trigger fire, for tailslow. */
struct throttle_period {
    uint64_t dirty_bytes;            /* dirtied in it */
    uint64_t threshold_bytes;        /* threshold % of the bytes sent in it */
};

/* A migration starts tracking dirty pages: the first period begins. */
void throttle_trigger_start(struct throttle_trigger *trigger, uint64_t now_us,
                            uint64_t transferred);
/* A sync found newly_dirty_bytes that were not dirty before it. Returns
 * true when the guest should be slowed down further now, with the period
 * that decided it in *period. */
bool throttle_trigger_sync(struct throttle_trigger *trigger, uint64_t now_us,
                           uint64_t transferred, uint64_t newly_dirty_bytes,
                           unsigned threshold_percent, struct throttle_period *period);

struct cpu_throttle_params {
    unsigned initial, increment, max;   /* percent */
    bool tailslow;
};

/* The next cpu throttle percentage from `current` (0: not throttling). */
unsigned cpu_throttle_step(unsigned current, const struct cpu_throttle_params *params,
                           const struct throttle_period *period);

struct migration;

/* The source's migration thread, after each precopy sync: feeds the
 * trigger and, when it fires with auto-converge on, asks the VMM for the
 * next step (migration_host.set_cpu_throttle). Returns whether it fired:
 * with dirty-limit on instead, that starts the limit
 * (migration_dirty_limit.c). */
bool migration_throttle_sync(struct migration *migration, struct throttle_trigger *trigger,
                             uint64_t newly_dirty_bytes);
/* The migration ended (completed, failed or cancelled): the guest gets its
 * full speed back. */
void migration_throttle_end(struct migration *migration);

#endif
