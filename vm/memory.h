/* Guest RAM: one host mapping cut into the RAM blocks the engine sees. */
#ifndef GODWIT_VM_MEMORY_H
#define GODWIT_VM_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

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
    int fd;                       /* the --mem-path file, or -1 */
    bool created_file;            /* --mem-path did not exist: remove it on failure */
    const char *path;
};

/* Refuses sizes the host cannot hold, naming the range allowed. */
int memory_check_size(uint64_t size, struct gw_error *err);

/* Maps guest RAM as config asks (anonymous or --mem-path, --mem-prealloc). */
int memory_init(struct guest_memory *mem, const struct vm_config *config,
                struct gw_error *err);

/* Unmaps; on_failure also removes a --mem-path file this run created. */
void memory_cleanup(struct guest_memory *mem, bool on_failure);

#endif
