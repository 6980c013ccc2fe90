/* The KVM VM: /dev/kvm, the VM fd, in-kernel irqchip and PIT, memslots. */
#ifndef GODWIT_VM_KVM_H
#define GODWIT_VM_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/ram.h>

struct kvm {
    int dev_fd;          /* /dev/kvm */
    int vm_fd;
    int vcpu_mmap_size;  /* size of each vCPU's kvm_run mapping */
};

/* Opens /dev/kvm and creates a VM with the in-kernel irqchip and PIT2. */
int kvm_init(struct kvm *kvm, struct gw_error *err);
/* Maps block into the guest as memslot slot. */
int kvm_add_memslot(struct kvm *kvm, unsigned slot, const struct ram_block *block,
                    struct gw_error *err);
/* Removes a slot kvm_add_memslot made (size 0), before its memory goes. */
int kvm_remove_memslot(struct kvm *kvm, unsigned slot, struct gw_error *err);
/* Turns KVM_MEM_LOG_DIRTY_PAGES on or off on memslots 0..nr_blocks-1 (slot
 * i is blocks[i]); what KVM logs into, bitmap or ring, was chosen before. */
int kvm_set_dirty_logging(struct kvm *kvm, const struct ram_block *blocks, unsigned nr_blocks,
                          bool on, struct gw_error *err);
/* A KVM capability and its name, for the error when it is missing. */
struct kvm_cap_need {
    int cap;
    const char *name;
};
/* Checks every capability; the message says what needs it (purpose). */
int kvm_require_caps(struct kvm *kvm, const struct kvm_cap_need *needed, size_t count,
                     const char *purpose, struct gw_error *err);
/* A VM ioctl whose failure becomes "<what> failed: <reason>". */
int kvm_vm_ioctl(struct kvm *kvm, unsigned long request, void *arg, const char *what,
                 struct gw_error *err);
/* Drives an ISA interrupt line of the in-kernel PIC and IOAPIC. */
int kvm_irq_line(struct kvm *kvm, unsigned irq, int level);
void kvm_cleanup(struct kvm *kvm);

#endif
