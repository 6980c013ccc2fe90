/* device_register refuses an ops table the engine could not use, naming
 * the missing op, and takes every consistent one. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <godwit/device.h>

static int save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    (void)opaque, (void)out, (void)err;
    return 0;
}

static int load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                struct gw_error *err)
{
    (void)opaque, (void)data, (void)len, (void)version, (void)err;
    return 0;
}

static void pending(void *opaque, uint64_t *precopy, uint64_t *stopcopy)
{
    (void)opaque;
    *precopy = *stopcopy = 0;
}

static int save_precopy(void *opaque, struct gw_buffer *out, uint64_t max, struct gw_error *err)
{
    (void)opaque, (void)out, (void)max, (void)err;
    return 0;
}

static int save_piece(void *opaque, struct gw_buffer *out, size_t max, bool *last,
                      struct gw_error *err)
{
    (void)opaque, (void)out, (void)max, (void)err;
    *last = true;
    return 0;
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

/* Registration fails with -EINVAL and a sentence holding every word. */
static void refused(const struct device_ops *ops, const char *word1, const char *word2)
{
    struct device_registry registry = { .count = 0 };
    struct gw_error err = { 0 };

    assert_int_equal(device_register(&registry, "dev0", 0, 1, ops, NULL, &err), -EINVAL);
    assert_int_equal(registry.count, 0);
    assert_non_null(strstr(err.msg, "'dev0'"));
    assert_non_null(strstr(err.msg, word1));
    if (word2)
        assert_non_null(strstr(err.msg, word2));
}

static void accepted(const struct device_ops *ops)
{
    struct device_registry registry = { .count = 0 };
    struct gw_error err = { 0 };

    assert_int_equal(device_register(&registry, "dev0", 0, 1, ops, NULL, &err), 0);
    assert_int_equal(registry.count, 1);
}

static void test_missing_save_or_load_is_refused(void **state)
{
    (void)state;
    refused(&(struct device_ops){ .load = load }, "no save", NULL);
    refused(&(struct device_ops){ .save = save }, "no load", NULL);
    refused(NULL, "no ops", NULL);
}

static void test_piece_ops_go_together(void **state)
{
    (void)state;
    refused(&(struct device_ops){ .save = save, .load = load, .save_piece = save_piece },
            "save_piece", "load_piece");
    refused(&(struct device_ops){ .save = save, .load = load, .save_piece = save_piece,
                                  .load_piece = load_piece }, "load_finish", NULL);
    refused(&(struct device_ops){ .save = save, .load = load, .load_finish = load_finish },
            "load_finish", "save_piece");
}

static void test_precopy_ops_go_together(void **state)
{
    (void)state;
    refused(&(struct device_ops){ .save = save, .load = load, .save_precopy = save_precopy },
            "save_precopy", "load_precopy");
}

static void test_a_piece_device_without_save_needs_query_pending(void **state)
{
    (void)state;
    refused(&(struct device_ops){ .save_piece = save_piece, .load_piece = load_piece,
                                  .load_finish = load_finish }, "query_pending", NULL);
    accepted(&(struct device_ops){ .save_piece = save_piece, .load_piece = load_piece,
                                   .load_finish = load_finish, .query_pending = pending });
}

static void test_consistent_tables_are_taken(void **state)
{
    (void)state;
    accepted(&(struct device_ops){ .save = save, .load = load });
    accepted(&(struct device_ops){ .save = save, .load = load, .save_precopy = save_precopy,
                                   .load_precopy = load, .multifd = true });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_save_or_load_is_refused),
        cmocka_unit_test(test_piece_ops_go_together),
        cmocka_unit_test(test_precopy_ops_go_together),
        cmocka_unit_test(test_a_piece_device_without_save_needs_query_pending),
        cmocka_unit_test(test_consistent_tables_are_taken),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
