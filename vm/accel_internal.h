/* The accel test device's insides, shared by the device itself (accel.c:
 * its state, dirty pages, changing thread, x-query-accel) and its
 * migration ops (accel_state.c). The format and the locking rules are in
 * accel.c's opening comment. */
#ifndef GODWIT_VM_ACCEL_INTERNAL_H
#define GODWIT_VM_ACCEL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/device.h>

#include "accel.h"
#include "vm.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "accel state is written in host byte order, which the layout says is little-endian"
#endif

#define ACCEL_VERSION 1
#define ACCEL_PAGE 4096u
#define ACCEL_REGS_SIZE 4096u
#define ACCEL_RUN_MAX (1u << 20)           /* longest STATE entry a save writes */
#define ACCEL_CHANGE_PERIOD_NS 2000000L    /* one 4 KiB change every ~2 ms */
#define ACCEL_REGS_MAGIC 0x4c434341u       /* "ACCL" */

enum { ACCEL_KIND_STATE = 0, ACCEL_KIND_REGISTERS = 1 };

struct accel_entry {
    uint64_t offset;
    uint32_t length;
    uint32_t kind;
};
_Static_assert(sizeof(struct accel_entry) == 16, "entry header is 16 bytes on the wire");

/* The start of the register block; the rest of its 4 KiB is zero. */
struct accel_regs {
    uint32_t magic;
    uint32_t version;
    uint64_t state_size;
    uint64_t changes;
    uint64_t rng;
};

struct accel {
    struct vm *vm;
    const struct vm_accel_config *config;
    pthread_mutex_t lock;
    uint8_t *state;               /* config->state_size bytes, mmap'ed */
    uint64_t pages;
    uint64_t *dirty;              /* one bit per 4 KiB page */
    uint64_t dirty_pages;
    uint64_t cursor;              /* the page save_precopy looks at first */
    uint64_t piece_cursor;        /* the page the next stop-copy piece starts at */
    struct accel_regs piece_regs; /* the registers a piece brought, for load_finish */
    bool piece_regs_seen;
    uint64_t changes;             /* registers */
    uint64_t rng;
};

/* The dirty bitmap, one bit per 4 KiB page; under the device lock. */
bool accel_page_dirty(const struct accel *a, uint64_t page);
void accel_set_dirty(struct accel *a, uint64_t page);
void accel_clear_dirty(struct accel *a, uint64_t first, uint64_t count);
void accel_set_all_dirty(struct accel *a);
/* The first dirty page from `from` on, or a->pages. */
uint64_t accel_next_dirty(const struct accel *a, uint64_t from);
/* Dirty pages from `first` on, at most max. */
uint64_t accel_dirty_run(const struct accel *a, uint64_t first, uint64_t max);
/* The 4 KiB register block as it is now; under the device lock. */
void accel_regs_block(const struct accel *a, uint8_t block[ACCEL_REGS_SIZE]);

/* The ops a device registers with: taking multifd, or (multifd=off, a
 * test-only key) not. */
extern const struct device_ops accel_ops, accel_ops_main_channel;

#endif
