/* The machine's own limits for what a migration does with guest RAM,
 * measured the plain way, for bench/compare.py (compiled at run time with
 * `cc -O2`). One JSON object per line on stdout; MB = 10^6 bytes.
 *
 *   limits memcpy SIZE     memcpy between two touched SIZE buffers, best of 3
 *   limits touch SIZE      first touch of fresh anonymous memory, one write
 *                          per 4 KiB page: THP madvised (as both VMMs map guest
 *                          RAM), then 4 KiB pages (MADV_NOHUGEPAGE) while the
 *                          first mapping is still held, so both get memory
 *                          nobody touched lately ("cold" when the caller waited
 *                          first); then both again at once in new mappings
 *                          (memory the kernel has just had back: "warm")
 *   limits zeroscan SIZE   is-this-4-KiB-page-all-zero over touched zero
 *                          memory, 8 bytes at a time with an early exit, best
 *                          of 3 (what a sender does to find zero pages)
 * SIZE is in MiB. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint8_t *map_advised(size_t size, int advice)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    madvise(p, size, advice);
    return p;
}

static uint8_t *map(size_t size)
{
    return map_advised(size, MADV_HUGEPAGE);
}

static void report(const char *what, size_t size, double seconds)
{
    printf("{\"what\": \"%s\", \"bytes\": %zu, \"seconds\": %.6f, \"mbs\": %.1f}\n",
           what, size, seconds, size / seconds / 1e6);
    fflush(stdout);
}

/* Touches a new mapping, reports, and returns it (still mapped). */
static uint8_t *touch(const char *what, size_t size, int advice)
{
    uint8_t *p = map_advised(size, advice);
    double t0 = now();

    for (size_t off = 0; off < size; off += PAGE)
        p[off] = 1;
    report(what, size, now() - t0);
    return p;
}

static int page_is_zero(const uint8_t *page)
{
    const uint64_t *w = (const uint64_t *)page;

    for (unsigned i = 0; i < PAGE / 8; i += 8)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    size_t size;

    if (argc != 3) {
        fprintf(stderr, "usage: limits memcpy|touch|zeroscan SIZE_MIB\n");
        return 2;
    }
    size = strtoull(argv[2], NULL, 10) << 20;
    if (!strcmp(argv[1], "memcpy")) {
        uint8_t *a = map(size), *b = map(size);
        double best = 1e9;

        memset(a, 0x5a, size);
        memset(b, 0xa5, size);
        for (int i = 0; i < 3; i++) {
            double t0 = now();

            memcpy(b, a, size);
            t0 = now() - t0;
            best = t0 < best ? t0 : best;
        }
        if (memcmp(a, b, size))
            return 1;
        report("memcpy", size, best);
    } else if (!strcmp(argv[1], "touch")) {
        uint8_t *thp = touch("touch-cold-thp", size, MADV_HUGEPAGE);
        uint8_t *small = touch("touch-cold-4k", size, MADV_NOHUGEPAGE);

        munmap(thp, size);
        munmap(small, size);
        munmap(touch("touch-warm-thp", size, MADV_HUGEPAGE), size);
        munmap(touch("touch-warm-4k", size, MADV_NOHUGEPAGE), size);
    } else if (!strcmp(argv[1], "zeroscan")) {
        uint8_t *a = map(size);
        double best = 1e9;
        size_t zero = 0;

        memset(a, 0, size);
        for (int i = 0; i < 3; i++) {
            double t0 = now();

            zero = 0;
            for (size_t off = 0; off < size; off += PAGE)
                zero += page_is_zero(a + off);
            t0 = now() - t0;
            best = t0 < best ? t0 : best;
        }
        if (zero != size / PAGE)
            return 1;
        report("zeroscan", size, best);
    } else {
        fprintf(stderr, "limits: unknown measurement '%s'\n", argv[1]);
        return 2;
    }
    return 0;
}
