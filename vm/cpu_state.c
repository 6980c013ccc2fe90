/* One vCPU's KVM state, saved and restored as ordered lists of ioctls, each
 * with the reason for its place. Called only while the vCPU is parked; a
 * restore checks everything it was given before its first KVM_SET. */
#include "cpu_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vm.h"

#define CPUID_1_EDX_MTRR (1u << 12)
/* A string I/O instruction finishes in page-sized parts; this bounds how
 * many exits finishing one may take before save gives up. */
#define PENDING_IO_MAX_EXITS 4096

/* MSRs worth migrating, in the order they are restored (KVM_SET_MSRS sets
 * them in list order). A vCPU saves those KVM_GET_MSR_INDEX_LIST lists, and
 * the MTRRs, which KVM emulates but never lists, when its CPUID has MTRR.
 * Left out: PMU counters, machine-check banks, nested-virtualisation and
 * Hyper-V MSRs; this VMM offers the guest none of them. */
#define MSR(index, name) { index, name, false }
#define MTRR(index, name) { index, name, true }
static const struct msr_allowed {
    uint32_t index;
    const char *name;
    bool mtrr;
} msr_allow_list[] = {
    /* SYSENTER and SYSCALL entry points, the swapgs base. */
    MSR(0x174, "IA32_SYSENTER_CS"), MSR(0x175, "IA32_SYSENTER_ESP"),
    MSR(0x176, "IA32_SYSENTER_EIP"), MSR(0xc0000081, "STAR"), MSR(0xc0000082, "LSTAR"),
    MSR(0xc0000083, "CSTAR"), MSR(0xc0000084, "SFMASK"), MSR(0xc0000102, "KERNEL_GS_BASE"),
    /* TSC first: TSC_ADJUST and TSC_DEADLINE are taken relative to it. */
    MSR(0x10, "IA32_TSC"), MSR(0x3b, "IA32_TSC_ADJUST"), MSR(0x6e0, "IA32_TSC_DEADLINE"),
    MSR(0xc0000103, "TSC_AUX"),
    /* Memory types, feature and debug control, machine-check status. */
    MSR(0x277, "IA32_PAT"), MSR(0x1a0, "IA32_MISC_ENABLE"),
    MSR(0x140, "MISC_FEATURES_ENABLES"), MSR(0x3a, "IA32_FEATURE_CONTROL"),
    MSR(0xda0, "IA32_XSS"), MSR(0x1d9, "IA32_DEBUGCTL"), MSR(0x17a, "IA32_MCG_STATUS"),
    MSR(0x17b, "IA32_MCG_CTL"), MSR(0x34, "SMI_COUNT"),
    /* Speculation controls, so the guest keeps the mitigations it chose. */
    MSR(0x48, "IA32_SPEC_CTRL"), MSR(0x122, "IA32_TSX_CTRL"),
    MSR(0xc001011f, "AMD64_VIRT_SPEC_CTRL"), MSR(0x10a, "IA32_ARCH_CAPABILITIES"),
    /* KVM paravirtual: clocks, then ASYNC_PF_INT before ASYNC_PF_EN (which
     * needs the vector to enable interrupt delivery), steal time, PV EOI. */
    MSR(0x11, "KVM_WALL_CLOCK"), MSR(0x12, "KVM_SYSTEM_TIME"),
    MSR(0x4b564d00, "KVM_WALL_CLOCK_NEW"), MSR(0x4b564d01, "KVM_SYSTEM_TIME_NEW"),
    MSR(0x4b564d06, "KVM_ASYNC_PF_INT"), MSR(0x4b564d02, "KVM_ASYNC_PF_EN"),
    MSR(0x4b564d07, "KVM_ASYNC_PF_ACK"), MSR(0x4b564d03, "KVM_STEAL_TIME"),
    MSR(0x4b564d04, "KVM_PV_EOI_EN"), MSR(0x4b564d05, "KVM_POLL_CONTROL"),
    /* MTRRs: default type, the eleven fixed ranges, eight variable pairs. */
    MTRR(0x2ff, "MTRRdefType"), MTRR(0x250, "MTRRfix64K_00000"),
    MTRR(0x258, "MTRRfix16K_80000"), MTRR(0x259, "MTRRfix16K_A0000"),
    MTRR(0x268, "MTRRfix4K_C0000"), MTRR(0x269, "MTRRfix4K_C8000"),
    MTRR(0x26a, "MTRRfix4K_D0000"), MTRR(0x26b, "MTRRfix4K_D8000"),
    MTRR(0x26c, "MTRRfix4K_E0000"), MTRR(0x26d, "MTRRfix4K_E8000"),
    MTRR(0x26e, "MTRRfix4K_F0000"), MTRR(0x26f, "MTRRfix4K_F8000"),
    MTRR(0x200, "MTRRphysBase0"), MTRR(0x201, "MTRRphysMask0"),
    MTRR(0x202, "MTRRphysBase1"), MTRR(0x203, "MTRRphysMask1"),
    MTRR(0x204, "MTRRphysBase2"), MTRR(0x205, "MTRRphysMask2"),
    MTRR(0x206, "MTRRphysBase3"), MTRR(0x207, "MTRRphysMask3"),
    MTRR(0x208, "MTRRphysBase4"), MTRR(0x209, "MTRRphysMask4"),
    MTRR(0x20a, "MTRRphysBase5"), MTRR(0x20b, "MTRRphysMask5"),
    MTRR(0x20c, "MTRRphysBase6"), MTRR(0x20d, "MTRRphysMask6"),
    MTRR(0x20e, "MTRRphysBase7"), MTRR(0x20f, "MTRRphysMask7"),
};

#define MSR_ALLOW_COUNT (sizeof(msr_allow_list) / sizeof(msr_allow_list[0]))
_Static_assert(MSR_ALLOW_COUNT <= CPU_STATE_MAX_MSRS, "CPU_STATE_MAX_MSRS is too small");

static const struct msr_allowed *msr_find(uint32_t index)
{
    for (size_t i = 0; i < MSR_ALLOW_COUNT; i++)
        if (msr_allow_list[i].index == index)
            return &msr_allow_list[i];
    return NULL;
}

bool cpu_state_msr_allowed(uint32_t index)
{
    return msr_find(index) != NULL;
}

static const char *msr_name(uint32_t index)
{
    const struct msr_allowed *msr = msr_find(index);

    return msr ? msr->name : "not allow-listed";
}

static int xsave2_size(const struct vcpu *vcpu)
{
#ifdef KVM_CAP_XSAVE2
    return ioctl(vcpu->vm->kvm.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
#else
    (void)vcpu;
    return 0;
#endif
}

size_t cpu_state_xsave_size(const struct vcpu *vcpu)
{
    int size = xsave2_size(vcpu);

    return size > (int)sizeof(struct kvm_xsave) ? (size_t)size : sizeof(struct kvm_xsave);
}

int cpu_state_alloc(struct cpu_state *state, size_t xsave_size, struct gw_error *err)
{
    memset(state, 0, sizeof(*state));
    state->xsave_size = xsave_size;
    state->xsave = calloc(1, xsave_size);
    state->cpuid = calloc(1, sizeof(*state->cpuid) +
                          CPU_STATE_MAX_CPUID * sizeof(state->cpuid->entries[0]));
    state->msrs = calloc(1, sizeof(*state->msrs) +
                         CPU_STATE_MAX_MSRS * sizeof(state->msrs->entries[0]));
    if (!state->xsave || !state->cpuid || !state->msrs) {
        cpu_state_free(state);
        return gw_error_set(err, -ENOMEM, "out of memory for a vCPU's state");
    }
    return 0;
}

void cpu_state_free(struct cpu_state *state)
{
    free(state->xsave);
    free(state->cpuid);
    free(state->msrs);
    state->xsave = NULL;
    state->cpuid = NULL;
    state->msrs = NULL;
}

static int vcpu_ioctl(struct vcpu *vcpu, unsigned long request, void *arg, const char *what,
                      struct gw_error *err)
{
    if (ioctl(vcpu->fd, request, arg) < 0)
        return gw_error_set(err, -errno, "cpu %u: %s failed: %s", vcpu->id, what,
                            strerror(errno));
    return 0;
}

static bool cpuid_has_mtrr(const struct kvm_cpuid2 *cpuid)
{
    for (__u32 i = 0; i < cpuid->nent; i++)
        if (cpuid->entries[i].function == 1)
            return cpuid->entries[i].edx & CPUID_1_EDX_MTRR;
    return false;
}

/* Fills state->msrs with the indices to save: allow-listed and listed by
 * this host's KVM (MTRRs: allowed by the vCPU's CPUID). */
static int choose_msrs(struct vcpu *vcpu, struct cpu_state *state, struct gw_error *err)
{
    struct kvm_msr_list probe = { .nmsrs = 0 }, *list;
    bool mtrr = cpuid_has_mtrr(state->cpuid);
    int rc = 0;

    /* Asked for no room, KVM says how many there are (E2BIG). */
    if (ioctl(vcpu->vm->kvm.dev_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return gw_error_set(err, -errno, "KVM_GET_MSR_INDEX_LIST failed: %s", strerror(errno));
    list = calloc(1, sizeof(*list) + (size_t)probe.nmsrs * sizeof(list->indices[0]));
    if (!list)
        return gw_error_set(err, -ENOMEM, "out of memory for the MSR index list");
    list->nmsrs = probe.nmsrs;
    if (ioctl(vcpu->vm->kvm.dev_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        rc = gw_error_set(err, -errno, "KVM_GET_MSR_INDEX_LIST failed: %s", strerror(errno));
        goto out;
    }
    state->msrs->nmsrs = 0;
    for (size_t i = 0; i < MSR_ALLOW_COUNT; i++) {
        bool listed = msr_allow_list[i].mtrr && mtrr;
        for (__u32 j = 0; !listed && j < list->nmsrs; j++)
            listed = list->indices[j] == msr_allow_list[i].index;
        if (listed)
            state->msrs->entries[state->msrs->nmsrs++] =
                (struct kvm_msr_entry){ .index = msr_allow_list[i].index };
    }
out:
    free(list);
    return rc;
}

static int get_msrs(struct vcpu *vcpu, struct cpu_state *state, struct gw_error *err)
{
    int rc = choose_msrs(vcpu, state, err), got;

    if (rc < 0)
        return rc;
    got = ioctl(vcpu->fd, KVM_GET_MSRS, state->msrs);
    if (got < 0)
        return gw_error_set(err, -errno, "cpu %u: KVM_GET_MSRS failed: %s", vcpu->id,
                            strerror(errno));
    if ((__u32)got < state->msrs->nmsrs)
        return gw_error_set(err, -EIO, "cpu %u: KVM cannot read MSR 0x%x (%s), which it offers",
                            vcpu->id, state->msrs->entries[got].index,
                            msr_name(state->msrs->entries[got].index));
    return 0;
}

static int get_xsave(struct vcpu *vcpu, struct cpu_state *state, struct gw_error *err)
{
#ifdef KVM_GET_XSAVE2
    if (xsave2_size(vcpu) > 0)
        return vcpu_ioctl(vcpu, KVM_GET_XSAVE2, state->xsave, "KVM_GET_XSAVE2", err);
#endif
    return vcpu_ioctl(vcpu, KVM_GET_XSAVE, state->xsave, "KVM_GET_XSAVE", err);
}

static bool is_io_exit(__u32 reason)
{
    return reason == KVM_EXIT_IO || reason == KVM_EXIT_MMIO;
}

/* An I/O or MMIO exit the vCPU thread has answered is finished (RAX loaded
 * for an IN, RIP past the instruction, and past an OUT on hosts with fast
 * PIO) only at the next KVM_RUN, and no GET ioctl shows that pending work:
 * saved as is, the destination would run the instruction again. KVM_RUN
 * with immediate_exit finishes it and returns EINTR without running guest
 * code; a string I/O may exit again for its next part, answered here as the
 * vCPU thread would. KVM leaves exit_reason as it was, so mark it done. */
static int finish_pending_io(struct vcpu *vcpu, struct gw_error *err)
{
    struct kvm_run *run = vcpu->run;

    for (unsigned exits = 0; run && is_io_exit(run->exit_reason); exits++) {
        int rc;

        if (exits == PENDING_IO_MAX_EXITS)
            return gw_error_set(err, -EBUSY, "cpu %u: the guest's pending string I/O did not "
                                "finish within %d exits", vcpu->id, PENDING_IO_MAX_EXITS);
        run->immediate_exit = 1;
        rc = ioctl(vcpu->fd, KVM_RUN, 0);
        run->immediate_exit = 0;
        if (rc < 0 && errno == EINTR) {
            run->exit_reason = KVM_EXIT_INTR;
            return 0;
        }
        if (rc < 0)
            return gw_error_set(err, -errno, "cpu %u: KVM_RUN to finish a pending I/O exit "
                                "failed: %s", vcpu->id, strerror(errno));
        if (run->exit_reason == KVM_EXIT_IO)
            pio_handle(&vcpu->vm->pio, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                       (uint8_t *)run + run->io.data_offset, run->io.size, run->io.count);
        else if (run->exit_reason == KVM_EXIT_MMIO)
            pio_handle_mmio(&vcpu->vm->pio, run->mmio.phys_addr, run->mmio.is_write,
                            run->mmio.data, run->mmio.len);
        else if (run->exit_reason == KVM_EXIT_DIRTY_RING_FULL)
            /* The I/O finished first (KVM completes it before it looks at
             * the ring); the entries it left wait in the ring, nothing of
             * which crosses the migration: harvest it, as the vCPU would. */
            return dirty_ring_full_exit(&vcpu->vm->dirty_ring, vcpu->id, err);
        else
            return gw_error_set(err, -EIO, "cpu %u: finishing a pending I/O exit gave exit "
                                "reason %u", vcpu->id, run->exit_reason);
    }
    return 0;
}

int cpu_state_save(struct vcpu *vcpu, struct cpu_state *state, struct gw_error *err)
{
    /* before anything is read: a half-done IN, OUT or MMIO access is in no
     * piece, so it is finished here, not run twice on the destination */
    int rc = finish_pending_io(vcpu, err);

    if (rc < 0)
        return rc;
    rc = cpu_state_alloc(state, cpu_state_xsave_size(vcpu), err);
    if (rc < 0)
        return rc;
    state->cpuid->nent = CPU_STATE_MAX_CPUID;
    /* The order, and why: */
    if (/* first: it runs kvm_apic_accept_events(), which may change the LAPIC
         * and registers (a pending INIT or SIPI); all reads below see that */
        (rc = vcpu_ioctl(vcpu, KVM_GET_MP_STATE, &state->mp_state, "KVM_GET_MP_STATE",
                         err)) < 0 ||
        /* the guest's CPU model; also says whether MTRRs are to be saved */
        (rc = vcpu_ioctl(vcpu, KVM_GET_CPUID2, state->cpuid, "KVM_GET_CPUID2", err)) < 0 ||
        /* general registers, RIP and RFLAGS */
        (rc = vcpu_ioctl(vcpu, KVM_GET_REGS, &state->regs, "KVM_GET_REGS", err)) < 0 ||
        /* control registers, segments, EFER, APIC base, pending external IRQ */
        (rc = vcpu_ioctl(vcpu, KVM_GET_SREGS, &state->sregs, "KVM_GET_SREGS", err)) < 0 ||
        /* FPU, SSE, AVX and the other XSAVE components */
        (rc = get_xsave(vcpu, state, err)) < 0 ||
        /* XCR0 */
        (rc = vcpu_ioctl(vcpu, KVM_GET_XCRS, &state->xcrs, "KVM_GET_XCRS", err)) < 0 ||
        /* DR0-DR3, DR6, DR7 */
        (rc = vcpu_ioctl(vcpu, KVM_GET_DEBUGREGS, &state->debugregs, "KVM_GET_DEBUGREGS",
                         err)) < 0 ||
        /* the in-kernel LAPIC's registers (IRR, ISR, timer) */
        (rc = vcpu_ioctl(vcpu, KVM_GET_LAPIC, &state->lapic, "KVM_GET_LAPIC", err)) < 0 ||
        /* the allow-listed MSRs, TSC and TSC deadline among them */
        (rc = get_msrs(vcpu, state, err)) < 0 ||
        /* last: the pending exception, interrupt and NMI and the interrupt
         * shadow, read after every other GET so none can have moved them */
        (rc = vcpu_ioctl(vcpu, KVM_GET_VCPU_EVENTS, &state->events, "KVM_GET_VCPU_EVENTS",
                         err)) < 0) {
        cpu_state_free(state);
        return rc;
    }
    if (state->xcrs.nr_xcrs > KVM_MAX_XCRS) {
        cpu_state_free(state);
        return gw_error_set(err, -EIO, "cpu %u: KVM_GET_XCRS returned %u XCRs, more than %d",
                            vcpu->id, state->xcrs.nr_xcrs, KVM_MAX_XCRS);
    }
    return 0;
}

static int check_state(const struct vcpu *vcpu, const struct cpu_state *state,
                       struct gw_error *err)
{
    size_t host_xsave = cpu_state_xsave_size(vcpu);

    if (state->xsave_size != host_xsave)
        return gw_error_set(err, -EINVAL, "cpu %u: XSAVE is %zu bytes, this host uses %zu",
                            vcpu->id, state->xsave_size, host_xsave);
    if (state->cpuid->nent == 0 || state->cpuid->nent > CPU_STATE_MAX_CPUID)
        return gw_error_set(err, -EINVAL, "cpu %u: CPUID has %u entries; 1 to %d are allowed",
                            vcpu->id, state->cpuid->nent, CPU_STATE_MAX_CPUID);
    if (state->msrs->nmsrs > CPU_STATE_MAX_MSRS)
        return gw_error_set(err, -EINVAL, "cpu %u: %u MSRs; at most %d are allowed",
                            vcpu->id, state->msrs->nmsrs, CPU_STATE_MAX_MSRS);
    for (__u32 i = 0; i < state->msrs->nmsrs; i++)
        if (!cpu_state_msr_allowed(state->msrs->entries[i].index))
            return gw_error_set(err, -EINVAL, "cpu %u: MSR 0x%x is not one this VMM "
                                "migrates", vcpu->id, state->msrs->entries[i].index);
    if (state->xcrs.nr_xcrs > KVM_MAX_XCRS || state->xcrs.flags)
        return gw_error_set(err, -EINVAL, "cpu %u: XCRS holds %u registers with flags 0x%x; "
                            "at most %d with flags 0 are allowed", vcpu->id,
                            state->xcrs.nr_xcrs, state->xcrs.flags, KVM_MAX_XCRS);
    return 0;
}

static int set_cpuid(struct vcpu *vcpu, const struct cpu_state *state, struct gw_error *err)
{
    if (ioctl(vcpu->fd, KVM_SET_CPUID2, state->cpuid) == 0)
        return 0;
    return gw_error_set(err, -errno, "cpu %u: KVM_SET_CPUID2 refused the source's CPUID: %s "
                        "(a vCPU that has already run only takes its current CPUID, and "
                        "the entries must suit this host's KVM)", vcpu->id, strerror(errno));
}

static int set_msrs(struct vcpu *vcpu, const struct cpu_state *state, struct gw_error *err)
{
    int done = ioctl(vcpu->fd, KVM_SET_MSRS, state->msrs);

    if (done < 0)
        return gw_error_set(err, -errno, "cpu %u: KVM_SET_MSRS failed: %s", vcpu->id,
                            strerror(errno));
    if ((__u32)done < state->msrs->nmsrs)
        return gw_error_set(err, -EINVAL, "cpu %u: this host's KVM refused MSR 0x%x (%s) = "
                            "0x%llx", vcpu->id, state->msrs->entries[done].index,
                            msr_name(state->msrs->entries[done].index),
                            (unsigned long long)state->msrs->entries[done].data);
    return 0;
}

/* A guest without kvmclock has nothing to be told: KVM says EINVAL then. */
static int kvmclock_ctrl(struct vcpu *vcpu, struct gw_error *err)
{
    if (ioctl(vcpu->fd, KVM_KVMCLOCK_CTRL, 0) == 0 || errno == EINVAL)
        return 0;
    return gw_error_set(err, -errno, "cpu %u: KVM_KVMCLOCK_CTRL failed: %s", vcpu->id,
                        strerror(errno));
}

int cpu_state_restore(struct vcpu *vcpu, const struct cpu_state *state, struct gw_error *err)
{
    /* The const state is only read; KVM's SET ioctls take non-const pointers. */
    struct cpu_state *s = (struct cpu_state *)state;
    int rc = check_state(vcpu, state, err);

    if (rc < 0)
        return rc;
    /* The order, and why: */
    if (/* first: KVM checks XSAVE, XCR0, MSRs and LAPIC features against it */
        (rc = set_cpuid(vcpu, state, err)) < 0 ||
        /* before VCPU_EVENTS: KVM refuses an INIT or SIPI MP state while the
         * events say the vCPU is in SMM with an INIT latched */
        (rc = vcpu_ioctl(vcpu, KVM_SET_MP_STATE, &s->mp_state, "KVM_SET_MP_STATE",
                         err)) < 0 ||
        /* before VCPU_EVENTS: KVM_SET_REGS drops a pending exception */
        (rc = vcpu_ioctl(vcpu, KVM_SET_REGS, &s->regs, "KVM_SET_REGS", err)) < 0 ||
        /* CR0/CR4/EFER and the APIC base, which the LAPIC and MSRs rely on */
        (rc = vcpu_ioctl(vcpu, KVM_SET_SREGS, &s->sregs, "KVM_SET_SREGS", err)) < 0 ||
        /* after CPUID, which fixes the XSAVE components KVM accepts */
        (rc = vcpu_ioctl(vcpu, KVM_SET_XSAVE, s->xsave, "KVM_SET_XSAVE", err)) < 0 ||
        /* XCR0 must be allowed by CPUID and match the XSAVE layout above */
        (rc = vcpu_ioctl(vcpu, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS", err)) < 0 ||
        /* DR7 may arm breakpoints; nothing later depends on them */
        (rc = vcpu_ioctl(vcpu, KVM_SET_DEBUGREGS, &s->debugregs, "KVM_SET_DEBUGREGS",
                         err)) < 0 ||
        /* after SREGS, which set the APIC base the LAPIC state is read in */
        (rc = vcpu_ioctl(vcpu, KVM_SET_LAPIC, &s->lapic, "KVM_SET_LAPIC", err)) < 0 ||
        /* after LAPIC: TSC_DEADLINE only sticks with the timer in that mode */
        (rc = set_msrs(vcpu, state, err)) < 0 ||
        /* after REGS and MP_STATE: puts back the pending exception, interrupt,
         * NMI and interrupt shadow */
        (rc = vcpu_ioctl(vcpu, KVM_SET_VCPU_EVENTS, &s->events, "KVM_SET_VCPU_EVENTS",
                         err)) < 0 ||
        /* last: tells a kvmclock guest it was paused, so its watchdogs
         * ignore the gap */
        (rc = kvmclock_ctrl(vcpu, err)) < 0)
        return rc;
    return 0;
}
