/* The KVM dirty ring as the engine's dirty tracker. Harvesting happens in
 * one place (harvest_locked), under ring->lock, and never skips an entry.
 *
 * Why no write is lost. KVM keeps a page write-protected (or its dirty bit
 * clear) from the moment logging starts or its entry is reset; the first
 * write after that pushes one entry onto the writing vCPU's ring and lets
 * later writes through, until userspace has harvested that entry and
 * KVM_RESET_DIRTY_RINGS re-protects the page. So whenever a page can be
 * written unseen, an entry for it sits in a ring, not yet harvested. The
 * harvest sets the page in `pending` before the reset that re-protects it,
 * and both happen under the lock that a sync takes to empty `pending`: a
 * sync comes wholly before a harvest (the page waits for the next sync) or
 * wholly after its reset, and the engine reads the page only after that
 * sync, so it sees every write made before the re-protection; writes after
 * it push a new entry. Hence the engine's clear, which the dirty log needs
 * to re-arm a chunk just before it is read, has nothing to do here:
 * re-arming is the reset, done at harvest. A page may be sent twice (dirty
 * again between harvest and send); none is missed.
 *
 * The final sync runs with every vCPU parked outside KVM_RUN, so all their
 * entries are in the rings (hardware buffers such as PML are flushed on
 * every exit). Earlier syncs do not kick the vCPUs: an entry still in such
 * a buffer is harvested later, after the write it stands for.
 *
 * Two things KVM would otherwise do must not happen: manual dirty-log
 * protect with initially-set would leave pages unprotected when logging
 * starts (no entries, writes lost), so it is not enabled with the ring
 * (main.c); and KVM's writes made outside any vCPU go only to a dirty bitmap,
 * which a ring-only VM lacks (KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP): godwit-vm
 * gives the guest no feature that makes KVM write guest RAM that way
 * (kvmclock, steal time, async page faults). */
#include "dirty_ring.h"
#include "clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


int dirty_ring_setup(struct dirty_ring *ring, struct guest_memory *memory, uint32_t entries,
                     unsigned max_vcpus, const struct dirty_ring_kvm_ops *ops, void *kvm,
                     struct gw_error *err)
{
    pthread_condattr_t attr;

    *ring = (struct dirty_ring){ .memory = memory, .entries = entries, .max_vcpus = max_vcpus,
                                 .ops = ops, .kvm = kvm };
    pthread_mutex_init(&ring->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ring->reaper_wake, &attr);
    pthread_condattr_destroy(&attr);
    ring->vcpus = calloc(max_vcpus, sizeof(*ring->vcpus));
    if (!ring->vcpus)
        return gw_error_set(err, -ENOMEM, "out of memory for the dirty rings");
    for (unsigned b = 0; b < memory->nr_blocks; b++)
        if (!(ring->pending[b] = calloc(ram_block_bitmap_words(&memory->blocks[b]),
                                        sizeof(uint64_t))))
            return gw_error_set(err, -ENOMEM, "out of memory for the dirty ring's bitmaps");
    return 0;
}

int dirty_ring_attach(struct dirty_ring *ring, unsigned index, struct kvm_dirty_gfn *gfns,
                      struct gw_error *err)
{
    if (index >= ring->max_vcpus)
        return gw_error_set(err, -EINVAL, "vCPU %u has no dirty ring slot", index);
    ring->vcpus[index].gfns = gfns;
    if (index >= ring->nr_vcpus)
        ring->nr_vcpus = index + 1;
    return 0;
}

/* One entry: the page goes into pending while the migration tracks. KVM's
 * slot field carries the address space in its high 16 bits; godwit-vm has
 * one (no SMM), and slot i is RAM block i. Checked all the same: nothing
 * outside a block's bitmap is ever written. */
static void record_entry(struct dirty_ring *ring, const struct kvm_dirty_gfn *gfn)
{
    uint32_t slot = gfn->slot;

    if (!(ring->users & DIRTY_RING_USER_MIGRATION) || slot >= ring->memory->nr_blocks ||
        gfn->offset >= ram_block_pages(&ring->memory->blocks[slot]))
        return;
    ring->pending[slot][gfn->offset / 64] |= 1ULL << (gfn->offset % 64);
}

static struct kvm_dirty_gfn *entry_at(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu,
                                      uint32_t position)
{
    return &vcpu->gfns[position & (ring->entries - 1)];
}

/* Takes every dirty entry from fetch on, in order, marking each for reset;
 * stops at the first that KVM has not filled. Returns how many. */
static uint32_t take_dirty(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu)
{
    uint32_t count = 0;

    while (count < ring->entries) {
        struct kvm_dirty_gfn *gfn = entry_at(ring, vcpu, vcpu->fetch);
        if (!(__atomic_load_n(&gfn->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
            break;
        record_entry(ring, gfn);
        __atomic_store_n(&gfn->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        vcpu->fetch++;
        count++;
    }
    atomic_fetch_add(&vcpu->harvested, count);
    return count;
}

/* Marks count positions from first for reset whatever they hold, recording
 * the dirty ones. Only for positions KVM has already filled (below its
 * dirty index): a free entry marked would carry its reset index past its
 * dirty index, and the ring would count as full for ever. */
static void sweep(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu, uint32_t first,
                  uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        struct kvm_dirty_gfn *gfn = entry_at(ring, vcpu, first + i);
        if (__atomic_load_n(&gfn->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY)
            record_entry(ring, gfn);
        __atomic_store_n(&gfn->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
    }
}

/* KVM_RESET_DIRTY_RINGS for what this ring has marked. KVM walks from its
 * reset index over marked entries and says how many it reset; every other
 * ring's marks were reset by its own harvest, so the count is this ring's. */
static int reset_ring(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu,
                      struct gw_error *err)
{
    int count;

    if (vcpu->reset == vcpu->fetch)
        return 0;
    do
        count = ring->ops->reset(ring);
    while (count == -EINTR);
    if (count < 0)
        return gw_error_set(err, count, "KVM_RESET_DIRTY_RINGS failed: %s", strerror(-count));
    vcpu->reset += (uint32_t)count;
    return 0;
}

/* KVM wrote past the ring's end: some entries were overwritten before they
 * were taken. The pages they named are unknown, and they may stay writable
 * without a new entry (KVM re-protects a page only when its entry is
 * reset). So logging is turned off and on again, which write-protects
 * every page, and then, while the migration tracks, every page counts as
 * dirty: a write before the re-protection is sent by the next pass, one
 * after it pushes an entry again. */
static int note_overflow(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu,
                         struct gw_error *err)
{
    const struct guest_memory *memory = ring->memory;
    int rc;

    atomic_fetch_add(&vcpu->overflows, 1);
    vcpu->overflowed_once = true;
    if (!ring->users)
        return 0;
    if ((rc = ring->ops->set_logging(ring, false, err)) < 0 ||
        (rc = ring->ops->set_logging(ring, true, err)) < 0)
        return rc;
    if (!(ring->users & DIRTY_RING_USER_MIGRATION))
        return 0;
    for (unsigned b = 0; b < memory->nr_blocks; b++) {
        uint64_t pages = ram_block_pages(&memory->blocks[b]);
        uint64_t words = ram_block_bitmap_words(&memory->blocks[b]);
        memset(ring->pending[b], 0xff, words * sizeof(uint64_t));
        if (pages % 64)   /* no bit past the last page */
            ring->pending[b][words - 1] = (1ULL << (pages % 64)) - 1;
    }
    return 0;
}

/* The distance from fetch to the first dirty entry after it, or 0 if there
 * is none. Where KVM kept to its ring, the dirty entries run from fetch
 * without a gap, so one further on means a gap: positions KVM counts as
 * filled whose entries are already cleared (overwritten, then reset). A
 * dirty entry seen after a clean one at fetch may also be a push that
 * landed meanwhile: then fetch holds one too now (KVM fills in order, and
 * x86 shows stores in order), and that is no gap. */
static uint32_t gap_before_dirty(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu)
{
    for (uint32_t d = 1; d < ring->entries; d++) {
        if (!(__atomic_load_n(&entry_at(ring, vcpu, vcpu->fetch + d)->flags, __ATOMIC_ACQUIRE) &
              KVM_DIRTY_GFN_F_DIRTY))
            continue;
        bool raced = __atomic_load_n(&entry_at(ring, vcpu, vcpu->fetch)->flags,
                                     __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY;
        return raced ? 0 : d;
    }
    return 0;
}

/* Overflows. KVM keeps its soft limit by checking, before it enters the
 * guest, whether the last exit's pushes filled the ring past it; the
 * entries it keeps in reserve cover one exit's writes. An exit that writes
 * more (this host's KVM, PVM, emulates a batch of up to 1024 guest
 * instructions per exit and pushes an entry per written page) runs past the
 * ring's end, and KVM overwrites entries, only warning. Each sign of it is
 * answered so that no page is lost (note_overflow) and the ring recovers:
 *  - every entry dirty at once: the ring was full, past any soft limit;
 *  - KVM reset fewer entries than were marked: one was overwritten after it
 *    was taken, and KVM stopped there. The marked positions, all filled by
 *    KVM, are swept so that its reset index catches up;
 *  - a gap before dirty entries (gap_before_dirty). Its positions come
 *    before a filled one, so they are filled too and may be swept; without
 *    that the entries behind the gap would never be taken, not even by the
 *    final sync. A gap needs KVM to have gone a ring past its reset index,
 *    which the first two signs catch at the harvest whose reset leaves the
 *    gap; so it is looked for only on a ring that overflowed before;
 *  - two ring-full exits in a row with nothing to take, no gap seen and no
 *    harvest between them: KVM counts positions as filled that are all
 *    cleared. KVM counts at least its soft limit filled then, and that is
 *    at least a quarter of the ring for every size it accepts, so a
 *    quarter from fetch may be swept. */
static int take_and_reset(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu,
                          bool *overflowed, uint32_t *taken, struct gw_error *err)
{
    uint32_t count = take_dirty(ring, vcpu);
    int rc = reset_ring(ring, vcpu, err);

    *taken += count;
    if (count == ring->entries)
        *overflowed = true;
    if (rc == 0 && vcpu->reset != vcpu->fetch) {
        *overflowed = true;
        sweep(ring, vcpu, vcpu->reset, vcpu->fetch - vcpu->reset);
        rc = reset_ring(ring, vcpu, err);
    }
    return rc;
}

static int harvest_vcpu(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu, bool full_exit,
                        uint32_t *taken, struct gw_error *err)
{
    bool overflowed = false;
    uint32_t gap;
    int rc;

    *taken = 0;
    rc = take_and_reset(ring, vcpu, &overflowed, taken, err);
    /* A gap comes only from a harvest that met an overflow, and is looked
     * for (a read of the whole ring) only after one. It can be swept only
     * where KVM's reset index is known to be fetch. */
    for (unsigned round = 0; rc == 0 && (overflowed || vcpu->overflowed_once) &&
                             vcpu->reset == vcpu->fetch && round < 4 &&
                             (gap = gap_before_dirty(ring, vcpu)); round++) {
        overflowed = true;
        sweep(ring, vcpu, vcpu->fetch, gap);
        vcpu->fetch += gap;
        rc = take_and_reset(ring, vcpu, &overflowed, taken, err);
    }
    if (*taken || overflowed)
        vcpu->empty_full_exits = 0;
    else if (full_exit && rc == 0 && vcpu->reset == vcpu->fetch &&
             ++vcpu->empty_full_exits >= 2) {
        overflowed = true;
        sweep(ring, vcpu, vcpu->fetch, ring->entries / 4);
        vcpu->fetch += ring->entries / 4;
        vcpu->empty_full_exits = 0;
        rc = reset_ring(ring, vcpu, err);
    }
    if (overflowed && rc == 0)
        rc = note_overflow(ring, vcpu, err);
    return rc;
}

int dirty_ring_harvest_locked(struct dirty_ring *ring, struct gw_error *err)
{
    uint32_t taken;
    int rc = 0;

    for (unsigned v = 0; rc == 0 && v < ring->nr_vcpus; v++)
        if (ring->vcpus[v].gfns)
            rc = harvest_vcpu(ring, &ring->vcpus[v], false, &taken, err);
    return rc;
}

/* Entries fill a ring in order from fetch on, so it holds at least count
 * when the count-th from fetch is dirty. */
static bool filled_to(struct dirty_ring *ring, struct dirty_ring_vcpu *vcpu, uint32_t count)
{
    return __atomic_load_n(&entry_at(ring, vcpu, vcpu->fetch + count - 1)->flags,
                           __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY;
}

int dirty_ring_reap_locked(struct dirty_ring *ring, uint32_t *fullest, uint64_t *filled,
                           struct gw_error *err)
{
    uint32_t most = 0, taken;
    int rc = 0;

    *filled = 0;
    for (unsigned v = 0; rc == 0 && v < ring->nr_vcpus; v++) {
        struct dirty_ring_vcpu *vcpu = &ring->vcpus[v];
        uint32_t limit = atomic_load(&vcpu->fill_limit);
        if (!vcpu->gfns)
            continue;
        if (limit && !filled_to(ring, vcpu, limit)) {
            /* Left to fill, but seen often enough to be caught at its limit. */
            if (filled_to(ring, vcpu, ring->entries / 8 + 1))
                most = most > ring->entries / 8 + 1 ? most : ring->entries / 8 + 1;
            continue;
        }
        rc = harvest_vcpu(ring, vcpu, false, &taken, err);
        if (limit && v < 64)
            *filled |= 1ULL << v;
        most = taken > most ? taken : most;
    }
    *fullest = most;
    return rc;
}

int dirty_ring_full_exit(struct dirty_ring *ring, unsigned index, struct gw_error *err)
{
    uint32_t taken;
    int rc;

    if (index >= ring->nr_vcpus || !ring->vcpus[index].gfns)
        return gw_error_set(err, -EINVAL, "vCPU %u exited for a full dirty ring it has not "
                            "got", index);
    pthread_mutex_lock(&ring->lock);
    atomic_fetch_add(&ring->vcpus[index].full_exits, 1);
    if (!atomic_load(&ring->vcpus[index].fill_limit))
        ring->reaper_hurry = true;
    rc = harvest_vcpu(ring, &ring->vcpus[index], true, &taken, err);
    pthread_mutex_unlock(&ring->lock);
    return rc;
}

uint64_t dirty_ring_harvested(struct dirty_ring *ring, unsigned index)
{
    return index < ring->nr_vcpus ? atomic_load(&ring->vcpus[index].harvested) : 0;
}

/* --- users: logging on while anyone needs it --- */

int dirty_ring_use(struct dirty_ring *ring, enum dirty_ring_user user, bool on,
                   struct gw_error *err)
{
    const struct guest_memory *memory = ring->memory;
    unsigned before, after;
    int rc = 0;

    pthread_mutex_lock(&ring->lock);
    before = ring->users;
    after = on ? before | user : before & ~(unsigned)user;
    if (on && !before)
        rc = ring->ops->set_logging(ring, true, err);
    if (rc == 0 && on)
        rc = dirty_ring_reaper_start_locked(ring, err);
    if (rc == 0 && user == DIRTY_RING_USER_MIGRATION) {
        /* The engine counts every page dirty at start: nothing older matters. */
        for (unsigned b = 0; b < memory->nr_blocks; b++)
            memset(ring->pending[b], 0,
                   ram_block_bitmap_words(&memory->blocks[b]) * sizeof(uint64_t));
    }
    if (rc == 0)
        ring->users = after;
    if (rc == 0 && before && !after) {
        /* What was logged before logging stopped is nobody's: harvest it so
         * the rings start the next user empty. */
        rc = ring->ops->set_logging(ring, false, err);
        dirty_ring_harvest_locked(ring, NULL);
    }
    pthread_cond_broadcast(&ring->reaper_wake);
    pthread_mutex_unlock(&ring->lock);
    return rc;
}

/* --- the engine's tracker ops --- */

static int dirty_ring_start(void *opaque, struct gw_error *err)
{
    return dirty_ring_use(opaque, DIRTY_RING_USER_MIGRATION, true, err);
}


/* ORs pending into bitmap and empties it; a sparse pending is mostly zero
 * words, tested eight at a time so that neither side is written there. */
static void merge_pending(uint64_t *bitmap, uint64_t *pending, uint64_t words)
{
    uint64_t w = 0;

    for (; w + 8 <= words; w += 8) {
        uint64_t *group = pending + w;
        if ((group[0] | group[1] | group[2] | group[3] | group[4] | group[5] | group[6] |
             group[7]) == 0)
            continue;
        for (unsigned i = 0; i < 8; i++) {
            bitmap[w + i] |= group[i];
            group[i] = 0;
        }
    }
    for (; w < words; w++) {
        bitmap[w] |= pending[w];
        pending[w] = 0;
    }
}

/* fetch: the harvest of every ring (KVM's part, the reset, included);
 * merge: what was harvested for this block into the engine's bitmap. */
static int dirty_ring_sync(void *opaque, unsigned block, uint64_t *bitmap,
                           struct dirty_sync_times *times, struct gw_error *err)
{
    struct dirty_ring *ring = opaque;
    uint64_t words = ram_block_bitmap_words(&ring->memory->blocks[block]);
    uint64_t started, fetched;
    int rc;

    pthread_mutex_lock(&ring->lock);
    started = monotonic_us();
    rc = dirty_ring_harvest_locked(ring, err);
    fetched = monotonic_us();
    if (rc == 0)
        merge_pending(bitmap, ring->pending[block], words);
    times->fetch_us += fetched - started;
    times->merge_us += monotonic_us() - fetched;
    pthread_mutex_unlock(&ring->lock);
    return rc;
}

/* Re-arming is the reset at harvest (see the top of this file). */
static int dirty_ring_clear(void *opaque, unsigned block, uint64_t first_page,
                            const uint64_t *bits, unsigned nr_words, struct gw_error *err)
{
    (void)opaque;
    (void)block;
    (void)first_page;
    (void)bits;
    (void)nr_words;
    (void)err;
    return 0;
}

static void dirty_ring_stop(void *opaque)
{
    dirty_ring_use(opaque, DIRTY_RING_USER_MIGRATION, false, NULL);
}

const struct dirty_tracker_ops dirty_ring_ops = {
    .start = dirty_ring_start,
    .sync = dirty_ring_sync,
    .clear = dirty_ring_clear,
    .stop = dirty_ring_stop,
};

void dirty_ring_cleanup(struct dirty_ring *ring)
{
    if (!dirty_ring_enabled(ring))
        return;
    dirty_ring_reaper_stop(ring);
    for (unsigned v = 0; ring->vcpus && v < ring->nr_vcpus; v++)
        if (ring->vcpus[v].gfns)
            ring->ops->unmap(ring, ring->vcpus[v].gfns);
    free(ring->vcpus);
    for (unsigned b = 0; b < 2; b++)
        free(ring->pending[b]);
    pthread_mutex_destroy(&ring->lock);
    pthread_cond_destroy(&ring->reaper_wake);
    *ring = (struct dirty_ring){ 0 };
}
