/* Byte sizes as people write them: "64M", "1G", "4096". Binary units. */
#ifndef GODWIT_SIZE_H
#define GODWIT_SIZE_H

#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>

#define SIZE_KiB (1ULL << 10)
#define SIZE_MiB (1ULL << 20)
#define SIZE_GiB (1ULL << 30)
#define SIZE_TiB (1ULL << 40)

/* Parses a decimal integer with an optional suffix B, K, M, G or T (either
 * case, binary multiples). A bare number is multiplied by default_unit (QEMU's
 * -m reads "64" as 64 MiB; pass 1 for bytes). Rejects signs, junk, empty
 * strings and overflow past UINT64_MAX with -EINVAL and a sentence. */
int size_parse(const char *text, uint64_t default_unit, uint64_t *bytes,
               struct gw_error *err);

/* Writes "1.5 GiB", "64 MiB", "512 B" into buf; returns buf. */
char *size_format(uint64_t bytes, char *buf, size_t len);

#endif
