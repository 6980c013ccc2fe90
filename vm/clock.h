/* The host's monotonic clock in microseconds: the one clock godwit-vm's
 * timings and the engine's (migration_now_us) share. */
#ifndef GODWIT_VM_CLOCK_H
#define GODWIT_VM_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

#endif
