/* The downtime estimate's device part (src/migration/migration_estimate.c):
 * device state in the switchover as a pipeline of pieces, saved here,
 * carried by its lanes, loaded there:
 *  - one lane carries it at one measured lane's rate, more lanes share it,
 *    but never beat the link;
 *  - the stages share the CPUs: on one core they add up, on many the
 *    slowest decides, plus one piece through the others;
 *  - the lanes are those the migration gives device state (the main
 *    channel, dedicated channels, or the RAM channels), and RAM's share of
 *    the estimate is its own bytes over the link's rate;
 *  - nothing to send costs nothing, and no figure overflows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "migration/migration_estimate.h"

#define MiB (1ull << 20)
#define MS 1000ull

/* 400 MiB over a link measured at 2 GiB/s on two lanes: 195 ms on the
 * wire; the devices save it in 80 ms and load it in as long. */
static struct device_pipeline accel(unsigned lanes, unsigned cores)
{
    return (struct device_pipeline){
        .bytes = 400 * MiB, .save_us = 80 * MS, .load_us = 80 * MS, .lanes = lanes,
        .measured_lanes = 2, .cores = cores, .bandwidth = 2048 * MiB,
    };
}

/* One piece (16 MiB) of 400 MiB is 1/25 of each stage. */
static uint64_t through_the_others(uint64_t others_us)
{
    return others_us / 25;
}

static void test_one_lane_carries_it_at_one_measured_lanes_rate(void **state)
{
    struct device_pipeline pipeline = accel(1, 2);
    uint64_t lane = 2 * 400 * MiB * 1000000 / (2048 * MiB);   /* twice the wire's 195 ms */

    (void)state;
    /* the lane is the slowest stage; save and load fill and drain */
    assert_int_equal(device_pipeline_us(&pipeline), lane + through_the_others(160 * MS));
}

static void test_two_lanes_are_held_to_the_cpus_share(void **state)
{
    struct device_pipeline one = accel(1, 2), two = accel(2, 2);
    uint64_t wire = 400 * MiB * 1000000 / (2048 * MiB);

    (void)state;
    /* each lane is faster than the save and the load together on 2 cores:
     * the wire and half of their work, but for the first piece's save and
     * the last one's load, which run alone */
    uint64_t expected = wire + through_the_others(160 * MS) +
                        (160 * MS - through_the_others(160 * MS)) / 2;
    assert_true(device_pipeline_us(&two) + 1 >= expected);
    assert_true(device_pipeline_us(&two) <= expected + 1);
    assert_true(device_pipeline_us(&two) < device_pipeline_us(&one));
}

static void test_more_lanes_than_measured_never_beat_the_link(void **state)
{
    struct device_pipeline two = accel(2, 64), eight = accel(8, 64);
    uint64_t wire = 400 * MiB * 1000000 / (2048 * MiB);

    (void)state;
    assert_int_equal(device_pipeline_us(&eight), device_pipeline_us(&two));
    assert_true(device_pipeline_us(&eight) >= wire);
}

static void test_on_one_core_the_stages_add_up(void **state)
{
    struct device_pipeline pipeline = accel(2, 1);
    uint64_t wire = 400 * MiB * 1000000 / (2048 * MiB);
    uint64_t us = device_pipeline_us(&pipeline);

    (void)state;
    assert_true(us + 1 >= wire + 160 * MS);
    assert_true(us <= wire + 160 * MS + 1);
}

static void test_on_many_cores_the_slowest_stage_decides(void **state)
{
    struct device_pipeline pipeline = accel(2, 1024);
    uint64_t wire = 400 * MiB * 1000000 / (2048 * MiB);
    uint64_t us = device_pipeline_us(&pipeline);

    (void)state;
    assert_true(us + 1 >= wire + through_the_others(160 * MS));
    assert_true(us <= wire + through_the_others(160 * MS) + 160 * MS / 1024 + 1);
    /* a device slower than the link: its save is the slowest stage */
    pipeline.save_us = pipeline.load_us = 2000 * MS;
    us = device_pipeline_us(&pipeline);
    assert_true(us >= 2000 * MS);
    assert_true(us <= 2000 * MS + through_the_others(2000 * MS + wire) + 1);
}

static void test_a_small_state_is_one_piece_through_every_stage(void **state)
{
    struct device_pipeline pipeline = {
        .bytes = 4096, .save_us = 10, .load_us = 10, .lanes = 1, .measured_lanes = 1,
        .cores = 2, .bandwidth = 4096 * 1000,   /* 1 ms on the wire */
    };

    (void)state;
    assert_int_equal(device_pipeline_us(&pipeline), 1000 + 10 + 10);
}

static void test_nothing_to_send_costs_nothing_and_nothing_overflows(void **state)
{
    struct device_pipeline pipeline = accel(2, 2);

    (void)state;
    pipeline.bytes = 0;
    assert_int_equal(device_pipeline_us(&pipeline), 0);
    pipeline = (struct device_pipeline){ .bytes = UINT64_MAX, .save_us = UINT64_MAX,
                                         .load_us = UINT64_MAX };   /* zeros: taken as 1 */
    assert_int_equal(device_pipeline_us(&pipeline), 1ull << 62);
    pipeline = accel(2, 2);
    pipeline.save_us = 0;   /* a device never timed: its bytes still cross */
    pipeline.load_us = 0;
    assert_true(device_pipeline_us(&pipeline) >= 400 * MiB * 1000000 / (2048 * MiB));
}

/* --- the estimate, with the lanes the migration gives device state --- */

static struct migration *new_migration(struct migration_config config)
{
    struct migration *migration = calloc(1, sizeof(*migration));

    assert_non_null(migration);
    migration->channel.fd = -1;   /* no socket: no round trip, nothing in flight */
    migration->config = config;
    atomic_store(&migration->stats.link_bandwidth, 2048 * MiB);
    return migration;
}

static uint64_t device_part(struct migration_config config, const struct device_pending *devices,
                            struct downtime_estimate *estimate)
{
    struct migration *migration = new_migration(config);
    struct estimate_input input = { .ram_bytes = 64 * MiB, .devices = devices, .cores = 2 };

    migration_estimate_downtime(migration, estimate, &input);
    free(migration);
    return estimate->parts[ESTIMATE_DEVICE];
}

static void test_the_lanes_are_those_device_state_takes(void **state)
{
    struct device_pending devices = {
        .stopcopy = 400 * MiB,
        .multifd = { .bytes = 400 * MiB, .save_us = 80 * MS, .pieces = true },
        .main = { .pieces = true },
    };
    struct migration_config main_only = { .multifd = 1, .channels = 2 };
    struct migration_config mixed = { .multifd = 1, .channels = 2, .channel_header = 1 };
    struct migration_config dedicated_1 = mixed, dedicated_8 = mixed;
    struct downtime_estimate estimate;
    struct device_pipeline one = accel(1, 2), two = accel(2, 2), three = accel(3, 2);

    (void)state;
    dedicated_1.device_channels = 1;
    dedicated_8.device_channels = 8;
    /* without channel headers the state goes on the main channel: one lane */
    assert_int_equal(device_part(main_only, &devices, &estimate), device_pipeline_us(&one));
    assert_int_equal(estimate.device_lanes, 1);
    assert_int_equal(estimate.cores, 2);
    assert_int_equal(estimate.device_save_us, 80 * MS);
    /* RAM's own bytes over the link; the device's are in the device part */
    assert_int_equal(estimate.parts[ESTIMATE_TRANSFER], 64 * MiB * 1000000 / (2048 * MiB));
    assert_int_equal(estimate.bytes, 464 * MiB);
    assert_int_equal(device_part(mixed, &devices, &estimate), device_pipeline_us(&two));
    assert_int_equal(estimate.device_lanes, 2);
    assert_int_equal(device_part(dedicated_1, &devices, &estimate), device_pipeline_us(&one));
    /* pieces: at most three on the lanes at once */
    assert_int_equal(device_part(dedicated_8, &devices, &estimate), device_pipeline_us(&three));
    assert_int_equal(estimate.device_lanes, 3);
}

static void test_main_channel_state_follows_the_multifd_state(void **state)
{
    struct device_pending devices = {
        .stopcopy = 432 * MiB,
        .multifd = { .bytes = 400 * MiB, .save_us = 80 * MS, .pieces = true },
        .main = { .bytes = 32 * MiB, .save_us = 10 * MS },
    };
    struct migration_config dedicated_2 = { .multifd = 1, .channels = 2, .channel_header = 1,
                                            .device_channels = 2 };
    struct downtime_estimate estimate;
    struct device_pipeline lanes = accel(2, 2), main = accel(1, 2);

    (void)state;
    main.bytes = 32 * MiB;
    main.save_us = main.load_us = 10 * MS;
    assert_int_equal(device_part(dedicated_2, &devices, &estimate),
                     device_pipeline_us(&lanes) + device_pipeline_us(&main));
    assert_int_equal(estimate.device_save_us, 90 * MS);
}

static void test_avail_switchover_bandwidth_covers_the_devices(void **state)
{
    struct device_pending devices = {
        .stopcopy = 400 * MiB, .multifd = { .bytes = 400 * MiB, .save_us = 80 * MS },
    };
    struct migration *migration = new_migration((struct migration_config){ .multifd = 1 });
    struct estimate_input input = { .ram_bytes = 112 * MiB, .devices = &devices, .cores = 2 };
    struct downtime_estimate estimate;

    (void)state;
    migration->params.avail_switchover_bandwidth = 512 * MiB;
    migration_estimate_downtime(migration, &estimate, &input);
    assert_int_equal(estimate.parts[ESTIMATE_TRANSFER], 1000 * MS);   /* 512 MiB at 512 MiB/s */
    assert_int_equal(estimate.parts[ESTIMATE_DEVICE], 0);
    /* what a device part would have been reckoned from is still said */
    assert_int_equal(estimate.device_lanes, 1);
    assert_int_equal(estimate.device_save_us, 80 * MS);
    assert_int_equal(estimate.cores, 2);
    free(migration);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_lane_carries_it_at_one_measured_lanes_rate),
        cmocka_unit_test(test_two_lanes_are_held_to_the_cpus_share),
        cmocka_unit_test(test_more_lanes_than_measured_never_beat_the_link),
        cmocka_unit_test(test_on_one_core_the_stages_add_up),
        cmocka_unit_test(test_on_many_cores_the_slowest_stage_decides),
        cmocka_unit_test(test_a_small_state_is_one_piece_through_every_stage),
        cmocka_unit_test(test_nothing_to_send_costs_nothing_and_nothing_overflows),
        cmocka_unit_test(test_the_lanes_are_those_device_state_takes),
        cmocka_unit_test(test_main_channel_state_follows_the_multifd_state),
        cmocka_unit_test(test_avail_switchover_bandwidth_covers_the_devices),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
