/* Size parsing: what people write is read exactly, anything else refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <godwit/size.h>

static void test_suffixes_are_binary(void **state)
{
    uint64_t bytes;

    (void)state;
    assert_int_equal(size_parse("4096", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 4096);
    assert_int_equal(size_parse("64M", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 64ULL << 20);
    assert_int_equal(size_parse("2g", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 2ULL << 30);
    assert_int_equal(size_parse("3K", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 3072);
    assert_int_equal(size_parse("1T", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 1ULL << 40);
    assert_int_equal(size_parse("512B", 1, &bytes, NULL), 0);
    assert_int_equal(bytes, 512);
}

static void test_bare_number_uses_default_unit(void **state)
{
    uint64_t bytes;

    (void)state;
    assert_int_equal(size_parse("64", SIZE_MiB, &bytes, NULL), 0);
    assert_int_equal(bytes, 64ULL << 20);
}

static void test_junk_is_refused_with_a_sentence(void **state)
{
    static const char *const bad[] = { "", "M", "-1", "+5", "1.5G", "64MB", "64 M", "0x10",
                                       "lots", "64X", " 64" };
    struct gw_error err;
    uint64_t bytes = 7;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_error_clear(&err);
        assert_int_equal(size_parse(bad[i], 1, &bytes, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "64M"));
        assert_int_equal(bytes, 7);
    }
}

static void test_overflow_is_refused(void **state)
{
    struct gw_error err;
    uint64_t bytes;

    (void)state;
    assert_int_equal(size_parse("18446744073709551615", 1, &bytes, &err), 0);
    assert_int_equal(bytes, UINT64_MAX);
    assert_int_equal(size_parse("18446744073709551616", 1, &bytes, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "too large"));
    assert_int_equal(size_parse("17179869184G", 1, &bytes, &err), -EINVAL);
    assert_int_equal(size_parse("99999999999999999999999", 1, &bytes, &err), -EINVAL);
}

static void test_format(void **state)
{
    char buf[32];

    (void)state;
    assert_string_equal(size_format(512, buf, sizeof(buf)), "512 B");
    assert_string_equal(size_format(64ULL << 20, buf, sizeof(buf)), "64 MiB");
    assert_string_equal(size_format(3ULL << 29, buf, sizeof(buf)), "1.5 GiB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suffixes_are_binary),
        cmocka_unit_test(test_bare_number_uses_default_unit),
        cmocka_unit_test(test_junk_is_refused_with_a_sentence),
        cmocka_unit_test(test_overflow_is_refused),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
