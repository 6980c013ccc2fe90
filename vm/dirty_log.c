/* Dirty tracking through KVM's dirty log. With manual protection
 * (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, initially-all-set) reading the log does
 * not re-protect: the engine clears a chunk just before it reads those pages,
 * so a write after the clear shows up in the next sync, and pages never
 * sent are never write-protected. Without it, reading the log re-protects
 * everything at once and clear has nothing to do. */
#include "dirty_log.h"
#include "clock.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "kvm.h"

void dirty_log_init(struct dirty_log *log, struct kvm *kvm, struct guest_memory *memory)
{
    struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
    int supported = ioctl(kvm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    uint64_t wanted = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

    *log = (struct dirty_log){ .kvm = kvm, .memory = memory };
    if (supported > 0 && ((uint64_t)supported & wanted) == wanted) {
        cap.args[0] = wanted;
        log->manual_protect = ioctl(kvm->vm_fd, KVM_ENABLE_CAP, &cap) == 0;
    }
}

void dirty_log_cleanup(struct dirty_log *log)
{
    for (unsigned i = 0; i < 2; i++) {
        free(log->scratch[i]);
        log->scratch[i] = NULL;
    }
}

static int dirty_log_start(void *opaque, struct gw_error *err)
{
    struct dirty_log *log = opaque;

    for (unsigned i = 0; i < log->memory->nr_blocks; i++) {
        uint64_t words = ram_block_bitmap_words(&log->memory->blocks[i]);
        if (!log->scratch[i])
            log->scratch[i] = calloc(words, sizeof(uint64_t));
        if (!log->scratch[i])
            return gw_error_set(err, -ENOMEM, "out of memory for the dirty log");
    }
    int rc = kvm_set_dirty_logging(log->kvm, log->memory->blocks, log->memory->nr_blocks,
                                   true, err);
    log->active = rc == 0;
    return rc;
}


/* Most words are zero in a guest that dirties little: testing eight at a
 * time reads only the scratch for those and leaves the engine's bitmap
 * untouched, so the merge costs about one read of the log. */
static void merge_bits(uint64_t *bitmap, const uint64_t *found, uint64_t words)
{
    uint64_t w = 0;

    for (; w + 8 <= words; w += 8) {
        const uint64_t *group = found + w;
        if ((group[0] | group[1] | group[2] | group[3] | group[4] | group[5] | group[6] |
             group[7]) == 0)
            continue;
        for (unsigned i = 0; i < 8; i++)
            bitmap[w + i] |= group[i];
    }
    for (; w < words; w++)
        bitmap[w] |= found[w];
}

static int dirty_log_sync(void *opaque, unsigned block, uint64_t *bitmap,
                          struct dirty_sync_times *times, struct gw_error *err)
{
    struct dirty_log *log = opaque;
    uint64_t words = ram_block_bitmap_words(&log->memory->blocks[block]);
    struct kvm_dirty_log dirty = { .slot = block, .dirty_bitmap = log->scratch[block] };
    uint64_t started = monotonic_us(), fetched;

    if (ioctl(log->kvm->vm_fd, KVM_GET_DIRTY_LOG, &dirty) < 0)
        return gw_error_set(err, -errno, "KVM_GET_DIRTY_LOG on block '%s' failed: %s",
                            log->memory->blocks[block].name, strerror(errno));
    fetched = monotonic_us();
    merge_bits(bitmap, log->scratch[block], words);
    times->fetch_us += fetched - started;
    times->merge_us += monotonic_us() - fetched;
    return 0;
}

static int dirty_log_clear(void *opaque, unsigned block, uint64_t first_page,
                           const uint64_t *bits, unsigned nr_words, struct gw_error *err)
{
    struct dirty_log *log = opaque;
    uint64_t pages = ram_block_pages(&log->memory->blocks[block]);
    struct kvm_clear_dirty_log clear = {
        .slot = block, .first_page = first_page,
        .dirty_bitmap = (void *)bits,
    };

    if (!log->manual_protect)
        return 0;
    /* KVM wants a multiple of 64 pages, or a range that ends the slot. */
    clear.num_pages = (uint32_t)(pages - first_page < (uint64_t)nr_words * 64
                                     ? pages - first_page : (uint64_t)nr_words * 64);
    if (ioctl(log->kvm->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0)
        return gw_error_set(err, -errno, "KVM_CLEAR_DIRTY_LOG on block '%s' failed: %s",
                            log->memory->blocks[block].name, strerror(errno));
    return 0;
}

static void dirty_log_stop(void *opaque)
{
    struct dirty_log *log = opaque;

    if (log->active)
        kvm_set_dirty_logging(log->kvm, log->memory->blocks, log->memory->nr_blocks, false,
                              NULL);
    log->active = false;
}

const struct dirty_tracker_ops dirty_log_ops = {
    .start = dirty_log_start,
    .sync = dirty_log_sync,
    .clear = dirty_log_clear,
    .stop = dirty_log_stop,
};
