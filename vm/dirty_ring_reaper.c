/* The dirty ring's reaper thread: harvests every ring often enough that a
 * steady writer rarely fills its ring, and gives dirty-limit its tick. It
 * owns only its interval; everything it touches is under the ring lock but
 * for the tick, which dirty-limit guards itself. */
#include "dirty_ring.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The reaper wakes at least this often while a user needs the rings, and
 * at most this often however fast the guest dirties. */
#define REAPER_MAX_INTERVAL_US 100000
#define REAPER_MIN_INTERVAL_US 500

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
            continue;
        }
        wait_interval(ring, interval_us);
        if (ring->reaper_quit || !ring->users)
            continue;
        uint32_t fullest = 0;
        if (dirty_ring_harvest_locked(ring, -1, true, &fullest, &err) < 0 && !reported) {
            /* A vCPU's own ring-full harvest meets it too, and ends the VM. */
            fprintf(stderr, "godwit-vm: dirty ring reaper: %s\n", err.msg);
            reported = true;
        }
        interval_us = next_interval(ring, interval_us, fullest);
        if (ring->tick) {
            pthread_mutex_unlock(&ring->lock);
            ring->tick(ring->tick_opaque);
            pthread_mutex_lock(&ring->lock);
        }
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
