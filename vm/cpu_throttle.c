/* The cpu throttle (cpu_throttle.h): the timer thread, and the sleep each
 * CPU takes for it. The timer's lock is held while it asks the CPUs to
 * sleep, and while cpu_throttle_set(0) wakes them, so that no sleep asked
 * for at the old percentage lands after the throttle has ended. Lock
 * order: the timer's, then a CPU's. */
#include "cpu_throttle.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

static struct timespec at_ns(uint64_t ns)
{
    return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ULL),
                              .tv_nsec = (long)(ns % 1000000000ULL) };
}

int cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return -rc;
}

/* --- a CPU's side --- */

bool throttle_sleep_request(struct throttle_sleep *sleep, uint64_t ns)
{
    if (ns == 0) {
        throttle_sleep_drop(sleep);
        return false;
    }
    /* Already asleep, or about to be: a longer sleep (a higher percentage
     * since) lengthens it. Left as it was, the sleep of the old percentage
     * would end and the CPU run unthrottled until the next period. */
    if (sleep->until_ns) {
        if (now_ns() + ns > sleep->until_ns)
            sleep->until_ns = now_ns() + ns;
        return false;
    }
    if (sleep->pending_ns) {
        sleep->pending_ns = ns > sleep->pending_ns ? ns : sleep->pending_ns;
        return false;
    }
    sleep->pending_ns = ns;
    return true;
}

bool throttle_sleep_wait(struct throttle_sleep *sleep, pthread_cond_t *cond,
                         pthread_mutex_t *lock)
{
    uint64_t now = now_ns();

    if (sleep->pending_ns) {
        sleep->until_ns = now + sleep->pending_ns;
        sleep->pending_ns = 0;
    }
    if (!sleep->until_ns)
        return false;
    if (now >= sleep->until_ns) {
        sleep->until_ns = 0;
        return false;
    }
    struct timespec until = at_ns(sleep->until_ns);
    pthread_cond_timedwait(cond, lock, &until);
    return true;
}

void throttle_sleep_drop(struct throttle_sleep *sleep)
{
    sleep->pending_ns = 0;
    sleep->until_ns = 0;
}

/* --- the timer --- */

int cpu_throttle_init(struct cpu_throttle *throttle, void (*sleep_all)(void *opaque, uint64_t ns),
                      void *opaque, struct gw_error *err)
{
    int rc;

    memset(throttle, 0, sizeof(*throttle));
    throttle->sleep_all = sleep_all;
    throttle->opaque = opaque;
    pthread_mutex_init(&throttle->lock, NULL);
    if ((rc = cond_init_monotonic(&throttle->changed)) < 0)
        return gw_error_set(err, rc, "cannot make the cpu throttle's condition: %s",
                            strerror(-rc));
    return 0;
}

/* QEMU's arithmetic: with p the share asleep, a period is a slice over
 * (1 - p) and the sleep in it p / (1 - p) slices (1 ns more against the
 * rounding down). */
static uint64_t sleep_ns(unsigned percent)
{
    return CPU_THROTTLE_SLICE_NS * percent / (100 - percent) + 1;
}

static uint64_t period_ns(unsigned percent)
{
    return CPU_THROTTLE_SLICE_NS * 100 / (100 - percent);
}

static void *throttle_thread(void *opaque)
{
    struct cpu_throttle *throttle = opaque;

    pthread_mutex_lock(&throttle->lock);
    while (!throttle->quit) {
        unsigned percent = throttle->percent;
        if (!percent) {
            pthread_cond_wait(&throttle->changed, &throttle->lock);
            continue;
        }
        throttle->sleep_all(throttle->opaque, sleep_ns(percent));
        /* Until the next period, or at once on a new percentage. */
        struct timespec next = at_ns(now_ns() + period_ns(percent));
        while (!throttle->quit && throttle->percent == percent &&
               pthread_cond_timedwait(&throttle->changed, &throttle->lock, &next) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&throttle->lock);
    return NULL;
}

int cpu_throttle_set(struct cpu_throttle *throttle, unsigned percent, struct gw_error *err)
{
    int rc = 0;

    if (percent > 99)
        return gw_error_set(err, -EINVAL, "a cpu throttle of %u%%; it takes 0 to 99", percent);
    pthread_mutex_lock(&throttle->lock);
    throttle->percent = percent;
    if (percent && !throttle->started) {
        rc = -pthread_create(&throttle->thread, NULL, throttle_thread, throttle);
        throttle->started = rc == 0;
    }
    pthread_cond_broadcast(&throttle->changed);
    if (!percent)
        throttle->sleep_all(throttle->opaque, 0);   /* full speed now, not after a sleep */
    pthread_mutex_unlock(&throttle->lock);
    if (rc < 0)
        return gw_error_set(err, rc, "cannot start the cpu throttle's thread: %s",
                            strerror(-rc));
    return 0;
}

void cpu_throttle_cleanup(struct cpu_throttle *throttle)
{
    if (!throttle->sleep_all)
        return;   /* never made: the VM failed to start before */
    pthread_mutex_lock(&throttle->lock);
    throttle->quit = true;
    pthread_cond_broadcast(&throttle->changed);
    pthread_mutex_unlock(&throttle->lock);
    if (throttle->started)
        pthread_join(throttle->thread, NULL);
    throttle->started = false;
    pthread_cond_destroy(&throttle->changed);
    pthread_mutex_destroy(&throttle->lock);
}
