/* The VM-wide in-kernel state: the two PICs and the IOAPIC, the PIT, and the
 * KVM clock. Read and written only with every vCPU stopped; nothing here is
 * set before the caller has checked its size. */
#ifndef GODWIT_VM_KVM_STATE_H
#define GODWIT_VM_KVM_STATE_H

#include <linux/kvm.h>

#include <godwit/error.h>

#include "kvm.h"

struct kvm_state_irqchip {
    struct kvm_pic_state pic_master;
    struct kvm_pic_state pic_slave;
    struct kvm_ioapic_state ioapic;
};

/* Fails with a sentence naming the first capability that migrating this
 * VMM's state needs and this host's KVM lacks (vCPU ones included). */
int kvm_state_require_caps(struct kvm *kvm, struct gw_error *err);

int kvm_state_get_irqchip(struct kvm *kvm, struct kvm_state_irqchip *state,
                          struct gw_error *err);
/* PIC master, PIC slave, then IOAPIC (which re-injects its pending IRR). */
int kvm_state_set_irqchip(struct kvm *kvm, const struct kvm_state_irqchip *state,
                          struct gw_error *err);

int kvm_state_get_pit(struct kvm *kvm, struct kvm_pit_state2 *pit, struct gw_error *err);
/* Refuses flags KVM does not define. */
int kvm_state_set_pit(struct kvm *kvm, const struct kvm_pit_state2 *pit, struct gw_error *err);

int kvm_state_get_clock(struct kvm *kvm, struct kvm_clock_data *clock, struct gw_error *err);
/* Passes KVM only the flag it acts on (KVM_CLOCK_REALTIME: advance the clock
 * by the wall-clock time since the save), and only where KVM takes it. */
int kvm_state_set_clock(struct kvm *kvm, const struct kvm_clock_data *clock,
                        struct gw_error *err);

#endif
