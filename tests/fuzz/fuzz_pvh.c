/* Fuzzes the PVH loader: a vmlinux is input from outside. A parsed image is
 * also loaded into a small RAM block, whose guard bytes must stay untouched:
 * the loader must never write outside guest RAM. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pvh.h"
#include "vcpu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE (2u << 20)
#define GUARD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t memory[GUARD + RAM_SIZE + GUARD];
    struct ram_block block = { "ram-below-4g", memory + GUARD, RAM_SIZE, 4096, 0, -1, 0 };
    struct pvh_image image;
    struct vcpu_entry entry;

    if (pvh_parse(data, size, &image, NULL) < 0)
        return 0;
    memset(memory, 0x5a, GUARD);
    memset(memory + GUARD + RAM_SIZE, 0x5a, GUARD);
    pvh_load(&image, &block, 1, "console=ttyS0", 2, &entry, NULL);
    for (size_t i = 0; i < GUARD; i++)
        if (memory[i] != 0x5a || memory[GUARD + RAM_SIZE + i] != 0x5a)
            abort();   /* a write outside the block: the bug this target hunts */
    return 0;
}
