/* The engine times every device save (device_measure at start-up, then
 * each migration), and the downtime estimate adds the devices' time on
 * their stop-copy bytes at that rate: save here, load on the destination
 * reckoned by the estimate (vmstate_pending gives the save time, by the
 * way the state travels). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "vmstate/vmstate_internal.h"

#define STATE_BYTES (1u << 20)
#define PIECE_BYTES (512u << 10)

struct fake {
    unsigned saves, pieces, setups;
    uint64_t stopcopy;     /* what query_pending says */
};

static void pause_a_little(void)
{
    struct timespec pause = { 0, 2 * 1000000 };   /* so that a save takes time */

    nanosleep(&pause, NULL);
}

static int fill(struct gw_buffer *out, size_t len)
{
    static uint8_t bytes[STATE_BYTES];

    pause_a_little();
    return gw_buffer_append(out, bytes, len);
}

static int save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct fake *fake = opaque;

    (void)err;
    fake->saves++;
    return fill(out, STATE_BYTES);
}

static int load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                struct gw_error *err)
{
    (void)opaque, (void)data, (void)len, (void)version, (void)err;
    return 0;
}

static void pending(void *opaque, uint64_t *precopy, uint64_t *stopcopy)
{
    struct fake *fake = opaque;

    *precopy = 0;
    *stopcopy = fake->stopcopy;
}

static int save_setup(void *opaque, struct gw_error *err)
{
    struct fake *fake = opaque;

    (void)err;
    fake->setups++;
    return 0;
}

static int save_piece(void *opaque, struct gw_buffer *out, size_t max, bool *last,
                      struct gw_error *err)
{
    struct fake *fake = opaque;

    (void)err;
    fake->pieces++;
    *last = false;
    return fill(out, max < PIECE_BYTES ? max : PIECE_BYTES);
}

static int load_piece(void *opaque, uint32_t index, const uint8_t *data, size_t len,
                      uint32_t version, struct gw_error *err)
{
    (void)opaque, (void)index, (void)data, (void)len, (void)version, (void)err;
    return 0;
}

static int load_finish(void *opaque, uint32_t pieces, uint32_t version, struct gw_error *err)
{
    (void)opaque, (void)pieces, (void)version, (void)err;
    return 0;
}

static struct device *registered(struct device_registry *registry, const struct device_ops *ops,
                                 struct fake *fake)
{
    struct gw_error err = { 0 };

    assert_int_equal(device_register(registry, "dev0", 0, 1, ops, fake, &err), 0);
    return &registry->devices[registry->count - 1];
}

static void test_measure_times_a_whole_save(void **state)
{
    static const struct device_ops ops = { .save = save, .load = load };
    struct device_registry registry = { .count = 0 };
    struct fake fake = { 0 };
    struct device *device = registered(&registry, &ops, &fake);
    struct gw_error err = { 0 };

    (void)state;
    assert_int_equal(device_measure(&registry, &err), 0);
    assert_int_equal(fake.saves, 1);
    assert_int_equal(device->saved_size, STATE_BYTES);
    assert_int_equal(device->timed_bytes, STATE_BYTES);
    assert_true(device->timed_us >= 2000);   /* the save paused 2 ms */
}

/* A device that reports its size saves one piece, not its whole state. */
static void test_measure_times_one_piece_of_a_device_that_reports_its_size(void **state)
{
    static const struct device_ops ops = {
        .save = save, .load = load, .query_pending = pending, .save_setup = save_setup,
        .save_piece = save_piece, .load_piece = load_piece, .load_finish = load_finish,
    };
    struct device_registry registry = { .count = 0 };
    struct fake fake = { .stopcopy = 100u << 20 };
    struct device *device = registered(&registry, &ops, &fake);
    struct gw_error err = { 0 };

    (void)state;
    assert_int_equal(device_measure(&registry, &err), 0);
    assert_int_equal(fake.saves, 0);
    assert_int_equal(fake.pieces, 1);
    assert_int_equal(device->timed_bytes, PIECE_BYTES);
    assert_true(device->timed_us >= 2000);
}

/* Without save_setup nothing would start its next stop-copy over: it is
 * not saved at all, and the estimate has no device time for it. */
static void test_a_piece_device_without_save_setup_is_not_timed(void **state)
{
    static const struct device_ops ops = {
        .save = save, .load = load, .query_pending = pending,
        .save_piece = save_piece, .load_piece = load_piece, .load_finish = load_finish,
    };
    struct device_registry registry = { .count = 0 };
    struct fake fake = { .stopcopy = 100u << 20 };
    struct device *device = registered(&registry, &ops, &fake);
    struct gw_error err = { 0 };
    struct device_pending pending;

    (void)state;
    assert_int_equal(device_measure(&registry, &err), 0);
    assert_int_equal(fake.saves + fake.pieces, 0);
    assert_int_equal(device->timed_bytes, 0);
    assert_int_equal(vmstate_pending(&registry, &pending), 100u << 20);
    assert_int_equal(pending.main.save_us + pending.multifd.save_us, 0);
}

/* The stop-copy bytes' save time at the rate timed, by the way they
 * travel: a device that takes multifd, and one that does not. */
static void test_pending_save_time_at_the_timed_rate_by_route(void **state)
{
    static const struct device_ops ops = { .save = save, .load = load, .query_pending = pending };
    static const struct device_ops multifd_ops = {
        .save = save, .load = load, .query_pending = pending, .multifd = true,
        .save_piece = save_piece, .load_piece = load_piece, .load_finish = load_finish,
    };
    struct device_registry registry = { .count = 0 };
    struct fake fake = { .stopcopy = 64u << 20 }, multifd_fake = { .stopcopy = 32u << 20 };
    struct device *device = registered(&registry, &ops, &fake);
    struct device *multifd = NULL;
    struct gw_error err = { 0 };
    struct device_pending pending;

    (void)state;
    assert_int_equal(device_register(&registry, "multifd", 0, 1, &multifd_ops, &multifd_fake,
                                     &err), 0);
    multifd = device_find(&registry, "multifd", 0);
    device->timed_bytes = multifd->timed_bytes = 16u << 20;
    device->timed_us = 4000;                 /* 4 ms per 16 MiB */
    multifd->timed_us = 2000;
    assert_int_equal(vmstate_pending(&registry, &pending), 96u << 20);
    assert_int_equal(pending.stopcopy, 96u << 20);
    assert_int_equal(pending.main.bytes, 64u << 20);
    assert_int_equal(pending.main.save_us, 16000);
    assert_false(pending.main.pieces);       /* it saves whole */
    assert_int_equal(pending.multifd.bytes, 32u << 20);
    assert_int_equal(pending.multifd.save_us, 4000);
    assert_true(pending.multifd.pieces);
}

/* A timing of a few bytes (a call's cost, not a rate) does not replace one
 * of many; it is taken when there is nothing better. */
static void test_small_timings_do_not_replace_a_rate(void **state)
{
    struct device device = { .timed_bytes = 0 };

    (void)state;
    vmstate_record_timing(&device, 4096, 50);
    assert_int_equal(device.timed_bytes, 4096);
    vmstate_record_timing(&device, 16u << 20, 4000);
    assert_int_equal(device.timed_bytes, 16u << 20);
    vmstate_record_timing(&device, 4096, 50);
    assert_int_equal(device.timed_bytes, 16u << 20);
    assert_int_equal(device.timed_us, 4000);
    vmstate_record_timing(&device, 8u << 20, 0);   /* too fast for the clock: 1 us */
    assert_int_equal(device.timed_us, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_measure_times_a_whole_save),
        cmocka_unit_test(test_measure_times_one_piece_of_a_device_that_reports_its_size),
        cmocka_unit_test(test_a_piece_device_without_save_setup_is_not_timed),
        cmocka_unit_test(test_pending_save_time_at_the_timed_rate_by_route),
        cmocka_unit_test(test_small_timings_do_not_replace_a_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
