/* The VM's run state, QEMU's RunState: every change happens here, under
 * state_lock, together with the vCPU stop or start it stands for, so a
 * check and the change it allows (cont, a switchover's stop) cannot be
 * separated by another thread's change. Events go out after the lock is
 * dropped, in the order QEMU sends them. */
#include "vm.h"
#include "clock.h"

#include <errno.h>
#include <stdio.h>

#include "kvm_state.h"

const char *run_state_name(enum run_state state)
{
    static const char *const names[] = {
        [RUN_STATE_PRELAUNCH] = "prelaunch", [RUN_STATE_RUNNING] = "running",
        [RUN_STATE_PAUSED] = "paused", [RUN_STATE_INMIGRATE] = "inmigrate",
        [RUN_STATE_POSTMIGRATE] = "postmigrate",
        [RUN_STATE_FINISH_MIGRATE] = "finish-migrate", [RUN_STATE_SHUTDOWN] = "shutdown",
    };
    return names[state];
}

/* Under state_lock: returns when no vCPU is inside the guest. */
static void stop_vcpus_locked(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_stop(&vm->vcpus[i]);
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_wait_parked(&vm->vcpus[i]);
    if (vm->config.accel_none)
        soft_cpu_stop(&vm->soft_cpu);
}

/* Under state_lock, the vCPUs just stopped: keep the clock as it is now. */
static void hold_clock_locked(struct vm *vm)
{
    struct gw_error err = { 0 };

    if (vm->config.accel_none || vm->clock_held)
        return;
    if (kvm_state_get_clock(&vm->kvm, &vm->held_clock, &err) < 0) {
        fprintf(stderr, "godwit-vm: %s; guest time runs on while it is paused\n", err.msg);
        return;
    }
    /* A local pause: no wall-clock catch-up (KVM_CLOCK_REALTIME) at resume. */
    vm->held_clock.flags = 0;
    vm->clock_held = true;
}

/* Under state_lock, before the vCPUs start: guest time goes on from where
 * it was held. */
static void release_clock_locked(struct vm *vm)
{
    struct gw_error err = { 0 };

    if (!vm->clock_held)
        return;
    vm->clock_held = false;
    if (kvm_state_set_clock(&vm->kvm, &vm->held_clock, &err) < 0)
        fprintf(stderr, "godwit-vm: %s; guest time jumps by the pause\n", err.msg);
}

void vm_hold_clock(struct vm *vm, const struct kvm_clock_data *clock)
{
    pthread_mutex_lock(&vm->state_lock);
    vm->held_clock = *clock;
    vm->clock_held = true;
    pthread_mutex_unlock(&vm->state_lock);
}

bool vm_held_clock(struct vm *vm, struct kvm_clock_data *clock)
{
    bool held;

    pthread_mutex_lock(&vm->state_lock);
    held = vm->clock_held;
    if (held)
        *clock = vm->held_clock;
    pthread_mutex_unlock(&vm->state_lock);
    return held;
}

/* Under state_lock. Returns whether the guest was started (it did not run
 * and the VM has not shut down). */
static bool start_locked(struct vm *vm)
{
    if (vm->run_state == RUN_STATE_RUNNING || vm->run_state == RUN_STATE_SHUTDOWN)
        return false;
    release_clock_locked(vm);
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_resume(&vm->vcpus[i]);
    if (vm->config.accel_none)
        soft_cpu_resume(&vm->soft_cpu);
    vm->run_state = RUN_STATE_RUNNING;
    return true;
}

enum run_state vm_pause(struct vm *vm, enum run_state new_state)
{
    enum run_state old;

    pthread_mutex_lock(&vm->state_lock);
    old = vm->run_state;
    if (old == RUN_STATE_RUNNING) {
        stop_vcpus_locked(vm);
        hold_clock_locked(vm);
    }
    /* "stop" leaves a VM that does not run as it is (inmigrate, prelaunch,
     * postmigrate keep their meaning), as QEMU's vm_stop does. */
    if (old == RUN_STATE_RUNNING || new_state != RUN_STATE_PAUSED)
        vm->run_state = new_state;
    pthread_mutex_unlock(&vm->state_lock);
    /* QEMU sends no STOP for a shutdown: SHUTDOWN says it. */
    if (old == RUN_STATE_RUNNING && new_state != RUN_STATE_SHUTDOWN)
        qmp_server_emit_event(vm->qmp, "STOP", NULL);
    return old;
}

bool vm_resume(struct vm *vm)
{
    bool started;

    pthread_mutex_lock(&vm->state_lock);
    started = start_locked(vm);
    pthread_mutex_unlock(&vm->state_lock);
    if (started)
        qmp_server_emit_event(vm->qmp, "RESUME", NULL);
    return started;
}

enum run_state vm_run_state(struct vm *vm)
{
    enum run_state state;

    pthread_mutex_lock(&vm->state_lock);
    state = vm->run_state;
    pthread_mutex_unlock(&vm->state_lock);
    return state;
}

int vm_cont(struct vm *vm, struct gw_error *err)
{
    bool started = false;
    int rc = 0;

    pthread_mutex_lock(&vm->state_lock);
    switch (vm->run_state) {
    case RUN_STATE_INMIGRATE:
        /* As QEMU: the guest starts when the migration completes, if it
         * ran on the source (undoes -S or an earlier stop). */
        vm->autostart = true;
        break;
    case RUN_STATE_FINISH_MIGRATE:
        rc = gw_error_set(err, -EBUSY, "the VM is stopped for a migration's switchover; cancel "
                          "the migration with migrate_cancel to keep it here");
        break;
    case RUN_STATE_POSTMIGRATE:
        rc = gw_error_set(err, -EINVAL, "the VM has migrated away and belongs to the "
                          "destination now; resuming it here too would run the guest twice");
        break;
    case RUN_STATE_SHUTDOWN:
        rc = gw_error_set(err, -EINVAL, "the VM has shut down and cannot continue");
        break;
    default:
        started = start_locked(vm);
        break;
    }
    pthread_mutex_unlock(&vm->state_lock);
    if (started)
        qmp_server_emit_event(vm->qmp, "RESUME", NULL);
    return rc;
}

void vm_stop(struct vm *vm)
{
    pthread_mutex_lock(&vm->state_lock);
    if (vm->run_state == RUN_STATE_INMIGRATE) {
        vm->autostart = false;   /* QEMU: the guest stays paused when it arrives */
        pthread_mutex_unlock(&vm->state_lock);
        return;
    }
    pthread_mutex_unlock(&vm->state_lock);
    vm_pause(vm, RUN_STATE_PAUSED);
}

bool vm_stop_for_switchover(struct vm *vm)
{
    enum run_state old = vm_pause(vm, RUN_STATE_FINISH_MIGRATE);

    /* Only the migration thread reads it, in vm_rollback_switchover; nothing
     * but it leaves finish-migrate. */
    vm->before_switchover = old;
    return old == RUN_STATE_RUNNING;
}

/* Under state_lock, just after start_locked: when every vCPU thread had
 * left its stop, so that the downtime ends when the guest ran, not when a
 * host short of cores let the migration thread say so. The soft CPU has
 * no such moment: 0. */
static uint64_t wait_resumed_locked(struct vm *vm, uint64_t started_us)
{
    uint64_t resumed_us = 0;

    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        uint64_t unparked_us = vcpu_wait_unparked(&vm->vcpus[i], started_us, 100000);

        if (!unparked_us)
            return 0;
        resumed_us = unparked_us > resumed_us ? unparked_us : resumed_us;
    }
    return resumed_us;
}

/* Under state_lock, the guest running: one stop and restart, timed: how
 * long until no vCPU ran, and how long after the restart until every vCPU
 * ran again (0 for the soft CPU, which has no such moment). */
static void time_one_stop_locked(struct vm *vm, uint64_t *stop_us, uint64_t *start_us)
{
    uint64_t before = monotonic_us();

    stop_vcpus_locked(vm);
    uint64_t stopped = monotonic_us();
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_resume(&vm->vcpus[i]);
    if (vm->config.accel_none)
        soft_cpu_resume(&vm->soft_cpu);
    uint64_t resumed = wait_resumed_locked(vm, stopped);
    *stop_us = stopped - before;
    *start_us = resumed > stopped ? resumed - stopped : 0;
}

static uint64_t median_of_3(const uint64_t us[3])
{
    uint64_t low = us[0] < us[1] ? us[0] : us[1], high = us[0] < us[1] ? us[1] : us[0];

    return us[2] < low ? low : us[2] > high ? high : us[2];
}

/* The median of three: one vCPU thread that the host's scheduler happens
 * to hold off must not stand for every stop. */
uint64_t vm_time_stop(struct vm *vm, uint64_t *start_us)
{
    uint64_t stop[3] = { 0 }, start[3] = { 0 };

    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&vm->state_lock);
        if (vm->run_state == RUN_STATE_RUNNING)
            time_one_stop_locked(vm, &stop[i], &start[i]);
        pthread_mutex_unlock(&vm->state_lock);
    }
    *start_us = median_of_3(start);
    return median_of_3(stop);
}

void vm_rollback_switchover(struct vm *vm)
{
    bool started = false;

    pthread_mutex_lock(&vm->state_lock);
    if (vm->run_state == RUN_STATE_FINISH_MIGRATE) {
        if (vm->before_switchover == RUN_STATE_RUNNING)
            started = start_locked(vm);
        else
            vm->run_state = vm->before_switchover;
    }
    pthread_mutex_unlock(&vm->state_lock);
    if (started)
        qmp_server_emit_event(vm->qmp, "RESUME", NULL);
}

void vm_source_completed(struct vm *vm)
{
    pthread_mutex_lock(&vm->state_lock);
    vm->run_state = RUN_STATE_POSTMIGRATE;
    pthread_mutex_unlock(&vm->state_lock);
}

void vm_incoming_completed(struct vm *vm, bool source_running)
{
    bool started = false;
    uint64_t started_us = monotonic_us();

    pthread_mutex_lock(&vm->state_lock);
    if (vm->run_state == RUN_STATE_INMIGRATE) {
        if (source_running && vm->autostart) {
            started = start_locked(vm);
            if (started)
                vm->incoming_resumed_us = wait_resumed_locked(vm, started_us);
        } else
            vm->run_state = RUN_STATE_PAUSED;
    }
    pthread_mutex_unlock(&vm->state_lock);
    if (started)
        qmp_server_emit_event(vm->qmp, "RESUME", NULL);
}

uint64_t vm_incoming_resumed_us(struct vm *vm)
{
    uint64_t resumed_us;

    pthread_mutex_lock(&vm->state_lock);
    resumed_us = vm->incoming_resumed_us;
    pthread_mutex_unlock(&vm->state_lock);
    return resumed_us;
}
