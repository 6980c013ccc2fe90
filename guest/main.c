/* Mode logic of the test guest: checks how it was booted, works out the page
 * range from the memory size and the command line, then idles or dirties
 * pages forever, as fast as it can or at rate= MiB/s (pace.c). It reports
 * only through COM1 and the debug-exit port. */
#include "guest.h"

#define PAGE_SIZE 4096u
#define MIB ((uint64_t)1 << 20)
#define ADDRESS_LIMIT ((uint64_t)1 << 32)   /* paging is off: nothing above is reachable */

/* Defined by guest.ld; they bound code, data, IDT and stack alike. */
extern const char __image_start[], __image_end[];

struct page_range {
    uint32_t first;
    uint32_t pages;             /* at least one */
};

static _Noreturn void guest_exit(int code)
{
    outb(DEBUG_EXIT_PORT, (uint8_t)code);
    for (;;)
        halt();                 /* reached only when there is no debug-exit device */
}

static uint64_t memory_size(const struct multiboot_info *mbi)
{
    uint64_t size = MIB + (uint64_t)mbi->mem_upper * 1024;

    return size < ADDRESS_LIMIT ? size : ADDRESS_LIMIT;
}

static bool overlaps_image(uint64_t start, uint64_t end)
{
    return start < (uintptr_t)__image_end && end > (uintptr_t)__image_start;
}

/* Checks the unrounded bounds first: once end is known to lie within memory,
 * rounding start up can no longer wrap around to a small address. */
static bool choose_pages(const struct guest_config *cfg, uint64_t mem_size,
                         struct page_range *range)
{
    uint64_t start, end;

    if (cfg->end > mem_size || cfg->start >= cfg->end)
        return false;
    start = (cfg->start + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1);
    end = cfg->end & ~(uint64_t)(PAGE_SIZE - 1);
    if (start >= end || overlaps_image(start, end))
        return false;
    range->first = (uint32_t)start;
    range->pages = (uint32_t)((end - start) / PAGE_SIZE);
    return true;
}

/* The page loops are asm so that the compiler cannot make them longer: under
 * PVM, KVM emulates every guest instruction, at about 0.5 us each and 1.2 us
 * for an incb. Counts run down instead of comparing addresses so that a range
 * ending at 4 GiB cannot wrap. */
static void zero_pages(struct page_range range)
{
    __asm__ volatile("1:\n\t"
                     "movb $0, (%0)\n\t"
                     "add %2, %0\n\t"
                     "dec %1\n\t"
                     "jnz 1b"
                     : "+r"(range.first), "+r"(range.pages)
                     : "i"(PAGE_SIZE)
                     : "memory", "cc");
}

/* Eight pages per iteration: 11 instructions where a page at a time would
 * take 32. Under PVM that brings a pass over 99 MiB from 72 ms to 35 ms. */
static void increment_blocks_of_8(uint32_t first, uint32_t blocks)
{
    __asm__ volatile("1:\n\t"
                     "incb (%0)\n\t"
                     "incb 0x1000(%0)\n\t"
                     "incb 0x2000(%0)\n\t"
                     "incb 0x3000(%0)\n\t"
                     "incb 0x4000(%0)\n\t"
                     "incb 0x5000(%0)\n\t"
                     "incb 0x6000(%0)\n\t"
                     "incb 0x7000(%0)\n\t"
                     "add %2, %0\n\t"
                     "dec %1\n\t"
                     "jnz 1b"
                     : "+r"(first), "+r"(blocks)
                     : "i"(8 * PAGE_SIZE)
                     : "memory", "cc");
}

static void increment_singles(uint32_t first, uint32_t pages)
{
    __asm__ volatile("1:\n\t"
                     "incb (%0)\n\t"
                     "add %2, %0\n\t"
                     "dec %1\n\t"
                     "jnz 1b"
                     : "+r"(first), "+r"(pages)
                     : "i"(PAGE_SIZE)
                     : "memory", "cc");
}

static void increment_pages(struct page_range range)
{
    uint32_t blocks = range.pages / 8;
    uint32_t singles = range.pages % 8;

    if (blocks != 0)
        increment_blocks_of_8(range.first, blocks);
    if (singles != 0)
        increment_singles(range.first + blocks * 8 * PAGE_SIZE, singles);
}

/* Pages are touched in address order, so a snapshot taken mid-pass shows one
 * step at most: the pass's current page is one less than the page before. */
static _Noreturn void dirty_forever(struct page_range range)
{
    zero_pages(range);
    serial_putc('A');
    for (;;) {
        increment_pages(range);
        serial_putc('B');
    }
}

/* dirty_forever at rate MiB/s: the same passes in the same order, cut into
 * chunks with a look at the clock after each. */
static _Noreturn void dirty_paced_forever(struct page_range range, struct pace *pace)
{
    zero_pages(range);
    serial_putc('A');
    pace_restart(pace);
    for (;;) {
        struct page_range chunk = { range.first, 0 };
        uint32_t left = range.pages;

        while (left != 0) {
            chunk.pages = left < pace->chunk_pages ? left : pace->chunk_pages;
            increment_pages(chunk);
            pace_after(pace, chunk.pages);
            chunk.first += chunk.pages * PAGE_SIZE;
            left -= chunk.pages;
        }
        serial_putc('B');
    }
}

static _Noreturn void idle_forever(void)
{
    serial_putc('A');
    for (;;)
        halt();                 /* an NMI prints 'N' and returns here */
}

_Noreturn void guest_main(uint32_t magic, const struct multiboot_info *mbi)
{
    struct guest_config cfg = { .mode = MODE_DIRTY, .start = MIB };
    struct page_range range;
    uint64_t mem_size;
    int err;

    serial_init();
    if (magic != MB_BOOT_MAGIC || !(mbi->flags & MB_INFO_MEMORY))
        guest_exit(EXIT_BAD_BOOT);
    mem_size = memory_size(mbi);
    cfg.end = mem_size - MIB;
    if (mbi->flags & MB_INFO_CMDLINE) {
        err = cmdline_parse((const char *)(uintptr_t)mbi->cmdline, &cfg);
        if (err)
            guest_exit(err);
    }
    if (!choose_pages(&cfg, mem_size, &range))
        guest_exit(EXIT_BAD_RANGE);
    if (cfg.mode == MODE_IDLE)
        idle_forever();
    if (cfg.rate != 0) {
        struct pace pace;
        uint64_t tsc_hz = tsc_calibrate();

        if (tsc_hz == 0)
            guest_exit(EXIT_NO_CLOCK);
        pace_init(&pace, tsc_hz, cfg.rate);
        dirty_paced_forever(range, &pace);
    }
    dirty_forever(range);
}
