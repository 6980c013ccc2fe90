/* VM-wide in-kernel state through the VM fd: irqchip, PIT2, clock. Never
 * called with a vCPU running; KVM validates the contents, we the sizes. */
#include "kvm_state.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define PIT_KNOWN_FLAGS (KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)

int kvm_state_require_caps(struct kvm *kvm, struct gw_error *err)
{
    static const struct kvm_cap_need needed[] = {
        { KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
        { KVM_CAP_PIT_STATE2, "KVM_CAP_PIT_STATE2" },
        { KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK" },
        { KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
        { KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS" },
        { KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS" },
        { KVM_CAP_XSAVE, "KVM_CAP_XSAVE" },
        { KVM_CAP_XCRS, "KVM_CAP_XCRS" },
        { KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
    };

    return kvm_require_caps(kvm, needed, sizeof(needed) / sizeof(needed[0]),
                            "migrating the VM's state", err);
}

static int get_chip(struct kvm *kvm, __u32 chip_id, struct kvm_irqchip *chip,
                    const char *what, struct gw_error *err)
{
    memset(chip, 0, sizeof(*chip));
    chip->chip_id = chip_id;
    return kvm_vm_ioctl(kvm, KVM_GET_IRQCHIP, chip, what, err);
}

int kvm_state_get_irqchip(struct kvm *kvm, struct kvm_state_irqchip *state,
                          struct gw_error *err)
{
    struct kvm_irqchip chip;
    int rc;

    if ((rc = get_chip(kvm, KVM_IRQCHIP_PIC_MASTER, &chip, "KVM_GET_IRQCHIP (PIC master)",
                       err)) < 0)
        return rc;
    state->pic_master = chip.chip.pic;
    if ((rc = get_chip(kvm, KVM_IRQCHIP_PIC_SLAVE, &chip, "KVM_GET_IRQCHIP (PIC slave)",
                       err)) < 0)
        return rc;
    state->pic_slave = chip.chip.pic;
    if ((rc = get_chip(kvm, KVM_IRQCHIP_IOAPIC, &chip, "KVM_GET_IRQCHIP (IOAPIC)", err)) < 0)
        return rc;
    state->ioapic = chip.chip.ioapic;
    return 0;
}

int kvm_state_set_irqchip(struct kvm *kvm, const struct kvm_state_irqchip *state,
                          struct gw_error *err)
{
    struct kvm_irqchip chip;
    int rc;

    memset(&chip, 0, sizeof(chip));
    chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
    chip.chip.pic = state->pic_master;
    if ((rc = kvm_vm_ioctl(kvm, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (PIC master)", err)) < 0)
        return rc;
    memset(&chip, 0, sizeof(chip));
    chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    chip.chip.pic = state->pic_slave;
    if ((rc = kvm_vm_ioctl(kvm, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (PIC slave)", err)) < 0)
        return rc;
    memset(&chip, 0, sizeof(chip));
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    chip.chip.ioapic = state->ioapic;
    return kvm_vm_ioctl(kvm, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (IOAPIC)", err);
}

int kvm_state_get_pit(struct kvm *kvm, struct kvm_pit_state2 *pit, struct gw_error *err)
{
    memset(pit, 0, sizeof(*pit));
    return kvm_vm_ioctl(kvm, KVM_GET_PIT2, pit, "KVM_GET_PIT2", err);
}

int kvm_state_set_pit(struct kvm *kvm, const struct kvm_pit_state2 *pit, struct gw_error *err)
{
    struct kvm_pit_state2 copy = *pit;

    if (copy.flags & ~(__u32)PIT_KNOWN_FLAGS)
        return gw_error_set(err, -EINVAL, "PIT2 flags 0x%x include bits KVM does not "
                            "define (known: 0x%x)", copy.flags, PIT_KNOWN_FLAGS);
    return kvm_vm_ioctl(kvm, KVM_SET_PIT2, &copy, "KVM_SET_PIT2", err);
}

int kvm_state_get_clock(struct kvm *kvm, struct kvm_clock_data *clock, struct gw_error *err)
{
    memset(clock, 0, sizeof(*clock));
    return kvm_vm_ioctl(kvm, KVM_GET_CLOCK, clock, "KVM_GET_CLOCK", err);
}

/* Kernels before 5.16 refuse any flag in KVM_SET_CLOCK and do not report
 * KVM_CLOCK_REALTIME in KVM_CAP_ADJUST_CLOCK; later ones accept what
 * KVM_GET_CLOCK returns but act on KVM_CLOCK_REALTIME alone. */
int kvm_state_set_clock(struct kvm *kvm, const struct kvm_clock_data *clock,
                        struct gw_error *err)
{
    int caps = ioctl(kvm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
    struct kvm_clock_data copy = { .clock = clock->clock, .realtime = clock->realtime };

    if (caps > 0 && (caps & KVM_CLOCK_REALTIME))
        copy.flags = clock->flags & KVM_CLOCK_REALTIME;
    return kvm_vm_ioctl(kvm, KVM_SET_CLOCK, &copy, "KVM_SET_CLOCK", err);
}
