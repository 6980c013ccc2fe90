/* RAM block checks and guest-physical translation at the edges. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <godwit/ram.h>

static uint8_t low[64 * 4096], high[16 * 4096];

static const struct ram_block blocks[] = {
    { "low", low, sizeof(low), 4096, 0, -1, 0 },
    { "high", high, sizeof(high), 4096, 1ULL << 32, -1, 0 },
};

static void test_translate_inside_blocks(void **state)
{
    (void)state;
    assert_ptr_equal(ram_blocks_translate(blocks, 2, 0, sizeof(low), NULL), low);
    assert_ptr_equal(ram_blocks_translate(blocks, 2, 4096, 1, NULL), low + 4096);
    assert_ptr_equal(ram_blocks_translate(blocks, 2, (1ULL << 32) + sizeof(high) - 1, 1, NULL),
                     high + sizeof(high) - 1);
}

static void test_translate_refuses_ranges_that_leave_a_block(void **state)
{
    struct gw_error err;

    (void)state;
    assert_null(ram_blocks_translate(blocks, 2, 0, sizeof(low) + 1, &err));
    assert_int_equal(err.code, -EFAULT);
    assert_null(ram_blocks_translate(blocks, 2, sizeof(low), 1, NULL));
    assert_null(ram_blocks_translate(blocks, 2, (1ULL << 32) - 1, 2, NULL));
    assert_null(ram_blocks_translate(blocks, 2, 4096, UINT64_MAX, NULL));
    assert_null(ram_blocks_translate(blocks, 2, UINT64_MAX, 1, NULL));
}

static void test_validate(void **state)
{
    struct ram_block block = { "ok", low, sizeof(low), 4096, 0, -1, 0 };

    (void)state;
    assert_int_equal(ram_block_validate(&block, NULL), 0);
    block.page_size = 3000;
    assert_int_equal(ram_block_validate(&block, NULL), -EINVAL);
    block.page_size = 4096;
    block.size = 100;
    assert_int_equal(ram_block_validate(&block, NULL), -EINVAL);
    block.size = 4096;
    block.gpa = UINT64_MAX - 4095;
    assert_int_equal(ram_block_validate(&block, NULL), -EINVAL);
    block.gpa = 0;
    block.name[0] = '\0';
    assert_int_equal(ram_block_validate(&block, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_translate_inside_blocks),
        cmocka_unit_test(test_translate_refuses_ranges_that_leave_a_block),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
