/* The multiboot v1 loader: ELF32 kernels only. Parsing is separate from
 * loading so the checks can be tested and fuzzed without a VM. */
#ifndef GODWIT_VM_MULTIBOOT_H
#define GODWIT_VM_MULTIBOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/ram.h>

#define MULTIBOOT_HEADER_MAGIC 0x1badb002u
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2badb002u
#define MULTIBOOT_SEARCH_LIMIT 8192
#define MULTIBOOT_KERNEL_MAX (64u << 20)
#define MULTIBOOT_CMDLINE_MAX 4096
#define MULTIBOOT_MAX_SEGMENTS 16

struct multiboot_segment {
    uint32_t paddr;
    uint32_t file_offset;
    uint32_t file_size;
    uint32_t mem_size;
};

struct multiboot_image {
    const uint8_t *data;
    size_t size;
    uint32_t header_flags;
    uint32_t entry;
    struct multiboot_segment segments[MULTIBOOT_MAX_SEGMENTS];
    unsigned nr_segments;
    uint32_t load_end;    /* first byte after the highest segment */
};

/* Checks data as a multiboot v1 ELF32 kernel; image points into data. */
int multiboot_parse(const uint8_t *data, size_t size, struct multiboot_image *image,
                    struct gw_error *err);

/* Copies the segments into guest RAM, builds the multiboot information
 * (memory sizes, command line, memory map, loader name) after the kernel,
 * and returns the entry registers. Every write is checked against blocks. */
struct vcpu_entry;
int multiboot_load(const struct multiboot_image *image, const struct ram_block *blocks,
                   size_t nr_blocks, const char *cmdline, struct vcpu_entry *entry,
                   struct gw_error *err);

/* Shared with the PVH loader (pvh.c): whether an address lies in a
 * segment; the host address of [gpa, gpa + len) in guest RAM or NULL, with
 * err saying `what` does not fit; every segment copied, its bss zeroed,
 * each checked against the blocks first. */
bool boot_segments_contain(const struct multiboot_segment *segments, unsigned nr_segments,
                           uint32_t address);
void *boot_guest_range(const struct ram_block *blocks, size_t nr_blocks, uint64_t gpa,
                       uint64_t len, const char *what, struct gw_error *err);
int boot_copy_segments(const uint8_t *data, const struct multiboot_segment *segments,
                       unsigned nr_segments, const struct ram_block *blocks, size_t nr_blocks,
                       struct gw_error *err);

/* Reads a kernel file (at most MULTIBOOT_KERNEL_MAX) into a new buffer. */
int multiboot_read_file(const char *path, uint8_t **data, size_t *size, struct gw_error *err);

#endif
