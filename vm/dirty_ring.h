/* The KVM dirty ring (--accel kvm,dirty-ring-size=N): one ring of dirtied
 * pages per vCPU, shared with KVM, as a second dirty tracker beside the
 * dirty log. Its users turn KVM's logging on: the migration (the tracker's
 * start/stop) and dirty-limit (vm/dirty_limit.c), which needs the rings to
 * fill. Whoever harvests (a sync, the reaper thread, a vCPU whose ring is
 * full) does it under one lock, in ring order, and resets what it took. */
#ifndef GODWIT_VM_DIRTY_RING_H
#define GODWIT_VM_DIRTY_RING_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/dirty.h>

#include "memory.h"

struct kvm;

/* Who needs KVM's dirty logging on; logging runs while any bit is set. */
enum dirty_ring_user {
    DIRTY_RING_USER_MIGRATION = 1,
    DIRTY_RING_USER_LIMIT = 2,
};

struct dirty_ring_vcpu {
    struct kvm_dirty_gfn *gfns;     /* KVM's ring, mapped from the vCPU fd */
    /* Positions, free-running, under the ring lock: the next entry to take,
     * and KVM's reset index as its resets have told (equal unless KVM
     * overwrote an entry before it was reset: dirty_ring.c). */
    uint32_t fetch, reset;
    unsigned empty_full_exits;      /* ring-full exits in a row that found nothing */
    bool overflowed_once;           /* gaps are possible from now on (dirty_ring.c) */
    _Atomic uint64_t harvested;     /* pages ever taken from this ring */
    _Atomic uint64_t full_exits;    /* KVM_EXIT_DIRTY_RING_FULL seen */
    _Atomic uint64_t overflows;     /* times KVM wrote past the ring's end */
    /* Set by dirty-limit for a limited vCPU: the reaper leaves its ring to
     * fill to this many entries, then takes it and calls hooks.filled, so
     * the vCPU meets its quota when its ring fills, as QEMU's does (0: the
     * reaper takes it freely). Half the ring, not KVM's soft limit: see
     * dirty_ring_reaper.c. */
    _Atomic uint32_t fill_limit;
};

/* What dirty-limit hears from the reaper, called without the ring lock:
 * tick after each round, filled for a vCPU whose ring reached fill_limit.
 * Set before any user turns logging on. */
struct dirty_ring_hooks {
    void (*tick)(void *opaque);
    void (*filled)(void *opaque, unsigned index);
    void *opaque;
};

struct dirty_ring;

/* What the ring asks of KVM (dirty_ring_kvm.c; a simulated KVM in
 * tests/unit/test_dirty_ring.c). */
struct dirty_ring_kvm_ops {
    /* KVM_RESET_DIRTY_RINGS: how many entries KVM reset, or -errno. */
    int (*reset)(struct dirty_ring *ring);
    /* KVM's dirty logging on every block's memslot, on or off; turning it
     * on write-protects every page. */
    int (*set_logging)(struct dirty_ring *ring, bool on, struct gw_error *err);
    void (*unmap)(struct dirty_ring *ring, struct kvm_dirty_gfn *gfns);
};

struct dirty_ring {
    const struct dirty_ring_kvm_ops *ops;
    struct kvm *kvm;                /* the ops' */
    struct guest_memory *memory;
    uint32_t entries;               /* per vCPU, a power of two; 0: no ring */
    unsigned nr_vcpus;              /* rings mapped */
    unsigned max_vcpus;
    struct dirty_ring_vcpu *vcpus;

    pthread_mutex_t lock;           /* harvesting, pending, users, the reaper's state */
    uint64_t *pending[2];           /* taken for the migration, not yet synced: per block */
    unsigned users;                 /* enum dirty_ring_user bits */

    pthread_t reaper;
    bool reaper_started, reaper_quit;
    bool reaper_hurry;              /* a ring-full exit came: back to the shortest interval */
    pthread_cond_t reaper_wake;     /* CLOCK_MONOTONIC */
    struct dirty_ring_hooks hooks;
};

extern const struct dirty_tracker_ops dirty_ring_ops;

/* Enables the ring with entries per vCPU; before any vCPU exists. Fails
 * with the allowed range when the host's KVM cannot have that size
 * (dirty_ring_kvm.c, as the next). */
int dirty_ring_enable(struct dirty_ring *ring, struct kvm *kvm, struct guest_memory *memory,
                      uint32_t entries, unsigned max_vcpus, struct gw_error *err);
/* Maps vCPU index's ring; after KVM_CREATE_VCPU. */
int dirty_ring_map_vcpu(struct dirty_ring *ring, unsigned index, int vcpu_fd,
                        struct gw_error *err);
/* What those two do without KVM (dirty_ring.c): the ring's state for
 * entries per vCPU talking to KVM through ops; a vCPU's ring, gfns. */
int dirty_ring_setup(struct dirty_ring *ring, struct guest_memory *memory, uint32_t entries,
                     unsigned max_vcpus, const struct dirty_ring_kvm_ops *ops, void *kvm,
                     struct gw_error *err);
int dirty_ring_attach(struct dirty_ring *ring, unsigned index, struct kvm_dirty_gfn *gfns,
                      struct gw_error *err);
/* A user starts or stops needing KVM's logging (and the reaper). */
int dirty_ring_use(struct dirty_ring *ring, enum dirty_ring_user user, bool on,
                   struct gw_error *err);
/* KVM_EXIT_DIRTY_RING_FULL, on the vCPU's own thread: harvests its ring. */
int dirty_ring_full_exit(struct dirty_ring *ring, unsigned index, struct gw_error *err);
/* Pages taken from vCPU index's ring so far. */
uint64_t dirty_ring_harvested(struct dirty_ring *ring, unsigned index);
/* Ends the reaper and unmaps the rings; after the vCPU threads ended. */
void dirty_ring_cleanup(struct dirty_ring *ring);

/* The harvest itself (dirty_ring.c): under ring->lock, takes every ring
 * and resets what it took. */
int dirty_ring_harvest_locked(struct dirty_ring *ring, struct gw_error *err);
/* The reaper's harvest: the same, but a ring with a fill_limit is taken
 * only once filled to it, and its bit set in *filled. *fullest: the most
 * taken from one ring. */
int dirty_ring_reap_locked(struct dirty_ring *ring, uint32_t *fullest, uint64_t *filled,
                           struct gw_error *err);
/* The reaper (dirty_ring_reaper.c), under ring->lock: started with the
 * first user, ended by dirty_ring_cleanup. */
int dirty_ring_reaper_start_locked(struct dirty_ring *ring, struct gw_error *err);
void dirty_ring_reaper_stop(struct dirty_ring *ring);

static inline bool dirty_ring_enabled(const struct dirty_ring *ring)
{
    return ring->entries != 0;
}

#endif
