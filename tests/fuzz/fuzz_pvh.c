/* Fuzzes the PVH loader: a vmlinux is input from outside. A parsed image is
 * also loaded into a small RAM block, whose guard bytes must stay untouched:
 * the loader must never write outside guest RAM. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pvh.h"
#include "vcpu.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE (2u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t memory[FUZZ_GUARD + RAM_SIZE + FUZZ_GUARD];
    struct ram_block block = { "ram-below-4g", memory + FUZZ_GUARD, RAM_SIZE, 4096, 0, -1, 0 };
    struct pvh_image image;
    struct vcpu_entry entry;

    if (pvh_parse(data, size, &image, NULL) < 0)
        return 0;
    fuzz_guards_set(memory, RAM_SIZE);
    pvh_load(&image, &block, 1, "console=ttyS0", 2, &entry, NULL);
    fuzz_guards_check(memory, RAM_SIZE);
    return 0;
}
