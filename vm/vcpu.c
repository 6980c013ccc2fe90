/* vCPU creation, entry state and the run loop. stop/resume is the primitive
 * the migration engine builds on: vcpu_wait_parked returns only when the
 * thread is out of KVM_RUN and waiting, so the caller may read or change
 * guest state. */
#include "vm.h"
#include "clock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* A signal that only interrupts KVM_RUN: blocked in every thread, unblocked
 * only inside KVM_RUN through KVM_SET_SIGNAL_MASK. A kick sent while the
 * thread is outside KVM_RUN stays pending and makes the next KVM_RUN return
 * at once, so no kick is ever lost. */
#define SIG_VCPU_KICK SIGUSR1

static void kick_handler(int signo)
{
    (void)signo;
}

/* KVM_RUN returns EINTR with the kick still pending (KVM restores the
 * blocking mask before the signal can be delivered): take it, or every later
 * KVM_RUN returns at once and the guest never runs again. Requests are
 * checked after this, so a kick that arrives now is not lost either. */
static void consume_kicks(void)
{
    static const struct timespec no_wait = { 0, 0 };
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIG_VCPU_KICK);
    while (sigtimedwait(&set, NULL, &no_wait) > 0)
        ;
}

int vcpu_signals_init(struct gw_error *err)
{
    struct sigaction action = { .sa_handler = kick_handler };
    sigset_t set;

    sigemptyset(&action.sa_mask);
    if (sigaction(SIG_VCPU_KICK, &action, NULL) < 0)
        return gw_error_set(err, -errno, "cannot install the vCPU kick handler: %s",
                            strerror(errno));
    sigemptyset(&set);
    sigaddset(&set, SIG_VCPU_KICK);
    return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int set_cpuid(struct vcpu *vcpu, struct gw_error *err)
{
    int nent = 128, rc;
    struct kvm_cpuid2 *cpuid;

    for (;;) {
        cpuid = calloc(1, sizeof(*cpuid) + (size_t)nent * sizeof(cpuid->entries[0]));
        if (!cpuid)
            return gw_error_set(err, -ENOMEM, "out of memory for CPUID entries");
        cpuid->nent = (__u32)nent;
        if (ioctl(vcpu->vm->kvm.dev_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
            break;
        rc = -errno;
        free(cpuid);
        if (rc != -E2BIG || nent >= 4096)
            return gw_error_set(err, rc, "KVM_GET_SUPPORTED_CPUID failed: %s", strerror(-rc));
        nent *= 2;
    }
    cpu_model_apply(&vcpu->vm->config.cpu, cpuid, vcpu->id, vcpu->vm->config.smp);
    rc = ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0 ? -errno : 0;
    free(cpuid);
    if (rc < 0)
        return gw_error_set(err, rc, "KVM_SET_CPUID2 failed: %s", strerror(-rc));
    return 0;
}

static int set_signal_mask(struct vcpu *vcpu, struct gw_error *err)
{
    /* struct kvm_signal_mask ends in a flexible array: the kernel's sigset_t,
     * 8 bytes on x86-64, follows the header. */
    union {
        struct kvm_signal_mask header;
        uint8_t bytes[sizeof(struct kvm_signal_mask) + 8];
    } mask;
    sigset_t set;

    pthread_sigmask(SIG_BLOCK, NULL, &set);
    sigdelset(&set, SIG_VCPU_KICK);
    mask.header.len = 8;
    memcpy(mask.bytes + sizeof(struct kvm_signal_mask), &set, 8);
    if (ioctl(vcpu->fd, KVM_SET_SIGNAL_MASK, &mask) < 0)
        return gw_error_set(err, -errno, "KVM_SET_SIGNAL_MASK failed: %s", strerror(errno));
    return 0;
}

int vcpu_create(struct vm *vm, struct vcpu *vcpu, unsigned id, struct gw_error *err)
{
    int rc;

    /* Parked until vm_resume, which may come before vcpu_start (an
     * incoming migration that ends while the machine is still built). */
    *vcpu = (struct vcpu){ .id = id, .vm = vm, .fd = -1, .stop_requested = true };
    pthread_mutex_init(&vcpu->lock, NULL);
    if ((rc = cond_init_monotonic(&vcpu->changed)) < 0)
        return gw_error_set(err, rc, "cannot make vCPU %u's condition: %s", id, strerror(-rc));
    vcpu->fd = ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, id);
    if (vcpu->fd < 0)
        return gw_error_set(err, -errno, "KVM_CREATE_VCPU %u failed: %s", id, strerror(errno));
    vcpu->run = mmap(NULL, (size_t)vm->kvm.vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                     vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        vcpu->run = NULL;
        return gw_error_set(err, -errno, "cannot map vCPU %u's kvm_run: %s", id, strerror(errno));
    }
    if (dirty_ring_enabled(&vm->dirty_ring) &&
        (rc = dirty_ring_map_vcpu(&vm->dirty_ring, id, vcpu->fd, err)) < 0)
        return rc;
    rc = set_cpuid(vcpu, err);
    if (rc < 0)
        return rc;
    /* The vCPU thread blocks the kick signal; KVM_RUN alone unblocks it. */
    return set_signal_mask(vcpu, err);
}

static void flat_segment(struct kvm_segment *seg, uint16_t selector, uint8_t type)
{
    *seg = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
}

int vcpu_set_multiboot_entry(struct vcpu *vcpu, const struct vcpu_entry *entry,
                             struct gw_error *err)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs = { .rip = entry->eip, .rax = entry->eax, .rbx = entry->ebx,
                             .rflags = 0x2 };

    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
        return gw_error_set(err, -errno, "KVM_GET_SREGS failed: %s", strerror(errno));
    flat_segment(&sregs.cs, 0x08, 0xb);   /* execute/read, accessed */
    flat_segment(&sregs.ds, 0x10, 0x3);   /* read/write, accessed */
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.cr0 = 0x11;                     /* PE, ET: protected mode, no paging */
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
        return gw_error_set(err, -errno, "KVM_SET_SREGS failed: %s", strerror(errno));
    if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
        return gw_error_set(err, -errno, "KVM_SET_REGS failed: %s", strerror(errno));
    return 0;
}

/* Sleeps up to us, or less if a request (stop, quit, NMI) comes; returns
 * whether it slept the whole time. */
static bool nap(struct vcpu *vcpu, uint64_t us)
{
    struct timespec until;
    bool requested;

    clock_gettime(CLOCK_MONOTONIC, &until);   /* vcpu->changed's clock */
    until.tv_nsec += (long)(us % 1000000) * 1000;
    until.tv_sec += (time_t)(us / 1000000) + until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_mutex_lock(&vcpu->lock);
    while (!(requested = vcpu->stop_requested || vcpu->quit_requested || vcpu->nmi_requested))
        if (pthread_cond_timedwait(&vcpu->changed, &vcpu->lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&vcpu->lock);
    return !requested;
}

/* Dirty-limit: a vCPU over its quota sleeps off what it owes, in slices so
 * that a cancelled or changed quota takes effect within one; a stop ends
 * the sleep (what is left is owed at the next ring-full). */
#define THROTTLE_SLICE_US 100000

static void throttle_dirty(struct vcpu *vcpu)
{
    struct dirty_limit *limit = &vcpu->vm->dirty_limit;
    uint64_t owed = dirty_limit_charge(limit, vcpu->id);

    while (owed && nap(vcpu, owed < THROTTLE_SLICE_US ? owed : THROTTLE_SLICE_US))
        owed = dirty_limit_owed_us(limit, vcpu->id);
}

/* Handles requests between two KVM_RUNs; returns false when the thread must
 * end. Parks here while a stop is requested, and sleeps here for the cpu
 * throttle (a stop, an NMI or a quit cuts the sleep short). */
static bool handle_requests(struct vcpu *vcpu)
{
    bool keep_running = true;

    pthread_mutex_lock(&vcpu->lock);
    for (;;) {
        if (vcpu->quit_requested) {
            keep_running = false;
            break;
        }
        if (vcpu->throttle_requested) {
            vcpu->throttle_requested = false;
            pthread_mutex_unlock(&vcpu->lock);
            throttle_dirty(vcpu);
            pthread_mutex_lock(&vcpu->lock);
            continue;
        }
        if (vcpu->nmi_requested) {
            vcpu->nmi_requested = false;
            pthread_mutex_unlock(&vcpu->lock);
            if (ioctl(vcpu->fd, KVM_NMI, 0) < 0)
                fprintf(stderr, "godwit-vm: KVM_NMI failed: %s\n", strerror(errno));
            pthread_mutex_lock(&vcpu->lock);
            continue;
        }
        if (!vcpu->stop_requested &&
            throttle_sleep_wait(&vcpu->throttle, &vcpu->changed, &vcpu->lock))
            continue;
        if (!vcpu->stop_requested)
            break;
        throttle_sleep_drop(&vcpu->throttle);
        if (!vcpu->parked) {
            vcpu->parked = true;
            pthread_cond_broadcast(&vcpu->changed);
        }
        pthread_cond_wait(&vcpu->changed, &vcpu->lock);
    }
    /* A thread resumed before it first parked enters the guest unparked. */
    if (keep_running && (vcpu->parked || !vcpu->unparked_us)) {
        vcpu->unparked_us = monotonic_us();
        pthread_cond_broadcast(&vcpu->changed);   /* vcpu_wait_unparked */
    }
    vcpu->parked = false;
    pthread_mutex_unlock(&vcpu->lock);
    return keep_running;
}

static void report_fatal_exit(struct vcpu *vcpu, const char *what)
{
    fprintf(stderr, "godwit-vm: vCPU %u: %s; the VM stops\n", vcpu->id, what);
    vm_request_exit(vcpu->vm, 1, true, "guest-panic");
}

/* KVM holds a vCPU whose dirty ring is (nearly) full out of the guest
 * until the ring is harvested: this thread harvests it and enters again. */
static bool handle_dirty_ring_full(struct vcpu *vcpu)
{
    struct gw_error err = { 0 };

    if (dirty_ring_full_exit(&vcpu->vm->dirty_ring, vcpu->id, &err) < 0) {
        report_fatal_exit(vcpu, err.msg);
        return false;
    }
    throttle_dirty(vcpu);
    return true;
}

/* Returns false when the vCPU cannot go on. */
static bool handle_exit(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    char what[128];

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        pio_handle(&vcpu->vm->pio, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                   (uint8_t *)run + run->io.data_offset, run->io.size, run->io.count);
        return true;
    case KVM_EXIT_MMIO:
        pio_handle_mmio(&vcpu->vm->pio, run->mmio.phys_addr, run->mmio.is_write,
                        run->mmio.data, run->mmio.len);
        return true;
    case KVM_EXIT_INTR:
        consume_kicks();
        return true;
    case KVM_EXIT_DIRTY_RING_FULL:
        return handle_dirty_ring_full(vcpu);
    case KVM_EXIT_SHUTDOWN:
        /* A triple fault: QEMU resets the machine; this VMM has no reset, so
         * it ends the VM and says why. */
        fprintf(stderr, "godwit-vm: the guest triple-faulted (KVM_EXIT_SHUTDOWN)\n");
        vm_request_exit(vcpu->vm, 1, true, "guest-reset");
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(what, sizeof(what), "KVM could not enter the guest (hardware reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        snprintf(what, sizeof(what), "KVM internal error, suberror %u (an instruction the "
                 "hypervisor cannot emulate?)", run->internal.suberror);
        break;
    default:
        snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
        break;
    }
    report_fatal_exit(vcpu, what);
    return false;
}

static void *vcpu_thread(void *opaque)
{
    struct vcpu *vcpu = opaque;

    pthread_mutex_lock(&vcpu->lock);
    vcpu->tid = gettid();
    pthread_cond_broadcast(&vcpu->changed);
    pthread_mutex_unlock(&vcpu->lock);
    while (handle_requests(vcpu)) {
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                consume_kicks();
                continue;
            }
            char what[96];
            snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(errno));
            report_fatal_exit(vcpu, what);
            break;
        }
        if (!handle_exit(vcpu))
            break;
    }
    /* Whatever ended the loop, say so: vcpu_wait_parked must not hang. */
    pthread_mutex_lock(&vcpu->lock);
    vcpu->exited = true;
    pthread_cond_broadcast(&vcpu->changed);
    pthread_mutex_unlock(&vcpu->lock);
    return NULL;
}

int vcpu_start(struct vcpu *vcpu, struct gw_error *err)
{
    int rc = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);

    if (rc)
        return gw_error_set(err, -rc, "cannot start the vCPU thread: %s", strerror(rc));
    vcpu->thread_started = true;
    pthread_mutex_lock(&vcpu->lock);
    while (!vcpu->tid)
        pthread_cond_wait(&vcpu->changed, &vcpu->lock);
    pthread_mutex_unlock(&vcpu->lock);
    return 0;
}

pid_t vcpu_thread_id(struct vcpu *vcpu)
{
    pid_t tid;

    pthread_mutex_lock(&vcpu->lock);
    tid = vcpu->tid;
    pthread_mutex_unlock(&vcpu->lock);
    return tid;
}

static void kick(struct vcpu *vcpu)
{
    if (vcpu->thread_started)
        pthread_kill(vcpu->thread, SIG_VCPU_KICK);
}

void vcpu_stop(struct vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->lock);
    vcpu->stop_requested = true;
    pthread_cond_broadcast(&vcpu->changed);   /* one asleep for the throttle wakes */
    pthread_mutex_unlock(&vcpu->lock);
    kick(vcpu);
}

void vcpu_wait_parked(struct vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->lock);
    while (vcpu->thread_started && !vcpu->parked && !vcpu->exited)
        pthread_cond_wait(&vcpu->changed, &vcpu->lock);
    pthread_mutex_unlock(&vcpu->lock);
}

void vcpu_resume(struct vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->lock);
    vcpu->stop_requested = false;
    pthread_cond_broadcast(&vcpu->changed);
    pthread_mutex_unlock(&vcpu->lock);
}

uint64_t vcpu_wait_unparked(struct vcpu *vcpu, uint64_t since_us, uint64_t timeout_us)
{
    uint64_t deadline_us = monotonic_us() + timeout_us, unparked_us;
    struct timespec deadline = { .tv_sec = deadline_us / 1000000,
                                 .tv_nsec = (deadline_us % 1000000) * 1000 };

    pthread_mutex_lock(&vcpu->lock);
    while (vcpu->thread_started && !vcpu->exited && vcpu->unparked_us < since_us &&
           pthread_cond_timedwait(&vcpu->changed, &vcpu->lock, &deadline) != ETIMEDOUT)
        ;
    unparked_us = vcpu->unparked_us >= since_us ? vcpu->unparked_us : 0;
    pthread_mutex_unlock(&vcpu->lock);
    return unparked_us;
}

void vcpu_inject_nmi(struct vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->lock);
    vcpu->nmi_requested = true;
    pthread_cond_broadcast(&vcpu->changed);   /* a parked thread injects it too */
    pthread_mutex_unlock(&vcpu->lock);
    kick(vcpu);
}

void vcpu_throttle(struct vcpu *vcpu, uint64_t ns)
{
    bool kick_it;

    pthread_mutex_lock(&vcpu->lock);
    kick_it = throttle_sleep_request(&vcpu->throttle, ns);
    pthread_cond_broadcast(&vcpu->changed);   /* ns 0: a sleep under way ends */
    pthread_mutex_unlock(&vcpu->lock);
    if (kick_it)
        kick(vcpu);
}

void vcpu_request_dirty_throttle(void *opaque, unsigned cpu)
{
    struct vm *vm = opaque;
    struct vcpu *vcpu;

    if (cpu >= vm->nr_vcpus)
        return;
    vcpu = &vm->vcpus[cpu];
    pthread_mutex_lock(&vcpu->lock);
    vcpu->throttle_requested = true;
    pthread_mutex_unlock(&vcpu->lock);
    kick(vcpu);
}

void vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->thread_started) {
        pthread_mutex_lock(&vcpu->lock);
        vcpu->quit_requested = true;
        pthread_cond_broadcast(&vcpu->changed);
        pthread_mutex_unlock(&vcpu->lock);
        kick(vcpu);
        pthread_join(vcpu->thread, NULL);
        vcpu->thread_started = false;
    }
    if (vcpu->run)
        munmap(vcpu->run, (size_t)vcpu->vm->kvm.vcpu_mmap_size);
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    vcpu->run = NULL;
    vcpu->fd = -1;
    pthread_mutex_destroy(&vcpu->lock);
    pthread_cond_destroy(&vcpu->changed);
}
