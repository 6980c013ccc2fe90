/* The KVM state of one vCPU, read and written in the orders KVM needs
 * (Firecracker's checklist, with the reason beside each step in cpu_state.c).
 * Only ever called with the vCPU parked outside KVM_RUN; it never changes
 * a vCPU until everything it was given has been checked. */
#ifndef GODWIT_VM_CPU_STATE_H
#define GODWIT_VM_CPU_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>

struct vcpu;

/* KVM_MAX_CPUID_ENTRIES: KVM never hands out or takes more. */
#define CPU_STATE_MAX_CPUID 256
/* More than the allow-list holds, so a list with repeats is still bounded. */
#define CPU_STATE_MAX_MSRS 128

struct cpu_state {
    struct kvm_mp_state mp_state;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_xsave *xsave;      /* xsave_size bytes */
    size_t xsave_size;
    struct kvm_cpuid2 *cpuid;     /* room for CPU_STATE_MAX_CPUID entries */
    struct kvm_msrs *msrs;        /* room for CPU_STATE_MAX_MSRS entries */
};

/* The XSAVE area size this host's KVM uses for vcpu's VM: KVM_CAP_XSAVE2's
 * answer, or the 4096 bytes of struct kvm_xsave without it. */
size_t cpu_state_xsave_size(const struct vcpu *vcpu);

/* Allocates the variable parts (empty CPUID and MSR lists); free with
 * cpu_state_free, which also takes a state that was never allocated. */
int cpu_state_alloc(struct cpu_state *state, size_t xsave_size, struct gw_error *err);
void cpu_state_free(struct cpu_state *state);

/* Whether a stream may ask this VMM to set the MSR (the allow-list). */
bool cpu_state_msr_allowed(uint32_t index);

/* Reads every piece of vcpu's state into an allocated state. First finishes
 * an I/O exit the vCPU thread has answered (KVM_RUN with immediate_exit; no
 * guest instruction runs), since KVM shows no GET the half-done instruction. */
int cpu_state_save(struct vcpu *vcpu, struct cpu_state *state, struct gw_error *err);

/* Checks state (MSR indices, list sizes, XSAVE size) and then writes it to
 * vcpu in restore order. A vCPU that has run may refuse a changed CPUID. */
int cpu_state_restore(struct vcpu *vcpu, const struct cpu_state *state, struct gw_error *err);

#endif
