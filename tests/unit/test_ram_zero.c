/* Zero hints (src/ram/ram_zero.c): pages the source sends as zero without
 * reading them. A hint must hold for every mapping of the memory, not just
 * the one the engine looks at: a page written through another mapping and
 * sent as zero is silent corruption on the destination. Each kind of
 * memory ram.h allows is mapped here for real and asked about:
 *  - shared anonymous memory with a second mapping (mremap): never hinted;
 *  - private anonymous memory: untouched pages are zero, written ones not;
 *  - a private mapping of a file: its holes say nothing of what was written
 *    through the mapping (copy-on-write pages): never hinted;
 *  - a shared mapping of a file: holes are zero, written pages are not. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ram/ram_internal.h"

#define PAGE 4096u
#define PAGES 16u                        /* one bitmap word covers them all */
#define SIZE ((size_t)PAGES * PAGE)

static bool marked(const uint64_t *zero, unsigned page)
{
    return zero[page / 64] & (1ULL << (page % 64));
}

static struct ram_block block_at(const char *name, uint8_t *host, int fd)
{
    struct ram_block block = { .host = host, .size = SIZE, .page_size = PAGE, .fd = fd };

    strcpy(block.name, name);
    return block;
}

/* The hints for blocks[index]'s first PAGES pages, as the walker asks. */
static uint64_t find_zero(const struct ram_block *blocks, unsigned nr_blocks, unsigned index)
{
    struct ram_zero_hints hints;
    uint64_t zero[RAM_CHUNK_WORDS];

    ram_zero_hints_init(&hints, ZERO_DETECT_MULTIFD, blocks, nr_blocks);
    ram_zero_hints_find(&hints, blocks, index, 0, RAM_CHUNK_WORDS, zero);
    ram_zero_hints_free(&hints);
    for (unsigned w = 1; w < RAM_CHUNK_WORDS; w++)
        assert_int_equal(zero[w], 0);   /* past the block's end */
    return zero[0];
}

static void *map(int flags, int fd)
{
    void *host = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, flags, fd, 0);

    assert_true(host != MAP_FAILED);
    return host;
}

/* Private anonymous memory the kernel gives in 4 KiB pages, so that an
 * untouched page stays absent beside a written one. */
static uint8_t *map_private_anonymous(void)
{
    uint8_t *host = map(MAP_PRIVATE | MAP_ANONYMOUS, -1);

    madvise(host, SIZE, MADV_NOHUGEPAGE);   /* where THP is not built in: no matter */
    return host;
}

/* A file whose PAGES pages are all holes (tmpfs: SEEK_DATA answers). */
static int hole_file(void)
{
    int fd = memfd_create("godwit-test-ram-zero", MFD_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SIZE), 0);
    return fd;
}

static void skip_without_pagemap(void)
{
    if (access("/proc/self/pagemap", R_OK) != 0)
        skip();   /* no pagemap: no hints for anonymous memory at all */
}

/* (a) The defect: shared anonymous memory written only through a second
 * mapping is absent from the first one's page table, yet holds data. */
static void test_shared_anonymous_written_elsewhere_is_not_zero(void **state)
{
    uint8_t *first = map(MAP_SHARED | MAP_ANONYMOUS, -1);
    uint8_t *second = mremap(first, 0, SIZE, MREMAP_MAYMOVE);   /* the same memory again */
    uint8_t *private = map_private_anonymous();

    (void)state;
    assert_true(second != MAP_FAILED);
    assert_ptr_not_equal(second, first);
    second[3 * PAGE] = 0x5a;   /* the first mapping is never touched before the check */
    struct ram_block blocks[] = { block_at("private", private, -1),
                                  block_at("shared", first, -1) };

    uint64_t zero = find_zero(blocks, 2, 1);
    assert_false(marked(&zero, 3));
    assert_int_equal(zero, 0);   /* no page of it is hinted: every page is read */
    assert_int_equal(first[3 * PAGE], 0x5a);   /* and the page does hold data */
    /* The unsound block does not spoil the sound one beside it. */
    zero = find_zero(blocks, 2, 0);
    if (access("/proc/self/pagemap", R_OK) == 0)
        assert_int_equal(zero, (1ULL << PAGES) - 1);
    munmap(first, SIZE);
    munmap(second, SIZE);
    munmap(private, SIZE);
}

/* (b) Where it is sound the hint still works: private anonymous pages never
 * touched are zero, a written one is not. */
static void test_private_anonymous_untouched_is_zero(void **state)
{
    uint8_t *host = map_private_anonymous();
    struct ram_block block = block_at("private", host, -1);

    (void)state;
    skip_without_pagemap();
    host[5 * PAGE + 100] = 1;
    host[9 * PAGE] = 0xff;
    uint64_t zero = find_zero(&block, 1, 0);
    for (unsigned page = 0; page < PAGES; page++)
        assert_int_equal(marked(&zero, page), page != 5 && page != 9);
    munmap(host, SIZE);
}

/* A file of PAGES holes on a disk filesystem, unlinked: tmpfs (memfd)
 * would not do for a private mapping, as it fills the hole with a page of
 * zeros when a write there copies it. */
static int disk_hole_file(void)
{
    static const char *const dirs[] = { "/var/tmp", "/tmp" };
    char path[64];
    int fd = -1;

    for (unsigned i = 0; i < 2 && fd < 0; i++) {
        snprintf(path, sizeof(path), "%s/godwit-test-ram-zero-XXXXXX", dirs[i]);
        fd = mkostemp(path, O_CLOEXEC);
    }
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, (off_t)SIZE), 0);
    return fd;
}

/* (c) A private mapping of a file: a page written through it is a private
 * copy; the file still has a hole there. */
static void test_private_file_mapping_written_is_not_zero(void **state)
{
    int fd = disk_hole_file();
    uint8_t *host = map(MAP_PRIVATE, fd);
    struct ram_block block = block_at("private-file", host, fd);

    (void)state;
    host[2 * PAGE] = 7;
    /* Where the filesystem keeps the hole (ext4, xfs, btrfs do), its holes
     * say page 2 is zero: only the kind of mapping can tell them wrong. */
    if (lseek(fd, 0, SEEK_DATA) >= 0 || errno != ENXIO)
        skip();   /* no holes here: nothing would mark page 2 zero anyway */
    uint64_t zero = find_zero(&block, 1, 0);
    assert_false(marked(&zero, 2));
    assert_int_equal(zero, 0);   /* no page of it is hinted */
    munmap(host, SIZE);
    close(fd);
}

/* (d) A shared mapping of the block's file: the file is the memory, so its
 * holes are zero pages; a page written through the mapping (or through the
 * file) is data. */
static void test_shared_file_mapping_holes_are_zero(void **state)
{
    int fd = hole_file();
    uint8_t *host = map(MAP_SHARED, fd);
    struct ram_block block = block_at("shared-file", host, fd);
    const uint8_t byte = 3;

    (void)state;
    uint64_t zero = find_zero(&block, 1, 0);
    assert_int_equal(zero, (1ULL << PAGES) - 1);   /* all holes */

    host[6 * PAGE + 4095] = 9;
    zero = find_zero(&block, 1, 0);
    for (unsigned page = 0; page <= 6; page++)
        assert_int_equal(marked(&zero, page), page < 6);

    assert_int_equal(pwrite(fd, &byte, 1, 4 * PAGE), 1);   /* through the file */
    zero = find_zero(&block, 1, 0);
    assert_false(marked(&zero, 4));
    assert_false(marked(&zero, 6));
    assert_int_equal(host[4 * PAGE], 3);
    munmap(host, SIZE);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_anonymous_written_elsewhere_is_not_zero),
        cmocka_unit_test(test_private_anonymous_untouched_is_zero),
        cmocka_unit_test(test_private_file_mapping_written_is_not_zero),
        cmocka_unit_test(test_shared_file_mapping_holes_are_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
