/* Guest RAM: one host mapping cut into the RAM blocks the engine sees. */
#ifndef GODWIT_VM_MEMORY_H
#define GODWIT_VM_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/cpr.h>
#include <godwit/error.h>
#include <godwit/ram.h>

#include "options.h"

/* Guest-physical layout: RAM below 3 GiB at 0; the rest from 4 GiB up, so
 * the 32-bit PCI hole stays free as on a PC. */
#define MEMORY_LOW_LIMIT (3ULL << 30)
#define MEMORY_HIGH_BASE (4ULL << 30)
#define MEMORY_PAGE_SIZE 4096ULL

struct guest_memory {
    uint8_t *host;                /* one mapping of all guest RAM */
    uint64_t size;
    struct ram_block blocks[2];
    unsigned nr_blocks;
    int fd;                       /* the --mem-path file or --memfd, or -1 */
    int high_fd;                  /* adopted: block 1's own descriptor, or -1 */
    bool created_file;            /* --mem-path did not exist: remove it on failure */
    bool fresh;                   /* made by this run (a new file or memfd): all zero */
    bool adopted;                 /* mapped from a local update's cpr channel */
    bool released;                /* handed to the new process: nothing mapped */
    const char *path;
};

/* Refuses sizes the host cannot hold, naming the range allowed. */
int memory_check_size(uint64_t size, struct gw_error *err);

/* Maps guest RAM as config asks (anonymous or --mem-path, --mem-prealloc). */
int memory_init(struct guest_memory *mem, const struct vm_config *config,
                struct gw_error *err);

/* A local update's destination: maps the source's RAM from the descriptors
 * passed on the cpr channel (taken from passed), as --memory lays it out;
 * refuses a layout that differs, naming both sizes. No copy, no zeroing, no
 * prefault. */
int memory_adopt(struct guest_memory *mem, const struct vm_config *config,
                 struct cpr_memory *passed, struct gw_error *err);

/* A local update's source, once the new process owns the guest: unmaps
 * guest RAM (the range stays reserved, inaccessible) and closes its file. */
void memory_release(struct guest_memory *mem);

/* Unmaps; on_failure also removes a --mem-path file this run created. */
void memory_cleanup(struct guest_memory *mem, bool on_failure);

#endif
