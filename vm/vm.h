/* godwit-vm: the machine as a whole. Which thread owns what:
 *  - the main thread (event loop) owns the QMP server, run_state and every
 *    stop/resume; it is the only thread that changes run_state;
 *  - each vCPU thread owns its kvm_run and its KVM vCPU fd while running, and
 *    handles port I/O, which reaches the UART (locked) and pio counters;
 *  - guest RAM is written by the guest and read by anyone; the VMM writes it
 *    only while the vCPUs are stopped or before they start. */
#ifndef GODWIT_VM_H
#define GODWIT_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/qmp.h>
#include <godwit/ram.h>

#include "kvm.h"
#include "memory.h"
#include "options.h"
#include "pio.h"
#include "uart.h"
#include "vcpu.h"

#define VM_MAX_VCPUS 1

/* QEMU's RunState names, the ones this VMM can be in. */
enum run_state {
    RUN_STATE_PRELAUNCH,
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,
    RUN_STATE_INMIGRATE,
    RUN_STATE_POSTMIGRATE,
    RUN_STATE_SHUTDOWN,
};

const char *run_state_name(enum run_state state);

struct vm {
    struct vm_config config;
    struct kvm kvm;
    struct guest_memory memory;
    struct vcpu vcpus[VM_MAX_VCPUS];
    unsigned nr_vcpus;
    struct pio_bus pio;
    struct uart uart;
    struct qmp_server *qmp;

    enum run_state run_state;       /* main thread only */

    /* vCPU threads ask the main thread to end the VM through these. */
    int notify_fd;                  /* eventfd the event loop polls */
    atomic_bool exit_requested;
    atomic_int exit_status;
    atomic_bool guest_requested;    /* the guest asked (debug-exit, triple fault) */
    char exit_reason[32];           /* QEMU's SHUTDOWN reason; set before exit_requested */
};

/* Ask the main thread to end the VM with status; any thread may call it. */
void vm_request_exit(struct vm *vm, int status, bool by_guest, const char *reason);

/* Stops every vCPU (returns when all are parked outside KVM_RUN) / restarts
 * them. Main thread only. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);

/* QMP and HMP commands of the VMM (monitor.c). */
int monitor_init(struct vm *vm, struct gw_error *err);

#endif
