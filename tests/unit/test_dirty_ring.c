/* The dirty ring's harvest (vm/dirty_ring.c) against a simulated KVM ring,
 * so that every path runs here, with or without /dev/kvm: entries pushed,
 * taken, reset, the soft limit's exits, and a KVM that writes past the
 * ring's end, as this host's PVM does (a batch of up to 1024 emulated
 * instructions between two looks at the soft limit). The simulation keeps
 * KVM's rules: an entry per write to a write-protected page (or, as PVM's
 * emulator does, per write), a reset that walks from its index over taken
 * entries and re-protects their pages, turning logging on write-protects
 * everything. At each check the vCPU is stopped and the engine syncs, as
 * at a switchover: every page written since the last check must be in
 * the engine's bitmap; where KVM never overflowed, exactly those. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dirty_ring.h"

#define PAGES 4096u
#define WORDS (PAGES / 64)

struct sim {
    struct dirty_ring ring;
    struct guest_memory memory;
    struct kvm_dirty_gfn *gfns;
    uint32_t size, soft_limit, dirty_index, reset_index;
    bool logging;
    bool every_write_pushes;      /* PVM's emulator; else real KVM's protection */
    bool writable[PAGES];         /* no entry for the next write */
    uint64_t written[WORDS];      /* since the last check */
    uint64_t engine[WORDS];       /* the engine's bitmap at a check */
    bool exact;                   /* KVM never goes past the ring's end here */
    unsigned writes_during_reset; /* a running vCPU's pushes landing while userspace resets */
    bool vcpu_stopped;            /* in its ring-full exit, or for a check */
    uint64_t rng;
};

static struct sim *the_sim(struct dirty_ring *ring)
{
    return (struct sim *)((char *)ring - offsetof(struct sim, ring));
}

static uint32_t next_random(struct sim *sim)
{
    sim->rng ^= sim->rng << 13;
    sim->rng ^= sim->rng >> 7;
    sim->rng ^= sim->rng << 17;
    return (uint32_t)(sim->rng >> 16);
}

static void guest_write(struct sim *sim, uint32_t page)
{
    sim->written[page / 64] |= 1ULL << (page % 64);
    if (!sim->logging || (!sim->every_write_pushes && sim->writable[page]))
        return;
    struct kvm_dirty_gfn *entry = &sim->gfns[sim->dirty_index % sim->size];
    /* Past the ring's end KVM only warns, and writes over the entry. */
    assert_true(!sim->exact || !__atomic_load_n(&entry->flags, __ATOMIC_ACQUIRE));
    entry->slot = 0;
    entry->offset = page;
    __atomic_store_n(&entry->flags, KVM_DIRTY_GFN_F_DIRTY, __ATOMIC_RELEASE);
    sim->dirty_index++;
    sim->writable[page] = true;
}

static void guest_writes(struct sim *sim, unsigned count)
{
    for (unsigned i = 0; i < count; i++)
        guest_write(sim, next_random(sim) % PAGES);
}

static int sim_reset(struct dirty_ring *ring)
{
    struct sim *sim = the_sim(ring);
    int count = 0;

    if (!sim->vcpu_stopped)
        guest_writes(sim, sim->writes_during_reset);
    for (;;) {
        struct kvm_dirty_gfn *entry = &sim->gfns[sim->reset_index % sim->size];
        if (!(__atomic_load_n(&entry->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_RESET))
            break;
        if (entry->slot == 0 && entry->offset < PAGES)
            sim->writable[entry->offset] = false;
        __atomic_store_n(&entry->flags, 0, __ATOMIC_RELEASE);
        sim->reset_index++;
        count++;
    }
    return count;
}

static int sim_set_logging(struct dirty_ring *ring, bool on, struct gw_error *err)
{
    struct sim *sim = the_sim(ring);

    (void)err;
    sim->logging = on;
    if (on)
        memset(sim->writable, 0, sizeof(sim->writable));
    return 0;
}

static void sim_unmap(struct dirty_ring *ring, struct kvm_dirty_gfn *gfns)
{
    (void)ring;
    free(gfns);
}

static const struct dirty_ring_kvm_ops sim_ops = {
    .reset = sim_reset, .set_logging = sim_set_logging, .unmap = sim_unmap,
};

/* A migration starts: logging on, every page dirty for the first pass. */
static struct sim *sim_new(uint32_t entries, bool every_write_pushes, uint64_t seed)
{
    struct sim *sim = calloc(1, sizeof(*sim));
    struct gw_error err = { 0 };

    assert_non_null(sim);
    sim->memory.blocks[0] = (struct ram_block){ .name = "ram", .size = (uint64_t)PAGES * 4096,
                                                .page_size = 4096, .fd = -1 };
    sim->memory.nr_blocks = 1;
    sim->size = entries;
    sim->soft_limit = entries - 64;   /* KVM's reserve, no PML */
    sim->every_write_pushes = every_write_pushes;
    sim->rng = seed;
    sim->gfns = calloc(entries, sizeof(*sim->gfns));
    assert_non_null(sim->gfns);
    assert_int_equal(dirty_ring_setup(&sim->ring, &sim->memory, entries, 1, &sim_ops, NULL,
                                      &err), 0);
    assert_int_equal(dirty_ring_attach(&sim->ring, 0, sim->gfns, &err), 0);
    sim->ring.users = DIRTY_RING_USER_MIGRATION;   /* without the reaper thread */
    sim_set_logging(&sim->ring, true, NULL);
    return sim;
}

static void sim_free(struct sim *sim)
{
    dirty_ring_cleanup(&sim->ring);
    free(sim);
}

/* KVM's look at the soft limit before it enters the guest again; the vCPU
 * thread harvests its ring on each exit. It must get back into the guest. */
static void enter_guest(struct sim *sim)
{
    struct gw_error err = { 0 };

    for (unsigned exits = 0; sim->dirty_index - sim->reset_index >= sim->soft_limit; exits++) {
        assert_true(exits < 64);   /* else the vCPU is stuck at ring-full for ever */
        sim->vcpu_stopped = true;
        assert_int_equal(dirty_ring_full_exit(&sim->ring, 0, &err), 0);
        sim->vcpu_stopped = false;
    }
}

static void sync_into_engine(struct sim *sim)
{
    struct dirty_sync_times times = { 0 };
    struct gw_error err = { 0 };

    assert_int_equal(dirty_ring_ops.sync(&sim->ring, 0, sim->engine, &times, &err), 0);
}

/* The vCPU is stopped: the final sync must hold every page written. */
static void check(struct sim *sim)
{
    sim->vcpu_stopped = true;
    sync_into_engine(sim);
    sim->vcpu_stopped = false;
    for (unsigned w = 0; w < WORDS; w++) {
        assert_int_equal(sim->written[w] & ~sim->engine[w], 0);
        if (sim->exact)
            assert_int_equal(sim->engine[w], sim->written[w]);
    }
    memset(sim->written, 0, sizeof(sim->written));
    memset(sim->engine, 0, sizeof(sim->engine));   /* sent */
}

/* Rounds of a batch of writes, an entry into the guest, one time in
 * reap_odds a harvest by the reaper, now and then a sync, and a check
 * every few rounds. */
static void run(struct sim *sim, unsigned rounds, unsigned max_batch, unsigned reap_odds)
{
    struct gw_error err = { 0 };

    sync_into_engine(sim);   /* the first pass: all dirty anyway */
    memset(sim->engine, 0, sizeof(sim->engine));
    for (unsigned round = 1; round <= rounds; round++) {
        guest_writes(sim, 1 + next_random(sim) % max_batch);
        enter_guest(sim);
        if (next_random(sim) % reap_odds == 0) {
            pthread_mutex_lock(&sim->ring.lock);
            assert_int_equal(dirty_ring_harvest_locked(&sim->ring, &err), 0);
            pthread_mutex_unlock(&sim->ring.lock);
        }
        if (next_random(sim) % (2 * reap_odds) == 0)
            sync_into_engine(sim);
        if (round % 16 == 0)
            check(sim);
    }
}

static uint64_t overflows(struct sim *sim)
{
    return atomic_load(&sim->ring.vcpus[0].overflows);
}

static void test_kvm_within_its_limit_gives_exactly_the_written_pages(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct sim *sim = sim_new(256, false, seed);
        sim->exact = true;
        run(sim, 400, 48, 32);   /* under KVM's reserve of 64 between two looks */
        assert_true(atomic_load(&sim->ring.vcpus[0].full_exits) > 0);
        assert_int_equal(overflows(sim), 0);
        sim_free(sim);
    }
}

static void test_pvm_batches_past_the_end_lose_no_page(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct sim *sim = sim_new(seed % 2 ? 256 : 4096, true, seed);
        run(sim, 400, 1100, 4);
        assert_true(overflows(sim) > 0 || sim->size > 256);
        sim_free(sim);
    }
}

/* After an overflow a page whose entry was lost stays writable under real
 * KVM's rules: only re-protecting every page catches its next write. */
static void test_protected_pages_past_the_end_lose_no_page(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct sim *sim = sim_new(256, false, seed);
        run(sim, 400, 1100, 4);
        assert_true(overflows(sim) > 0);
        sim_free(sim);
    }
}

/* Pushes landing between the harvest and its reset write over entries
 * already taken: KVM's reset then stops short of what was marked. */
static void test_pushes_during_the_reset_lose_no_page(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct sim *sim = sim_new(256, true, seed);
        sim->writes_during_reset = 200;
        run(sim, 200, 300, 2);
        assert_true(overflows(sim) > 0);
        sim_free(sim);
    }
}

/* Overwritten entries that a reset then cleared leave a gap: positions KVM
 * counts as filled, with nothing in them. Entries pushed after it must
 * still reach the engine, at the very next sync, with the vCPU stopped
 * and its ring below the soft limit (so no ring-full exit clears it). */
static void test_entries_behind_a_gap_are_taken(void **state)
{
    (void)state;
    unsigned behind = 0;

    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct sim *sim = sim_new(256, true, seed);
        guest_writes(sim, 500 + seed * 10);   /* past the end, twice over */
        enter_guest(sim);
        check(sim);
        assert_true(overflows(sim) > 0);
        uint32_t room = sim->soft_limit - (sim->dirty_index - sim->reset_index);
        guest_writes(sim, room > 8 ? 8 : room - 1);
        behind += room - 1 > 8 ? 8 : room - 1;
        check(sim);
        sim_free(sim);
    }
    assert_true(behind > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kvm_within_its_limit_gives_exactly_the_written_pages),
        cmocka_unit_test(test_pvm_batches_past_the_end_lose_no_page),
        cmocka_unit_test(test_protected_pages_past_the_end_lose_no_page),
        cmocka_unit_test(test_pushes_during_the_reset_lose_no_page),
        cmocka_unit_test(test_entries_behind_a_gap_are_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
