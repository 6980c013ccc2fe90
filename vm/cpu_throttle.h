/* The cpu throttle (QEMU's, for auto-converge): each CPU of the guest
 * sleeps `percent` % of the time, so the guest dirties memory that much
 * slower. As QEMU does it, a timer (a thread here) asks every CPU, at each
 * period of CPU_THROTTLE_SLICE_NS / (1 - p), to sleep p / (1 - p) slices:
 * a CPU runs a 10 ms slice, then sleeps. A vCPU in KVM_RUN is kicked out
 * for it, so a guest that never exits to the VMM is throttled as well.
 *
 * Two parts: the timer (struct cpu_throttle, one per VM), and each CPU's
 * side of it (struct throttle_sleep), kept by the CPU under its own lock
 * and honoured by its thread between two runs of guest code. */
#ifndef GODWIT_VM_CPU_THROTTLE_H
#define GODWIT_VM_CPU_THROTTLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>

#define CPU_THROTTLE_SLICE_NS 10000000ULL   /* QEMU's CPU_THROTTLE_TIMESLICE_NS */

struct cpu_throttle {
    pthread_mutex_t lock;
    pthread_cond_t changed;      /* monotonic clock */
    unsigned percent;            /* 0: not throttling */
    bool started, quit;
    pthread_t thread;
    /* Asks every CPU to sleep ns once (ns 0: stop any sleep now). Called
     * from the timer thread, and with 0 from cpu_throttle_set. */
    void (*sleep_all)(void *opaque, uint64_t ns);
    void *opaque;
};

int cpu_throttle_init(struct cpu_throttle *throttle, void (*sleep_all)(void *opaque, uint64_t ns),
                      void *opaque, struct gw_error *err);
/* 1 to 99; 0 ends the throttle and wakes every CPU that sleeps for it. The
 * timer thread starts at the first call. Any thread. */
int cpu_throttle_set(struct cpu_throttle *throttle, unsigned percent, struct gw_error *err);
/* Ends the timer thread (the CPUs must still exist). */
void cpu_throttle_cleanup(struct cpu_throttle *throttle);

/* A CPU's side. */
struct throttle_sleep {
    uint64_t pending_ns;         /* asked for, not begun */
    uint64_t until_ns;           /* a sleep under way ends then (monotonic); 0: none */
};

/* Under the CPU's lock: asks for a sleep of ns from now; one pending or
 * under way is not asked again (QEMU's throttle_thread_scheduled), only
 * made longer if it would end sooner. ns 0 ends both. Returns whether the
 * CPU's thread must be kicked out of guest code. */
bool throttle_sleep_request(struct throttle_sleep *sleep, uint64_t ns);
/* The CPU's thread, its lock held, between two runs of guest code: when a
 * sleep is due, waits on cond until it ends or something changes, and
 * returns true (the caller looks at its requests again: a stop, an NMI, a
 * quit come first); false when no sleep is due. */
bool throttle_sleep_wait(struct throttle_sleep *sleep, pthread_cond_t *cond,
                         pthread_mutex_t *lock);
/* Forgets a sleep: the CPU is being stopped. */
void throttle_sleep_drop(struct throttle_sleep *sleep);

/* A condition variable whose timed waits run on CLOCK_MONOTONIC, so that
 * a throttle sleep is not stretched by a change of the wall clock. */
int cond_init_monotonic(pthread_cond_t *cond);

#endif
