/* The dirty ring's reaper thread: harvests every ring often enough that a
 * steady writer rarely fills its ring, and gives dirty-limit its tick. It
 * owns only its interval; everything it touches is under the ring lock but
 * for the hooks, which dirty-limit guards itself.
 *
 * A vCPU under dirty-limit must meet its quota when its ring fills, so its
 * ring is left to fill; but not to KVM's soft limit. This host's KVM (PVM)
 * emulates up to a batch of 1024 guest instructions per exit and looks at
 * the soft limit only between batches, so a vCPU stopped there by KVM has
 * mostly run past the ring's end (dirty_ring.c counts every such overflow,
 * and the migration then resends all RAM). Half the ring leaves a batch room
 * on rings of 4096 entries and more: the reaper takes the ring there and
 * asks the vCPU to pay, the same as a ring-full exit would. */
#include "dirty_ring.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The reaper wakes at least this often while a user needs the rings, and
 * at most this often however fast the guest dirties. */
#define REAPER_MAX_INTERVAL_US 100000
#define REAPER_MIN_INTERVAL_US 500
/* While a vCPU is limited its ring must be seen between half full and
 * KVM's soft limit, though it refills from empty at full speed after each
 * sleep, faster than the interval adapts: a millisecond is an eighth of a
 * 4096-entry ring at this host's fastest test guest (about 230000 pages/s). */
#define REAPER_LIMITED_INTERVAL_US 1000

static void wait_interval(struct dirty_ring *ring, uint64_t interval_us)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)(interval_us % 1000000) * 1000;
    until.tv_sec += (time_t)(interval_us / 1000000) + until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&ring->reaper_wake, &ring->lock, &until);
}

/* Halves the interval when a ring came back more than an eighth full, so a
 * steady writer is caught well before KVM's soft limit; doubles it when
 * the rings were nearly empty. */
static uint64_t next_interval(const struct dirty_ring *ring, uint64_t interval_us,
                              uint32_t fullest)
{
    if (fullest > ring->entries / 8 && interval_us / 2 >= REAPER_MIN_INTERVAL_US)
        return interval_us / 2;
    if (fullest < ring->entries / 32 && interval_us * 2 <= REAPER_MAX_INTERVAL_US)
        return interval_us * 2;
    return interval_us;
}

static bool any_limited(struct dirty_ring *ring)
{
    for (unsigned v = 0; v < ring->nr_vcpus; v++)
        if (atomic_load(&ring->vcpus[v].fill_limit))
            return true;
    return false;
}

static void *reaper_thread(void *opaque)
{
    struct dirty_ring *ring = opaque;
    uint64_t interval_us = REAPER_MAX_INTERVAL_US;
    struct gw_error err = { 0 };
    bool reported = false;

    pthread_mutex_lock(&ring->lock);
    while (!ring->reaper_quit) {
        if (!ring->users) {
            pthread_cond_wait(&ring->reaper_wake, &ring->lock);
            /* Logging just started: a busy guest fills the rings at once. */
            interval_us = REAPER_MIN_INTERVAL_US;
            continue;
        }
        if (ring->reaper_hurry) {
            /* A vCPU met KVM's soft limit: this interval was too long. */
            interval_us = REAPER_MIN_INTERVAL_US;
            ring->reaper_hurry = false;
        }
        wait_interval(ring, interval_us);
        if (ring->reaper_quit || !ring->users)
            continue;
        uint32_t fullest = 0;
        uint64_t filled = 0;
        if (dirty_ring_reap_locked(ring, &fullest, &filled, &err) < 0 && !reported) {
            /* A vCPU's own ring-full harvest meets it too, and ends the VM. */
            fprintf(stderr, "godwit-vm: dirty ring reaper: %s\n", err.msg);
            reported = true;
        }
        interval_us = next_interval(ring, interval_us, fullest);
        if (any_limited(ring) && interval_us > REAPER_LIMITED_INTERVAL_US)
            interval_us = REAPER_LIMITED_INTERVAL_US;
        pthread_mutex_unlock(&ring->lock);
        for (unsigned v = 0; filled && v < 64; v++)
            if (filled & (1ULL << v) && ring->hooks.filled)
                ring->hooks.filled(ring->hooks.opaque, v);
        if (ring->hooks.tick)
            ring->hooks.tick(ring->hooks.opaque);
        pthread_mutex_lock(&ring->lock);
    }
    pthread_mutex_unlock(&ring->lock);
    return NULL;
}

int dirty_ring_reaper_start_locked(struct dirty_ring *ring, struct gw_error *err)
{
    int rc;

    if (ring->reaper_started)
        return 0;
    rc = pthread_create(&ring->reaper, NULL, reaper_thread, ring);
    if (rc)
        return gw_error_set(err, -rc, "cannot start the dirty ring reaper: %s", strerror(rc));
    ring->reaper_started = true;
    return 0;
}

void dirty_ring_reaper_stop(struct dirty_ring *ring)
{
    pthread_mutex_lock(&ring->lock);
    ring->reaper_quit = true;
    pthread_cond_broadcast(&ring->reaper_wake);
    pthread_mutex_unlock(&ring->lock);
    if (ring->reaper_started)
        pthread_join(ring->reaper, NULL);
    ring->reaper_started = false;
}
