/* Auto-converge's trigger and the cpu throttle's steps
 * (src/migration/migration_throttle.h), as QEMU's: a period of a second or
 * more counts when the guest dirtied more than threshold % of what was sent
 * in it; the second period that counts steps the throttle up (initial, then
 * increment, capped; tailslow no further than needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "migration/migration_throttle.h"

#define SECOND 1000000ULL
#define MiB (1ULL << 20)

/* A period of `us` in which `sent` bytes went out and `dirty` were dirtied,
 * ending at one sync; returns whether the trigger fired. */
static bool period(struct throttle_trigger *trigger, uint64_t *now, uint64_t *transferred,
                   uint64_t us, uint64_t sent, uint64_t dirty, struct throttle_period *out)
{
    *now += us;
    *transferred += sent;
    return throttle_trigger_sync(trigger, *now, *transferred, dirty, 50, out);
}

static void test_the_second_high_period_fires(void **state)
{
    struct throttle_trigger trigger;
    struct throttle_period p = { 0 };
    uint64_t now = 5 * SECOND, transferred = 123;

    (void)state;
    throttle_trigger_start(&trigger, now, transferred);
    assert_false(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 51 * MiB, &p));
    assert_int_equal(p.dirty_bytes, 51 * MiB);
    assert_int_equal(p.threshold_bytes, 50 * MiB);
    assert_true(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 60 * MiB, &p));
    assert_int_equal(p.dirty_bytes, 60 * MiB);
    /* then it counts from none again */
    assert_false(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 60 * MiB, &p));
    assert_true(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 60 * MiB, &p));
}

/* As QEMU's dirty_rate_high_cnt: a period under the threshold does not
 * reset the count, and one exactly at it does not count. */
static void test_high_periods_need_not_be_in_a_row(void **state)
{
    struct throttle_trigger trigger;
    struct throttle_period p;
    uint64_t now = 0, transferred = 0;

    (void)state;
    throttle_trigger_start(&trigger, now, transferred);
    assert_false(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 80 * MiB, &p));
    assert_false(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 10 * MiB, &p));
    assert_false(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 50 * MiB, &p));
    assert_true(period(&trigger, &now, &transferred, SECOND, 100 * MiB, 80 * MiB, &p));
}

/* Syncs less than a second apart add up into one period. */
static void test_syncs_within_a_second_make_one_period(void **state)
{
    struct throttle_trigger trigger;
    struct throttle_period p = { 0 };
    uint64_t now = 0, transferred = 0;

    (void)state;
    throttle_trigger_start(&trigger, now, transferred);
    for (int i = 0; i < 3; i++)
        assert_false(period(&trigger, &now, &transferred, 300000, 10 * MiB, 20 * MiB, &p));
    assert_int_equal(p.dirty_bytes, 0);   /* not evaluated yet */
    assert_false(period(&trigger, &now, &transferred, 100000, 10 * MiB, 20 * MiB, &p));
    assert_int_equal(p.dirty_bytes, 80 * MiB);
    assert_int_equal(p.threshold_bytes, 20 * MiB);
    assert_true(period(&trigger, &now, &transferred, 2 * SECOND, 10 * MiB, 6 * MiB, &p));
}

static void test_threshold_of_huge_transfers_does_not_overflow(void **state)
{
    struct throttle_trigger trigger;
    struct throttle_period p;
    uint64_t now = 0, transferred = 0, sent = UINT64_MAX / 2;

    (void)state;
    throttle_trigger_start(&trigger, now, transferred);
    now += SECOND;
    assert_false(throttle_trigger_sync(&trigger, now, sent, 1, 100, &p));
    assert_true(p.threshold_bytes == sent);   /* 100 % of it, whole */
}

static void test_steps_are_initial_then_increment_up_to_99(void **state)
{
    const struct cpu_throttle_params params = { .initial = 20, .increment = 10, .max = 99 };
    const struct throttle_period p = { .dirty_bytes = 100, .threshold_bytes = 50 };
    const unsigned expected[] = { 20, 30, 40, 50, 60, 70, 80, 90, 99, 99 };
    unsigned now = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        now = cpu_throttle_step(now, &params, &p);
        assert_int_equal(now, expected[i]);
    }
}

static void test_max_cpu_throttle_caps_every_step(void **state)
{
    const struct cpu_throttle_params params = { .initial = 20, .increment = 10, .max = 35 };
    const struct cpu_throttle_params low = { .initial = 50, .increment = 10, .max = 30 };
    const struct throttle_period p = { .dirty_bytes = 100, .threshold_bytes = 50 };

    (void)state;
    assert_int_equal(cpu_throttle_step(0, &params, &p), 20);
    assert_int_equal(cpu_throttle_step(30, &params, &p), 35);
    assert_int_equal(cpu_throttle_step(35, &params, &p), 35);
    assert_int_equal(cpu_throttle_step(0, &low, &p), 30);
}

/* tailslow: from 50 % asleep, a period at 1.1 times the threshold would
 * have met it with the guest running 50 / 1.1 = 45.45 %: 5 more, not 10;
 * at twice the threshold, 25 would be needed and 10 is the most. */
static void test_tailslow_steps_no_further_than_needed(void **state)
{
    const struct cpu_throttle_params params = { .initial = 20, .increment = 10, .max = 99,
                                                .tailslow = true };
    const struct throttle_period near = { .dirty_bytes = 110, .threshold_bytes = 100 };
    const struct throttle_period far = { .dirty_bytes = 200, .threshold_bytes = 100 };
    const struct throttle_period just = { .dirty_bytes = 1000001, .threshold_bytes = 1000000 };

    (void)state;
    assert_int_equal(cpu_throttle_step(0, &params, &near), 20);   /* the first step is initial */
    assert_int_equal(cpu_throttle_step(50, &params, &near), 55);
    assert_int_equal(cpu_throttle_step(50, &params, &far), 60);
    assert_int_equal(cpu_throttle_step(50, &params, &just), 51);  /* never less than 1 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_second_high_period_fires),
        cmocka_unit_test(test_high_periods_need_not_be_in_a_row),
        cmocka_unit_test(test_syncs_within_a_second_make_one_period),
        cmocka_unit_test(test_threshold_of_huge_transfers_does_not_overflow),
        cmocka_unit_test(test_steps_are_initial_then_increment_up_to_99),
        cmocka_unit_test(test_max_cpu_throttle_caps_every_step),
        cmocka_unit_test(test_tailslow_steps_no_further_than_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
