/* The multiboot loader against good, truncated, 64-bit, header-less and
 * hostile ELF files, and what it writes into guest RAM. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "multiboot.h"
#include "vcpu.h"

#define IMAGE_SIZE 0x1200
#define HEADER_OFFSET 0x100
#define SEGMENT_OFFSET 0x1000
#define LOAD_ADDR 0x10000u

/* A minimal kernel: one PT_LOAD of 0x200 file bytes and 0x3000 memory bytes. */
static void make_kernel(uint8_t *image)
{
    Elf32_Ehdr ehdr = {
        .e_type = ET_EXEC, .e_machine = EM_386, .e_version = EV_CURRENT,
        .e_entry = LOAD_ADDR + 0x10, .e_phoff = sizeof(Elf32_Ehdr),
        .e_ehsize = sizeof(Elf32_Ehdr), .e_phentsize = sizeof(Elf32_Phdr), .e_phnum = 1,
    };
    Elf32_Phdr phdr = {
        .p_type = PT_LOAD, .p_offset = SEGMENT_OFFSET, .p_vaddr = LOAD_ADDR,
        .p_paddr = LOAD_ADDR, .p_filesz = 0x200, .p_memsz = 0x3000, .p_flags = PF_R | PF_X,
    };
    uint32_t header[3] = { MULTIBOOT_HEADER_MAGIC, 0x3, 0 };

    memset(image, 0, IMAGE_SIZE);
    memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS32;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    ehdr.e_ident[EI_VERSION] = EV_CURRENT;
    memcpy(image, &ehdr, sizeof(ehdr));
    memcpy(image + sizeof(ehdr), &phdr, sizeof(phdr));
    header[2] = -(header[0] + header[1]);
    memcpy(image + HEADER_OFFSET, header, sizeof(header));
    memset(image + SEGMENT_OFFSET, 0xab, 0x200);
}

static Elf32_Phdr *phdr_of(uint8_t *image)
{
    return (Elf32_Phdr *)(image + sizeof(Elf32_Ehdr));
}

static Elf32_Ehdr *ehdr_of(uint8_t *image)
{
    return (Elf32_Ehdr *)image;
}

static void expect_refused(const uint8_t *image, size_t size, const char *phrase)
{
    struct multiboot_image parsed;
    struct gw_error err = { 0 };

    assert_int_equal(multiboot_parse(image, size, &parsed, &err), -ENOEXEC);
    if (!strstr(err.msg, phrase))
        fail_msg("message '%s' lacks '%s'", err.msg, phrase);
}

static void test_good_kernel_parses(void **state)
{
    uint8_t image[IMAGE_SIZE];
    struct multiboot_image parsed;

    (void)state;
    make_kernel(image);
    assert_int_equal(multiboot_parse(image, sizeof(image), &parsed, NULL), 0);
    assert_int_equal(parsed.entry, LOAD_ADDR + 0x10);
    assert_int_equal(parsed.nr_segments, 1);
    assert_int_equal(parsed.load_end, LOAD_ADDR + 0x3000);
}

static void test_every_truncation_is_refused(void **state)
{
    uint8_t image[IMAGE_SIZE];
    struct multiboot_image parsed;

    (void)state;
    make_kernel(image);
    /* Cut anywhere before the segment's last byte: never accepted. */
    for (size_t size = 0; size < SEGMENT_OFFSET + 0x200; size++)
        assert_int_equal(multiboot_parse(image, size, &parsed, NULL), -ENOEXEC);
    expect_refused(image, 40, "truncated inside its ELF header");
    expect_refused(image, sizeof(Elf32_Ehdr) + 10, "truncated inside its program headers");
    expect_refused(image, SEGMENT_OFFSET + 0x100, "past the end of the file");
}

static void test_64_bit_elf_is_refused(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image);
    image[EI_CLASS] = ELFCLASS64;
    expect_refused(image, sizeof(image), "64-bit ELF");
}

static void test_headerless_elf_is_refused(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image);
    memset(image + HEADER_OFFSET, 0, 12);
    expect_refused(image, sizeof(image), "no multiboot v1 header");
    make_kernel(image);
    image[HEADER_OFFSET + 8] ^= 1;   /* checksum off by one */
    expect_refused(image, sizeof(image), "no multiboot v1 header");
}

static void test_not_elf_and_wrong_machine(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image);
    image[0] = 'X';
    expect_refused(image, sizeof(image), "not an ELF file");
    make_kernel(image);
    ehdr_of(image)->e_machine = EM_ARM;
    expect_refused(image, sizeof(image), "not an i386 executable");
}

static void test_hostile_headers(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image);
    phdr_of(image)->p_filesz = 0x4000;   /* more file than memory */
    expect_refused(image, sizeof(image), "more file bytes");
    make_kernel(image);
    phdr_of(image)->p_offset = 0xfffffff0;
    expect_refused(image, sizeof(image), "past the end of the file");
    make_kernel(image);
    phdr_of(image)->p_paddr = 0xffffff00;
    expect_refused(image, sizeof(image), "above 4 GiB");
    make_kernel(image);
    ehdr_of(image)->e_phnum = 0xffff;
    expect_refused(image, sizeof(image), "truncated inside its program headers");
    make_kernel(image);
    ehdr_of(image)->e_entry = 0x500000;
    expect_refused(image, sizeof(image), "entry point");
    make_kernel(image);
    phdr_of(image)->p_type = PT_NOTE;
    expect_refused(image, sizeof(image), "no loadable segment");
    make_kernel(image);
    /* A header asking for video mode information (flag 2) we cannot give. */
    uint32_t header[3] = { MULTIBOOT_HEADER_MAGIC, 0x7, -(MULTIBOOT_HEADER_MAGIC + 0x7) };
    memcpy(image + HEADER_OFFSET, header, sizeof(header));
    expect_refused(image, sizeof(image), "does not provide");
}

static void test_load_writes_segment_and_information(void **state)
{
    const uint64_t ram_size = 32 << 20;
    uint8_t image[IMAGE_SIZE];
    struct multiboot_image parsed;
    struct vcpu_entry entry;
    uint8_t *ram = malloc(ram_size);
    struct ram_block block = { "ram-below-4g", ram, ram_size, 4096, 0, -1, 0 };
    uint32_t info[22];

    (void)state;
    memset(ram, 0x55, ram_size);
    make_kernel(image);
    assert_int_equal(multiboot_parse(image, sizeof(image), &parsed, NULL), 0);
    assert_int_equal(multiboot_load(&parsed, &block, 1, "mode=idle", &entry, NULL), 0);
    assert_int_equal(entry.eax, MULTIBOOT_BOOTLOADER_MAGIC);
    assert_int_equal(entry.eip, LOAD_ADDR + 0x10);
    assert_int_equal(ram[LOAD_ADDR], 0xab);
    assert_int_equal(ram[LOAD_ADDR + 0x1ff], 0xab);
    assert_int_equal(ram[LOAD_ADDR + 0x200], 0);      /* bss zeroed */
    assert_int_equal(ram[LOAD_ADDR + 0x2fff], 0);
    assert_int_equal(entry.ebx, LOAD_ADDR + 0x3000);   /* after the kernel, page aligned */
    memcpy(info, ram + entry.ebx, sizeof(info));
    assert_int_equal(info[0] & 0x245, 0x245);          /* memory, cmdline, mmap, name */
    assert_int_equal(info[1], 639);
    assert_int_equal(info[2], (ram_size >> 10) - 1024);
    assert_string_equal((char *)ram + info[4], "mode=idle");
    assert_true(info[11] >= 4 * 24);                   /* mmap_length */
    free(ram);
}

static void test_load_refuses_a_kernel_outside_ram(void **state)
{
    uint8_t image[IMAGE_SIZE];
    struct multiboot_image parsed;
    struct vcpu_entry entry;
    static uint8_t ram[2 << 20];
    struct ram_block block = { "ram-below-4g", ram, sizeof(ram), 4096, 0, -1, 0 };
    struct gw_error err;

    (void)state;
    make_kernel(image);
    phdr_of(image)->p_paddr = 0x300000;
    ehdr_of(image)->e_entry = 0x300000;
    assert_int_equal(multiboot_parse(image, sizeof(image), &parsed, NULL), 0);
    assert_int_equal(multiboot_load(&parsed, &block, 1, "", &entry, &err), -EFAULT);
    assert_non_null(strstr(err.msg, "does not fit in guest RAM"));
}

static void test_the_real_test_guest_parses(void **state)
{
    const char *path = getenv("TESTGUEST");
    struct multiboot_image parsed;
    struct gw_error err;
    uint8_t *data;
    size_t size;

    (void)state;
    if (!path)
        skip();
    assert_int_equal(multiboot_read_file(path, &data, &size, &err), 0);
    assert_int_equal(multiboot_parse(data, size, &parsed, &err), 0);
    assert_true(parsed.load_end <= 0x100000);   /* below the memory it dirties */
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_kernel_parses),
        cmocka_unit_test(test_every_truncation_is_refused),
        cmocka_unit_test(test_64_bit_elf_is_refused),
        cmocka_unit_test(test_headerless_elf_is_refused),
        cmocka_unit_test(test_not_elf_and_wrong_machine),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_load_writes_segment_and_information),
        cmocka_unit_test(test_load_refuses_a_kernel_outside_ram),
        cmocka_unit_test(test_the_real_test_guest_parses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
