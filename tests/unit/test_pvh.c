/* The PVH loader and the MP table against a good, truncated and hostile
 * ELF64 vmlinux, and what they write into guest RAM. */
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

#include "pvh.h"
#include "vcpu.h"

#define IMAGE_SIZE 0x1400
#define NOTE_OFFSET 0x200
#define SEGMENT_OFFSET 0x1000
#define LOAD_ADDR 0x100000u
#define RAM_SIZE (4u << 20)

/* Two program headers: one PT_LOAD (0x400 file bytes, 0x2000 in memory) at
 * 1 MiB, one PT_NOTE holding an unrelated note and then Xen's entry note. */
static void make_kernel(uint8_t *image, uint32_t desc_size)
{
    Elf64_Ehdr ehdr = {
        .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
        .e_phoff = sizeof(Elf64_Ehdr), .e_ehsize = sizeof(Elf64_Ehdr),
        .e_phentsize = sizeof(Elf64_Phdr), .e_phnum = 2,
    };
    Elf64_Nhdr other = { .n_namesz = 4, .n_descsz = 4, .n_type = 1 };
    Elf64_Nhdr xen = { .n_namesz = 4, .n_descsz = desc_size, .n_type = 18 };
    uint64_t entry = LOAD_ADDR + 0x20;
    size_t at = NOTE_OFFSET;
    Elf64_Phdr phdrs[2] = {
        { .p_type = PT_LOAD, .p_offset = SEGMENT_OFFSET, .p_vaddr = 0xffffffff81000000ull,
          .p_paddr = LOAD_ADDR, .p_filesz = 0x400, .p_memsz = 0x2000 },
        { .p_type = PT_NOTE, .p_offset = NOTE_OFFSET,
          .p_filesz = 2 * sizeof(Elf64_Nhdr) + 8 + 4 + 4 + desc_size },
    };

    memset(image, 0, IMAGE_SIZE);
    memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS64;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    memcpy(image, &ehdr, sizeof(ehdr));
    memcpy(image + sizeof(ehdr), phdrs, sizeof(phdrs));
    memcpy(image + at, &other, sizeof(other));
    memcpy(image + at + sizeof(other), "GNU", 4);
    at += sizeof(other) + 8;
    memcpy(image + at, &xen, sizeof(xen));
    memcpy(image + at + sizeof(xen), "Xen", 4);
    memcpy(image + at + sizeof(xen) + 4, &entry, desc_size);
    memset(image + SEGMENT_OFFSET, 0xcd, 0x400);
}

static Elf64_Phdr *phdr_of(uint8_t *image, unsigned i)
{
    return (Elf64_Phdr *)(image + sizeof(Elf64_Ehdr)) + i;
}

static void expect_refused(const uint8_t *image, size_t size, const char *phrase)
{
    struct pvh_image parsed;
    struct gw_error err = { 0 };

    assert_int_equal(pvh_parse(image, size, &parsed, &err), -ENOEXEC);
    if (!strstr(err.msg, phrase))
        fail_msg("message '%s' lacks '%s'", err.msg, phrase);
}

static void test_good_kernel_parses(void **state)
{
    uint8_t image[IMAGE_SIZE];
    struct pvh_image parsed;

    (void)state;
    for (uint32_t desc = 4; desc <= 8; desc += 4) {
        make_kernel(image, desc);
        assert_true(pvh_is_elf64(image, sizeof(image)));
        assert_int_equal(pvh_parse(image, sizeof(image), &parsed, NULL), 0);
        assert_int_equal(parsed.entry, LOAD_ADDR + 0x20);
        assert_int_equal(parsed.nr_segments, 1);
        assert_int_equal(parsed.segments[0].paddr, LOAD_ADDR);
    }
}

static void test_every_truncation_is_refused(void **state)
{
    uint8_t image[IMAGE_SIZE];
    struct pvh_image parsed;

    (void)state;
    make_kernel(image, 8);
    for (size_t size = 0; size < SEGMENT_OFFSET + 0x400; size++)
        assert_int_equal(pvh_parse(image, size, &parsed, NULL), -ENOEXEC);
    expect_refused(image, sizeof(Elf64_Ehdr) + 10, "truncated inside its program headers");
    expect_refused(image, NOTE_OFFSET + 8, "past the end of the file");
}

static void test_missing_or_bad_note(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image, 8);
    image[NOTE_OFFSET + sizeof(Elf64_Nhdr) + 8 + sizeof(Elf64_Nhdr)] = 'Y';   /* "Yen" */
    expect_refused(image, sizeof(image), "no PVH entry note");
    make_kernel(image, 6);
    expect_refused(image, sizeof(image), "not 4 or 8");
    make_kernel(image, 8);
    ((Elf64_Nhdr *)(image + NOTE_OFFSET))->n_descsz = 0xfffffff0u;   /* huge: runs past */
    expect_refused(image, sizeof(image), "runs past its segment");
    make_kernel(image, 8);
    memset(image + NOTE_OFFSET + 2 * sizeof(Elf64_Nhdr) + 12, 0, 8);   /* entry 0 */
    expect_refused(image, sizeof(image), "outside every loadable segment");
}

static void test_hostile_headers(void **state)
{
    uint8_t image[IMAGE_SIZE];

    (void)state;
    make_kernel(image, 8);
    phdr_of(image, 0)->p_paddr = 0x1000;   /* over the boot data below 1 MiB */
    expect_refused(image, sizeof(image), "not between 1 MiB and 4 GiB");
    make_kernel(image, 8);
    phdr_of(image, 0)->p_memsz = 0xffffffffull;   /* past 4 GiB */
    expect_refused(image, sizeof(image), "not between 1 MiB and 4 GiB");
    make_kernel(image, 8);
    phdr_of(image, 0)->p_filesz = 0x4000;
    expect_refused(image, sizeof(image), "more file bytes than memory bytes");
    make_kernel(image, 8);
    image[EI_CLASS] = ELFCLASS32;
    expect_refused(image, sizeof(image), "not an ELF64 file");
    make_kernel(image, 8);
    ((Elf64_Ehdr *)image)->e_machine = EM_386;
    expect_refused(image, sizeof(image), "not a little-endian x86-64 executable");
}

static uint8_t sum(const uint8_t *data, size_t len)
{
    uint8_t s = 0;

    while (len--)
        s += *data++;
    return s;
}

static void test_load_writes_boot_data(void **state)
{
    static uint8_t ram[RAM_SIZE];
    struct ram_block block = { "ram-below-4g", ram, RAM_SIZE, 4096, 0, -1, 0 };
    uint8_t image[IMAGE_SIZE];
    struct pvh_image parsed;
    struct vcpu_entry entry;
    uint32_t start[2], memmap_entries;
    uint64_t cmdline_addr, memmap_addr, map[3];

    (void)state;
    make_kernel(image, 8);
    assert_int_equal(pvh_parse(image, sizeof(image), &parsed, NULL), 0);
    assert_int_equal(pvh_load(&parsed, &block, 1, "console=ttyS0", 2, &entry, NULL), 0);
    assert_int_equal(entry.eip, LOAD_ADDR + 0x20);
    assert_int_equal(ram[LOAD_ADDR + 0x3ff], 0xcd);
    assert_int_equal(ram[LOAD_ADDR + 0x400], 0);   /* bss */
    memcpy(start, ram + entry.ebx, sizeof(start));
    assert_int_equal(start[0], 0x336ec578u);
    assert_int_equal(start[1], 1);
    memcpy(&cmdline_addr, ram + entry.ebx + 24, 8);
    assert_string_equal((char *)ram + cmdline_addr, "console=ttyS0");
    memcpy(&memmap_addr, ram + entry.ebx + 40, 8);
    memcpy(&memmap_entries, ram + entry.ebx + 48, 4);
    assert_int_equal(memmap_entries, 4);
    memcpy(map, ram + memmap_addr + 3 * 24, sizeof(map));   /* the fourth: RAM from 1 MiB */
    assert_int_equal(map[0], 0x100000);
    assert_int_equal(map[1], RAM_SIZE - 0x100000);
    /* The MP floating pointer and its table, checksums right, 2 CPUs. */
    assert_memory_equal(ram + 0x9fc00, "_MP_", 4);
    assert_int_equal(sum(ram + 0x9fc00, 16), 0);
    uint32_t config;
    uint16_t length, count;
    memcpy(&config, ram + 0x9fc04, 4);
    assert_memory_equal(ram + config, "PCMP", 4);
    memcpy(&length, ram + config + 4, 2);
    memcpy(&count, ram + config + 34, 2);
    assert_int_equal(sum(ram + config, length), 0);
    assert_int_equal(count, 2 + 2 + 16 + 2);
    assert_int_equal(ram[config + 44], 0);        /* processor entry */
    assert_int_equal(ram[config + 44 + 3], 3);    /* enabled, boot CPU */
    assert_int_equal(ram[config + 64 + 3], 1);    /* enabled */
}

static void test_load_refuses_what_does_not_fit(void **state)
{
    static uint8_t ram[RAM_SIZE];
    struct ram_block small = { "ram-below-4g", ram, LOAD_ADDR + 0x1000, 4096, 0, -1, 0 };
    struct ram_block block = { "ram-below-4g", ram, RAM_SIZE, 4096, 0, -1, 0 };
    char cmdline[PVH_CMDLINE_MAX + 1];
    uint8_t image[IMAGE_SIZE];
    struct pvh_image parsed;
    struct vcpu_entry entry;
    struct gw_error err = { 0 };

    (void)state;
    make_kernel(image, 8);
    assert_int_equal(pvh_parse(image, sizeof(image), &parsed, NULL), 0);
    assert_int_equal(pvh_load(&parsed, &small, 1, "", 1, &entry, &err), -EFAULT);
    assert_non_null(strstr(err.msg, "kernel segment"));
    memset(cmdline, 'a', sizeof(cmdline) - 1);
    cmdline[sizeof(cmdline) - 1] = 0;
    assert_int_equal(pvh_load(&parsed, &block, 1, cmdline, 1, &entry, &err), -E2BIG);
    assert_int_equal(pvh_load(&parsed, &block, 1, "", 9, &entry, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "1 to 8 vCPUs"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_kernel_parses),
        cmocka_unit_test(test_every_truncation_is_refused),
        cmocka_unit_test(test_missing_or_bad_note),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_load_writes_boot_data),
        cmocka_unit_test(test_load_refuses_what_does_not_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
