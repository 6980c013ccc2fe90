/* godwit-vm: the machine as a whole. Which thread owns what:
 *  - the main thread (event loop) owns the QMP server; run_state and every
 *    stop/resume happen under state_lock (run_state.c), from the main thread
 *    or from the migration thread (switchover, rollback, the destination's
 *    start);
 *  - each vCPU thread owns its kvm_run and its KVM vCPU fd while running, and
 *    handles port I/O, which reaches the UART (locked) and pio counters;
 *  - guest RAM is written by the guest and read by anyone; the VMM writes it
 *    only while the vCPUs are stopped or before they start. Its mapping goes
 *    away only in a local update's release, under ram_lock held for writing;
 *    the monitor reads RAM (pmemsave) under it held for reading. */
#ifndef GODWIT_VM_H
#define GODWIT_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/device.h>
#include <godwit/error.h>
#include <godwit/qmp.h>
#include <godwit/ram.h>

#include "cpu_throttle.h"
#include "dirty_limit.h"
#include "dirty_log.h"
#include "dirty_ring.h"
#include "kvm.h"
#include "memory.h"
#include "options.h"
#include "pio.h"
#include "soft_cpu.h"
#include "uart.h"
#include "vcpu.h"

#define VM_MAX_VCPUS VM_SMP_MAX

/* QEMU's RunState names, the ones this VMM can be in. */
enum run_state {
    RUN_STATE_PRELAUNCH,
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,
    RUN_STATE_INMIGRATE,
    RUN_STATE_POSTMIGRATE,
    RUN_STATE_FINISH_MIGRATE,
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
    struct device_registry devices;  /* filled at start-up, read-only afterwards */

    pthread_mutex_t state_lock;     /* run_state, autostart, vCPU stop/resume */
    pthread_rwlock_t ram_lock;      /* the mapping of guest RAM (memory.released) */
    enum run_state run_state;
    bool autostart;                 /* incoming: run the guest when it arrives (no -S) */
    enum run_state before_switchover;  /* the migration thread's: what a rollback restores */
    /* kvmclock while the guest does not run (QEMU's kvmclock does the same):
     * read when the vCPUs stop, or taken from the stream, and set again when
     * they start, so guest time stands still while it is paused and goes on
     * from the source's value on a destination, however long the load took
     * before the resume. Under state_lock. */
    struct kvm_clock_data held_clock;
    bool clock_held;
    struct dirty_log dirty_log;     /* the default tracker */
    struct dirty_ring dirty_ring;   /* --accel kvm,dirty-ring-size=N: the tracker instead */
    struct dirty_limit dirty_limit; /* QEMU's dirty-limit, on the ring */
    struct soft_cpu soft_cpu;       /* --accel none: plays the guest, no vCPUs */
    struct cpu_throttle throttle;   /* auto-converge's, asked for by the migration thread */
    struct migration *migration;
    uint64_t incoming_resumed_us;   /* the destination's: when the arrived guest ran, 0 if it did not */

    /* vCPU threads ask the main thread to end the VM through these. */
    int notify_fd;                  /* eventfd the event loop polls */
    atomic_bool exit_requested;
    atomic_int exit_status;
    atomic_bool guest_requested;    /* the guest asked (debug-exit, triple fault) */
    char exit_reason[32];           /* QEMU's SHUTDOWN reason; set before exit_requested */
};

/* Ask the main thread to end the VM with status; any thread may call it. */
void vm_request_exit(struct vm *vm, int status, bool by_guest, const char *reason);

/* Run states (run_state.c); any thread. vm_pause stops every vCPU (returns
 * when all are parked outside KVM_RUN) and enters new_state; "stop"
 * (PAUSED) leaves a VM that does not run as it is. Returns the state it
 * left. vm_resume runs the vCPUs unless they run or the VM has shut down;
 * returns whether it started them. */
enum run_state vm_pause(struct vm *vm, enum run_state new_state);
bool vm_resume(struct vm *vm);
enum run_state vm_run_state(struct vm *vm);
/* QMP cont and stop, with QEMU's meaning: on an incoming VM they set
 * whether the guest runs when it arrives; cont is refused while the VM is
 * in a switchover, migrated away, or shut down. */
int vm_cont(struct vm *vm, struct gw_error *err);
void vm_stop(struct vm *vm);
/* The migration's changes: the source's switchover (returns whether the
 * guest ran), its rollback to the state before it, its completion; the
 * destination's completion (runs the guest if it ran on the source and
 * autostart holds, else leaves it paused). */
bool vm_stop_for_switchover(struct vm *vm);
void vm_rollback_switchover(struct vm *vm);
void vm_source_completed(struct vm *vm);
void vm_incoming_completed(struct vm *vm, bool source_running);
/* After vm_incoming_completed: when the guest ran again (CLOCK_MONOTONIC
 * us, its last vCPU back from its stop), 0 if it stayed paused. */
uint64_t vm_incoming_resumed_us(struct vm *vm);
/* Stops a running guest's vCPUs and starts them again at once, no event;
 * returns how long the stop took in us (0: it was not running), and in
 * start_us how long until every vCPU ran again. */
uint64_t vm_time_stop(struct vm *vm, uint64_t *start_us);

/* kvmclock held while the guest does not run (run_state.c): the kvm-clock
 * device's load hands over the source's; its save reads the held one when
 * there is one. */
void vm_hold_clock(struct vm *vm, const struct kvm_clock_data *clock);
bool vm_held_clock(struct vm *vm, struct kvm_clock_data *clock);

/* The engine's view of this VMM (migration_glue.c). */
int vm_migration_init(struct vm *vm, struct gw_error *err);

/* Registers the migratable state of the vCPUs, the in-kernel irqchip, PIT
 * and clock, and the UART as devices (vm_devices.c). */
int vm_devices_register(struct vm *vm, struct gw_error *err);

/* QMP and HMP commands of the VMM (monitor.c), and those of the dirty ring
 * and dirty-limit (dirty_limit_monitor.c). */
int monitor_init(struct vm *vm, struct gw_error *err);
int dirty_limit_monitor_init(struct vm *vm, struct gw_error *err);

#endif
