/* A vCPU and its thread. The thread owns the vCPU fd while in KVM_RUN; other
 * threads talk to it only through the request flags under lock, and a kick
 * signal that makes KVM_RUN return. */
#ifndef GODWIT_VM_VCPU_H
#define GODWIT_VM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdint.h>

#include <godwit/error.h>

#include "cpu_throttle.h"

struct vm;

struct vcpu {
    unsigned id;
    int fd;
    struct kvm_run *run;
    struct vm *vm;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock;
    pthread_cond_t changed;   /* broadcast on any change of the fields below */
    bool stop_requested;      /* set by the main thread */
    bool nmi_requested;
    bool quit_requested;
    bool throttle_requested;  /* dirty-limit: pay for a ring the reaper took */
    bool parked;              /* set by the vCPU thread: out of KVM_RUN, waiting */
    bool exited;              /* set by the vCPU thread as it ends */
    uint64_t unparked_us;     /* set by the vCPU thread: CLOCK_MONOTONIC when it last left its park */
    pid_t tid;                /* the thread's id, set as it starts (query-cpus-fast) */
    struct throttle_sleep throttle;   /* the cpu throttle's sleeps, taken between runs */
};

/* The register state a multiboot v1 or PVH loader hands over. */
struct vcpu_entry {
    uint32_t eip;
    uint32_t eax;
    uint32_t ebx;
};

int vcpu_create(struct vm *vm, struct vcpu *vcpu, unsigned id, struct gw_error *err);
/* 32-bit protected mode, flat segments, paging off, interrupts off: the
 * entry state of multiboot v1 and of PVH alike (EAX, EBX as the loader says). */
int vcpu_set_multiboot_entry(struct vcpu *vcpu, const struct vcpu_entry *entry,
                             struct gw_error *err);
/* Starts the thread parked: it enters the guest on the first vcpu_resume.
 * Returns once the thread runs, so its id is known. */
int vcpu_start(struct vcpu *vcpu, struct gw_error *err);
pid_t vcpu_thread_id(struct vcpu *vcpu);

void vcpu_stop(struct vcpu *vcpu);          /* asks; returns at once */
void vcpu_wait_parked(struct vcpu *vcpu);   /* returns when out of KVM_RUN */
void vcpu_resume(struct vcpu *vcpu);
/* After vcpu_resume: waits until the thread has left its park at or after
 * since_us (CLOCK_MONOTONIC, us), or has ended, or timeout_us has passed.
 * Returns when it left (0 if it did not). */
uint64_t vcpu_wait_unparked(struct vcpu *vcpu, uint64_t since_us, uint64_t timeout_us);
void vcpu_inject_nmi(struct vcpu *vcpu);
/* The cpu throttle: sleep ns out of KVM_RUN as soon as possible (kicked
 * out of it), or lengthen a sleep pending or under way (cpu_throttle.h);
 * 0 ends any sleep now. */
void vcpu_throttle(struct vcpu *vcpu, uint64_t ns);
/* Dirty-limit's request_throttle (opaque: the struct vm): vCPU cpu leaves
 * the guest to sleep off what it owes. */
void vcpu_request_dirty_throttle(void *opaque, unsigned cpu);
void vcpu_destroy(struct vcpu *vcpu);       /* ends the thread, closes the fd */

/* Blocks the kick signal in the calling thread (call before starting
 * vCPU threads, so that only KVM_RUN ever takes it). */
int vcpu_signals_init(struct gw_error *err);

#endif
