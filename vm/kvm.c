/* The KVM VM fd and what belongs to the whole VM. Fails with a sentence that
 * names the missing capability; never continues on a half-made VM. */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Where KVM puts the real-mode TSS and identity map on Intel hosts: the top
 * of the 32-bit space, below the BIOS, as QEMU does. */
#define KVM_TSS_ADDR 0xfffbd000UL
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL

int kvm_require_caps(struct kvm *kvm, const struct kvm_cap_need *needed, size_t count,
                     const char *purpose, struct gw_error *err)
{
    /* The VM fd answers for this VM's capabilities; before it exists, the
     * system fd does. */
    int fd = kvm->vm_fd >= 0 ? kvm->vm_fd : kvm->dev_fd;

    for (size_t i = 0; i < count; i++)
        if (ioctl(fd, KVM_CHECK_EXTENSION, needed[i].cap) <= 0)
            return gw_error_set(err, -ENOTSUP, "this host's KVM lacks %s, which %s needs",
                                needed[i].name, purpose);
    return 0;
}

static int open_kvm(struct kvm *kvm, struct gw_error *err)
{
    int version;

    kvm->dev_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm->dev_fd < 0)
        return gw_error_set(err, -errno,
                            "cannot open /dev/kvm: %s (is KVM available and may this user "
                            "use it?)", strerror(errno));
    version = ioctl(kvm->dev_fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return gw_error_set(err, -ENOTSUP, "/dev/kvm speaks API version %d, not %d", version,
                            KVM_API_VERSION);
    static const struct kvm_cap_need needed[] = {
        { KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
        { KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
        { KVM_CAP_PIT2, "KVM_CAP_PIT2" },
        { KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
    };
    if (kvm_require_caps(kvm, needed, sizeof(needed) / sizeof(needed[0]), "godwit-vm",
                         err) < 0)
        return -ENOTSUP;
    kvm->vcpu_mmap_size = ioctl(kvm->dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (kvm->vcpu_mmap_size <= 0)
        return gw_error_set(err, -ENOTSUP, "KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
    return 0;
}

int kvm_vm_ioctl(struct kvm *kvm, unsigned long request, void *arg, const char *what,
                 struct gw_error *err)
{
    if (ioctl(kvm->vm_fd, request, arg) < 0)
        return gw_error_set(err, -errno, "%s failed: %s", what, strerror(errno));
    return 0;
}

int kvm_init(struct kvm *kvm, struct gw_error *err)
{
    /* The speaker port (0x61) in the kernel too: its OUT2 bit is how the
     * test guest times PIT channel 2 to calibrate the TSC for rate=. */
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    __u64 identity_map = KVM_IDENTITY_MAP_ADDR;
    int rc;

    *kvm = (struct kvm){ .dev_fd = -1, .vm_fd = -1 };
    rc = open_kvm(kvm, err);
    if (rc < 0)
        goto fail;
    kvm->vm_fd = ioctl(kvm->dev_fd, KVM_CREATE_VM, 0);
    if (kvm->vm_fd < 0) {
        rc = gw_error_set(err, -errno, "KVM_CREATE_VM failed: %s", strerror(errno));
        goto fail;
    }
    if ((rc = kvm_vm_ioctl(kvm, KVM_SET_TSS_ADDR, (void *)KVM_TSS_ADDR, "KVM_SET_TSS_ADDR", err)) < 0 ||
        (rc = kvm_vm_ioctl(kvm, KVM_SET_IDENTITY_MAP_ADDR, &identity_map,
                       "KVM_SET_IDENTITY_MAP_ADDR", err)) < 0 ||
        (rc = kvm_vm_ioctl(kvm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP", err)) < 0 ||
        (rc = kvm_vm_ioctl(kvm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2", err)) < 0)
        goto fail;
    return 0;
fail:
    kvm_cleanup(kvm);
    return rc;
}

int kvm_add_memslot(struct kvm *kvm, unsigned slot, const struct ram_block *block,
                    struct gw_error *err)
{
    struct kvm_userspace_memory_region region = {
        .slot = slot,
        .guest_phys_addr = block->gpa,
        .memory_size = block->size,
        .userspace_addr = (__u64)(uintptr_t)block->host,
    };

    if (ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return gw_error_set(err, -errno, "cannot map RAM block '%s' into the guest: %s",
                            block->name, strerror(errno));
    return 0;
}

int kvm_remove_memslot(struct kvm *kvm, unsigned slot, struct gw_error *err)
{
    struct kvm_userspace_memory_region region = { .slot = slot, .memory_size = 0 };

    if (ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return gw_error_set(err, -errno, "cannot remove memory slot %u from the guest: %s", slot,
                            strerror(errno));
    return 0;
}

int kvm_set_dirty_logging(struct kvm *kvm, const struct ram_block *blocks, unsigned nr_blocks,
                          bool on, struct gw_error *err)
{
    for (unsigned i = 0; i < nr_blocks; i++) {
        struct kvm_userspace_memory_region region = {
            .slot = i, .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = blocks[i].gpa, .memory_size = blocks[i].size,
            .userspace_addr = (__u64)(uintptr_t)blocks[i].host,
        };
        if (ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
            return gw_error_set(err, -errno, "cannot %s dirty logging on RAM block '%s': %s",
                                on ? "start" : "stop", blocks[i].name, strerror(errno));
    }
    return 0;
}

int kvm_irq_line(struct kvm *kvm, unsigned irq, int level)
{
    struct kvm_irq_level line = { .irq = irq, .level = level };

    return ioctl(kvm->vm_fd, KVM_IRQ_LINE, &line) < 0 ? -errno : 0;
}

void kvm_cleanup(struct kvm *kvm)
{
    if (kvm->vm_fd >= 0)
        close(kvm->vm_fd);
    if (kvm->dev_fd >= 0)
        close(kvm->dev_fd);
    kvm->vm_fd = kvm->dev_fd = -1;
}
