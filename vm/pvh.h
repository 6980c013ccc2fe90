/* The PVH loader: a 64-bit Linux vmlinux entered in 32-bit protected mode
 * through its XEN_ELFNOTE_PHYS32_ENTRY note, with an hvm_start_info (command
 * line, memory map) and an MP table for the LAPICs and the IOAPIC. Parsing is
 * separate from loading so the checks can be tested and fuzzed without a VM. */
#ifndef GODWIT_VM_PVH_H
#define GODWIT_VM_PVH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/ram.h>

#include "multiboot.h"

#define PVH_MAX_SEGMENTS 16
#define PVH_CMDLINE_MAX 4096
#define PVH_MAX_VCPUS 8

struct pvh_image {
    const uint8_t *data;
    size_t size;
    uint32_t entry;       /* guest-physical, from the note */
    struct multiboot_segment segments[PVH_MAX_SEGMENTS];   /* by physical address */
    unsigned nr_segments;
};

/* Whether data looks like an ELF64 file (then only pvh_parse may take it). */
bool pvh_is_elf64(const uint8_t *data, size_t size);

/* Checks data as an x86-64 ELF executable with a PVH entry note. */
int pvh_parse(const uint8_t *data, size_t size, struct pvh_image *image, struct gw_error *err);

/* Copies the segments into guest RAM, writes hvm_start_info, the command
 * line, the memory map and the MP table (nr_vcpus LAPICs, one IOAPIC) below
 * 1 MiB, and returns the entry registers (EBX: the start info). */
struct vcpu_entry;
int pvh_load(const struct pvh_image *image, const struct ram_block *blocks, size_t nr_blocks,
             const char *cmdline, unsigned nr_vcpus, struct vcpu_entry *entry,
             struct gw_error *err);

/* Writes the MP floating pointer and configuration table at gpa (mptable.c). */
int mptable_write(const struct ram_block *blocks, size_t nr_blocks, uint64_t gpa,
                  unsigned nr_vcpus, struct gw_error *err);

#endif
