/* The KVM dirty log as the engine's dirty tracker. */
#ifndef GODWIT_VM_DIRTY_LOG_H
#define GODWIT_VM_DIRTY_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/dirty.h>

#include "memory.h"

struct kvm;

struct dirty_log {
    struct kvm *kvm;
    struct guest_memory *memory;
    bool manual_protect;     /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with initially-set */
    bool active;
    uint64_t *scratch[2];    /* KVM_GET_DIRTY_LOG's bitmap, one per block */
};

extern const struct dirty_tracker_ops dirty_log_ops;

/* Turns on manual protection if KVM has it; call before the memslots exist. */
void dirty_log_init(struct dirty_log *log, struct kvm *kvm, struct guest_memory *memory);
void dirty_log_cleanup(struct dirty_log *log);

#endif
