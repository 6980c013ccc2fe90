/* The KVM VM: /dev/kvm, the VM fd, in-kernel irqchip and PIT, memslots. */
#ifndef GODWIT_VM_KVM_H
#define GODWIT_VM_KVM_H

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
/* Drives an ISA interrupt line of the in-kernel PIC and IOAPIC. */
int kvm_irq_line(struct kvm *kvm, unsigned irq, int level);
void kvm_cleanup(struct kvm *kvm);

#endif
