/* Shared declarations of the test guest: the ports and exit codes that form
 * its contract with the test harness, the multiboot info it reads, and the
 * port-I/O helpers. Included by entry.S too, so C-only parts are guarded. */
#ifndef GODWIT_GUEST_H
#define GODWIT_GUEST_H

#define DEBUG_EXIT_PORT 0x501   /* isa-debug-exit: QEMU exits with (code << 1) | 1 */

/* Exit codes written to DEBUG_EXIT_PORT; the harness tells failures apart by them. */
#define EXIT_BAD_BOOT 1         /* not entered by a multiboot loader, or no memory info */
#define EXIT_BAD_ARG 2          /* unknown key or malformed value on the command line */
#define EXIT_BAD_RANGE 3        /* empty range, beyond RAM, or over the guest's own image */
#define EXIT_EXCEPTION 4        /* any CPU exception other than NMI */
#define EXIT_NO_CLOCK 5         /* rate= given, but the PIT did not time the TSC */

/* COM1, polled. The NMI path in entry.S prints through these as well. */
#define COM1_THR 0x3f8          /* transmit holding register; DLL while LCR.DLAB is set */
#define COM1_IER 0x3f9          /* DLM while LCR.DLAB is set */
#define COM1_FCR 0x3fa
#define COM1_LCR 0x3fb
#define COM1_MCR 0x3fc
#define COM1_LSR 0x3fd
#define LSR_THR_EMPTY 0x20

#ifndef __ASSEMBLER__

/* -nostdinc leaves out even the compiler's freestanding headers. */
typedef __UINT8_TYPE__ uint8_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;
typedef __UINTPTR_TYPE__ uintptr_t;
#define UINT64_MAX (~(uint64_t)0)
#define bool _Bool
#define true 1
#define false 0

#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_INFO_MEMORY (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)

/* The leading fields of the multiboot v1 information structure. */
struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;         /* KiB below 640 KiB */
    uint32_t mem_upper;         /* KiB from 1 MiB up to the first hole */
    uint32_t boot_device;
    uint32_t cmdline;           /* physical address of a NUL-terminated string */
};

enum guest_mode { MODE_DIRTY, MODE_IDLE };

/* What the command line asks for; start and end are still unrounded and
 * unchecked, and wide enough to hold any value the parser accepts. */
struct guest_config {
    enum guest_mode mode;
    uint64_t start;
    uint64_t end;
    uint32_t rate;              /* MiB/s of pages dirtied; 0: as fast as it can */
};

/* rate=: the largest value the parser takes. Far beyond what the guest can
 * do; a guest asked for more than it can runs at its own speed. */
#define RATE_MAX (1u << 20)

/* The schedule of a paced guest (pace.c). TSC ticks, owed in 1/256 ticks. */
struct pace {
    uint64_t page_cost;         /* 1/256 ticks per page */
    uint64_t lag_limit;         /* ticks behind that restart the schedule */
    uint64_t base;              /* TSC the owed time is counted from */
    uint64_t owed;              /* 1/256 ticks of pages done since base */
    uint32_t chunk_pages;       /* pages between two looks at the clock */
};

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t value;

    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static inline void halt(void)
{
    __asm__ volatile("hlt");
}

void serial_init(void);
void serial_putc(char c);

uint64_t tsc_read(void);
uint64_t divide_64_by_32(uint64_t dividend, uint32_t divisor);
/* The TSC's frequency in Hz, timed against the PIT; 0 if it cannot be. */
uint64_t tsc_calibrate(void);

void pace_init(struct pace *pace, uint64_t tsc_hz, uint32_t rate);
void pace_restart(struct pace *pace);
/* Waits until pages more pages are due at the paced rate. */
void pace_after(struct pace *pace, uint32_t pages);

/* Overrides the fields of cfg named on line; returns 0 or EXIT_BAD_ARG. */
int cmdline_parse(const char *line, struct guest_config *cfg);

_Noreturn void guest_main(uint32_t magic, const struct multiboot_info *mbi);

#endif /* __ASSEMBLER__ */

#endif
