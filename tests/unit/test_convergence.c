/* The convergence verdict and what is left (src/migration/migration_convergence.c),
 * driven with the figures of passes as the source thread would give them:
 *  - each verdict and its reason: fits, shrinks, a small fast set, a set
 *    that never fits, a pass that did not shrink;
 *  - never an ETA for a migration that does not converge, and an ETA that
 *    covers the passes the trend still predicts;
 *  - what is left never falls to nothing while the guest dirties pages,
 *    and never exceeds what the guest can have dirtied again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "migration/migration_internal.h"

#define PAGE 4096u
#define MiB (1ull << 20)
#define RAM (512 * MiB)

static struct ram_block block = { .name = "pc.ram", .size = RAM, .page_size = PAGE };

static struct migration *new_migration(void)
{
    struct migration *migration = calloc(1, sizeof(*migration));

    assert_non_null(migration);
    migration->host.blocks = &block;
    migration->host.nr_blocks = 1;
    return migration;
}

/* A pass of a guest at dirty bytes/s over a link of link bytes/s: what it
 * sent, what it left dirty, and the downtime the source would expect. */
static struct pass_figures pass(uint64_t sent, uint64_t left, uint64_t link, uint64_t limit_ms)
{
    struct pass_figures figures = {
        .dirty_pages = left / PAGE, .sent_bytes = sent, .left_bytes = left,
        .time_us = sent * 1000000 / link, .limit_us = limit_ms * 1000,
        .switchover_bandwidth = link,
    };
    figures.expected_downtime_us = left * 1000000 / link;
    return figures;
}

static void after(struct migration *migration, struct pass_figures figures, uint64_t link)
{
    atomic_store(&migration->stats.bandwidth, link);
    convergence_after_pass(migration, &figures);
}

static const char *state_of(json_t *info)
{
    return json_string_value(json_object_get(info, "state"));
}

static const char *reason_of(json_t *info)
{
    return json_string_value(json_object_get(info, "reason"));
}

static void nothing_before_the_first_pass_ends(void **state)
{
    struct migration *migration = new_migration();

    (void)state;
    assert_null(convergence_info(migration, true));
    free(migration);
}

/* The guest: 39 MiB rewritten at 1.1 GB/s over 42 MB/s. */
static void a_set_dirtied_faster_than_the_link_that_does_not_fit(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 42 * 1000 * 1000;
    json_t *info;

    (void)state;
    atomic_store(&migration->stats.convergence.sampled_rate, 1100ull * 1000 * 1000);
    after(migration, pass(100 * MiB, 39 * MiB, link, 300), link);
    info = convergence_info(migration, true);
    assert_string_equal(state_of(info), "not-converging");
    assert_null(json_object_get(info, "eta"));
    assert_non_null(strstr(reason_of(info), "not converging: the guest dirties 1100 MB/s, "
                                            "the link moves 42.0 MB/s: the 39 MiB it keeps "
                                            "dirty would take 974 ms stopped, above "
                                            "downtime-limit 300 ms; raise max-bandwidth or "
                                            "downtime-limit, or turn on auto-converge or "
                                            "dirty-limit"));
    json_decref(info);
    free(migration);
}

static void a_fast_set_small_enough_to_fit_converges(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 42 * 1000 * 1000;
    struct pass_figures figures;
    json_t *info;

    (void)state;
    atomic_store(&migration->stats.convergence.sampled_rate, 1100ull * 1000 * 1000);
    /* 1 MiB dirty, 64 MiB of device precopy state still to drain. */
    atomic_store(&migration->stats.device_stopcopy_pending, 64 * MiB);
    atomic_store(&migration->stats.device_precopy_pending, 64 * MiB);
    figures = pass(100 * MiB, 65 * MiB, link, 300);
    figures.dirty_pages = MiB / PAGE;
    after(migration, figures, link);
    info = convergence_info(migration, true);
    assert_string_equal(state_of(info), "converging");
    assert_non_null(strstr(reason_of(info), "more than the link moves"));
    assert_non_null(json_object_get(info, "eta"));
    json_decref(info);
    free(migration);
}

static void a_pass_that_does_not_shrink_what_is_left_is_not_converging(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 100 * 1000 * 1000;
    json_t *info;

    (void)state;
    /* No sample: the pass's own count says 20 MB/s, below the link. */
    after(migration, pass(200 * MiB, 100 * MiB, link, 300), link);
    after(migration, pass(100 * MiB, 95 * MiB, link, 300), link);
    info = convergence_info(migration, true);
    assert_string_equal(state_of(info), "not-converging");
    assert_non_null(strstr(reason_of(info), "the last pass left 95 MiB to send, no less than "
                                            "the pass before (100 MiB)"));
    assert_null(json_object_get(info, "eta"));
    json_decref(info);
    free(migration);
}

/* Each pass leaves half of the one before: after L left, the passes still
 * to come send L (1/2 + 1/4 + ...) = L: the ETA covers at least that. */
static void a_shrinking_migration_has_an_eta_that_covers_the_passes_to_come(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 100 * 1000 * 1000;
    double pass_s, left_s;
    json_t *info;

    (void)state;
    atomic_store(&migration->stats.convergence.sampled_rate, link / 2);
    after(migration, pass(200 * MiB, 100 * MiB, link, 300), link);
    after(migration, pass(100 * MiB, 50 * MiB, link, 300), link);
    convergence_pass_begin(migration, 50 * MiB / PAGE, true);
    info = convergence_info(migration, true);
    assert_string_equal(state_of(info), "converging");
    assert_non_null(strstr(reason_of(info), "the last pass left 50% of what was left before"));
    pass_s = 50.0 * MiB / link;     /* the pass running now */
    left_s = 50.0 * MiB / link;     /* every pass after it */
    assert_true(json_integer_value(json_object_get(info, "eta")) >= (pass_s + left_s) * 1000);
    /* ...and not wildly more: the trend of 50%, the limit as downtime. */
    assert_true(json_integer_value(json_object_get(info, "eta")) <=
                (pass_s + left_s) * 1000 + 300 + 50);
    json_decref(info);
    free(migration);
}

static void what_fits_the_limit_converges(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 100 * 1000 * 1000;
    json_t *info;

    (void)state;
    after(migration, pass(200 * MiB, 10 * MiB, link, 300), link);
    info = convergence_info(migration, true);
    assert_string_equal(state_of(info), "converging");
    assert_non_null(strstr(reason_of(info), "within downtime-limit 300 ms"));
    /* Once over, the verdict stays and the ETA goes. */
    json_decref(info);
    info = convergence_info(migration, false);
    assert_string_equal(state_of(info), "converging");
    assert_null(json_object_get(info, "eta"));
    json_decref(info);
    free(migration);
}

/* What is left as the pass goes: the pass's pages not written yet, plus
 * what the guest dirtied since the sync, which stands in for the pages it
 * already sent; never 0 at the pass's end. */
static void what_is_left_never_runs_down_to_nothing(void **state)
{
    struct migration *migration = new_migration();
    uint64_t link = 42 * 1000 * 1000, pages = 39 * MiB / PAGE, left;

    (void)state;
    atomic_store(&migration->stats.convergence.sampled_rate, 1100ull * 1000 * 1000);
    after(migration, pass(100 * MiB, 39 * MiB, link, 300), link);
    convergence_pass_begin(migration, pages, true);
    usleep(10000);   /* 11 MB dirtied at 1.1 GB/s */
    /* Half the pass written, then all of it. */
    atomic_store(&migration->stats.normal_pages, pages / 2);
    left = convergence_ram_remaining(migration, true);
    assert_true(left > 0 && left <= 39 * MiB);
    atomic_store(&migration->stats.normal_pages, pages);
    left = convergence_ram_remaining(migration, true);
    assert_true(left >= 10 * 1000 * 1000 && left <= 39 * MiB);
    /* Stopped, nothing more is dirtied: what is left is what is unsent. */
    assert_int_equal(convergence_ram_remaining(migration, false), 0);
    free(migration);
}

static void before_the_first_sync_what_is_left_is_what_is_unsent(void **state)
{
    struct migration *migration = new_migration();

    (void)state;
    convergence_pass_begin(migration, RAM / PAGE, false);
    atomic_store(&migration->stats.zero_pages, RAM / PAGE / 4);
    assert_int_equal(convergence_ram_remaining(migration, true), RAM / 4 * 3);
    free(migration);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_before_the_first_pass_ends),
        cmocka_unit_test(a_set_dirtied_faster_than_the_link_that_does_not_fit),
        cmocka_unit_test(a_fast_set_small_enough_to_fit_converges),
        cmocka_unit_test(a_pass_that_does_not_shrink_what_is_left_is_not_converging),
        cmocka_unit_test(a_shrinking_migration_has_an_eta_that_covers_the_passes_to_come),
        cmocka_unit_test(what_fits_the_limit_converges),
        cmocka_unit_test(what_is_left_never_runs_down_to_nothing),
        cmocka_unit_test(before_the_first_sync_what_is_left_is_what_is_unsent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
