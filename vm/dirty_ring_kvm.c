/* The dirty ring's side that talks to KVM: enabling the ring before any
 * vCPU exists, mapping each vCPU's ring, and the ops dirty_ring.c calls
 * (KVM_RESET_DIRTY_RINGS, dirty logging on the memslots, unmapping). */
#include "dirty_ring.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvm.h"

static size_t ring_bytes(const struct dirty_ring *ring)
{
    return (size_t)ring->entries * sizeof(struct kvm_dirty_gfn);
}

static int kvm_reset(struct dirty_ring *ring)
{
    struct kvm *kvm = ring->kvm;
    int count = ioctl(kvm->vm_fd, KVM_RESET_DIRTY_RINGS, 0);

    return count < 0 ? -errno : count;
}

static int kvm_set_logging(struct dirty_ring *ring, bool on, struct gw_error *err)
{
    return kvm_set_dirty_logging(ring->kvm, ring->memory->blocks, ring->memory->nr_blocks, on,
                                 err);
}

static void kvm_unmap(struct dirty_ring *ring, struct kvm_dirty_gfn *gfns)
{
    munmap(gfns, ring_bytes(ring));
}

static const struct dirty_ring_kvm_ops kvm_ops = {
    .reset = kvm_reset,
    .set_logging = kvm_set_logging,
    .unmap = kvm_unmap,
};

int dirty_ring_enable(struct dirty_ring *ring, struct kvm *kvm, struct guest_memory *memory,
                      uint32_t entries, unsigned max_vcpus, struct gw_error *err)
{
    int max_bytes = ioctl(kvm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
    int acq_rel = ioctl(kvm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    /* With ACQ_REL the kernel orders its own accesses to an entry's flags,
     * as dirty_ring.c's acquire loads and release stores expect. */
    struct kvm_enable_cap cap = { .cap = acq_rel > 0 ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                     : KVM_CAP_DIRTY_LOG_RING,
                                  .args = { bytes } };
    int most = max_bytes / (int)sizeof(struct kvm_dirty_gfn);

    if (max_bytes <= 0)
        return gw_error_set(err, -ENOTSUP, "--accel kvm,dirty-ring-size=%u: this host's KVM "
                            "has no dirty ring (KVM_CAP_DIRTY_LOG_RING); use dirty-ring-size=0 "
                            "or leave it out for the dirty bitmap", entries);
    if (bytes > (uint64_t)max_bytes)
        return gw_error_set(err, -EINVAL, "--accel kvm,dirty-ring-size=%u: this host's KVM "
                            "allows at most %d entries per vCPU (%d bytes); use a power of "
                            "two from 256 to %d", entries, most, max_bytes, most);
    if (ioctl(kvm->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
        return gw_error_set(err, -errno, "--accel kvm,dirty-ring-size=%u: KVM refused a ring "
                            "of %llu bytes per vCPU: %s", entries, (unsigned long long)bytes,
                            strerror(errno));
    return dirty_ring_setup(ring, memory, entries, max_vcpus, &kvm_ops, kvm, err);
}

int dirty_ring_map_vcpu(struct dirty_ring *ring, unsigned index, int vcpu_fd,
                        struct gw_error *err)
{
    void *gfns = mmap(NULL, ring_bytes(ring), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd,
                      KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
    int rc;

    if (gfns == MAP_FAILED)
        return gw_error_set(err, -errno, "cannot map vCPU %u's dirty ring: %s", index,
                            strerror(errno));
    rc = dirty_ring_attach(ring, index, gfns, err);
    if (rc < 0)
        munmap(gfns, ring_bytes(ring));
    return rc;
}
