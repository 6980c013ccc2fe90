/* A time in microseconds reckoned in floating point, as a uint64_t: past
 * 2^62 us (146000 years) it means "never". The cap keeps the cast defined
 * (one beyond 2^64 is not) and leaves room for the sums and the rounding
 * to ms that follow. */
#ifndef GODWIT_UTIL_CAPPED_US_H
#define GODWIT_UTIL_CAPPED_US_H

#include <stdint.h>

#define CAPPED_US_MAX (1ULL << 62)

static inline uint64_t capped_us(double us)
{
    return us < 0x1p62 ? (uint64_t)us : CAPPED_US_MAX;
}

#endif
