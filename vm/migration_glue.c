/* godwit-vm as the migration engine sees it: its RAM blocks, the KVM dirty
 * log, its devices, and the run-state changes a migration makes. */
#include "vm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>

#include <godwit/migration.h>

static bool stop_for_switchover(void *opaque)
{
    return vm_stop_for_switchover(opaque);
}

/* The cpu throttle's timer asks every CPU to sleep (cpu_throttle.h). */
static void throttle_sleep_all(void *opaque, uint64_t ns)
{
    struct vm *vm = opaque;

    if (vm->config.accel_none)
        soft_cpu_throttle(&vm->soft_cpu, ns);
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_throttle(&vm->vcpus[i], ns);
}

/* auto-converge's steps, and 0 when the migration ends. */
static void set_cpu_throttle(void *opaque, unsigned percent)
{
    struct vm *vm = opaque;
    struct gw_error err = { 0 };

    if (cpu_throttle_set(&vm->throttle, percent, &err) < 0)
        fprintf(stderr, "godwit-vm: auto-converge: %s\n", err.msg);
}

static void source_completed(void *opaque)
{
    vm_source_completed(opaque);
}

static void rollback(void *opaque)
{
    vm_rollback_switchover(opaque);
}

static uint64_t time_stop(void *opaque)
{
    return vm_time_stop(opaque);
}

static void incoming_completed(void *opaque, bool source_running)
{
    vm_incoming_completed(opaque, source_running);
}

/* As QEMU does, a destination whose migration failed ends: it never ran the
 * guest, and the source still has it. */
static unsigned vcpu_threads(void *opaque, int *tids, unsigned max)
{
    struct vm *vm = opaque;
    unsigned n = vm->nr_vcpus < max ? vm->nr_vcpus : max;

    for (unsigned i = 0; i < n; i++)
        tids[i] = vcpu_thread_id(&vm->vcpus[i]);
    return n;
}

static void incoming_failed(void *opaque, const char *message)
{
    fprintf(stderr, "godwit-vm: incoming migration failed: %s\n", message);
    vm_request_exit(opaque, 1, false, "host-error");
}

/* The engine's dirty-limit: a quota for every vCPU, held against QMP's
 * set-vcpu-dirty-limit until the migration ends it. */
static int dirty_limit_start(void *opaque, uint64_t mb_per_s, uint64_t period_ms,
                             struct gw_error *err)
{
    struct vm *vm = opaque;

    return dirty_limit_set(&vm->dirty_limit, -1, mb_per_s, period_ms, true, err);
}

static void dirty_limit_stop(void *opaque)
{
    struct vm *vm = opaque;

    dirty_limit_set(&vm->dirty_limit, -1, 0, DIRTY_LIMIT_PERIOD_DEFAULT_MS, true, NULL);
}

static void dirty_limit_stats_of(void *opaque, uint64_t *throttle_us_per_round,
                                 uint64_t *ring_full_us)
{
    struct vm *vm = opaque;

    dirty_limit_stats(&vm->dirty_limit, throttle_us_per_round, ring_full_us);
}

int vm_migration_init(struct vm *vm, struct gw_error *err)
{
    struct migration_host host = {
        .opaque = vm,
        .blocks = vm->memory.blocks,
        .nr_blocks = vm->memory.nr_blocks,
        .dirty = vm->config.accel_none ? &soft_dirty_ops
                 : dirty_ring_enabled(&vm->dirty_ring) ? &dirty_ring_ops : &dirty_log_ops,
        .dirty_opaque = vm->config.accel_none ? (void *)&vm->soft_cpu
                        : dirty_ring_enabled(&vm->dirty_ring) ? (void *)&vm->dirty_ring
                                                               : (void *)&vm->dirty_log,
        .devices = &vm->devices,
        /* Nothing was loaded into an incoming VM's RAM: fresh anonymous memory
         * or a file this run created is all zero. */
        .ram_zero_at_start = config_incoming(&vm->config) &&
                             (vm->memory.fd < 0 || vm->memory.created_file),
        .stop_for_switchover = stop_for_switchover,
        .set_cpu_throttle = set_cpu_throttle,
        .source_completed = source_completed,
        .rollback = rollback,
        .incoming_completed = incoming_completed,
        .time_stop = time_stop,
        .incoming_failed = incoming_failed,
        .go_timeout_ms = vm->config.go_timeout_ms,
        .vcpu_threads = vcpu_threads,
    };
    bool ring = dirty_ring_enabled(&vm->dirty_ring);
    int rc;

    if ((rc = cpu_throttle_init(&vm->throttle, throttle_sleep_all, vm, err)) < 0)
        return rc;
    if (ring) {
        host.dirty_limit_start = dirty_limit_start;
        host.dirty_limit_stop = dirty_limit_stop;
        host.dirty_limit_stats = dirty_limit_stats_of;
    }
    vm->migration = migration_new(&host, vm->qmp, err);
    if (!vm->migration)
        return -EINVAL;
    rc = migration_register_monitor(vm->migration, err);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < vm->config.nr_objects; i++) {
        if ((rc = migration_object_add(vm->migration, vm->config.objects[i], err)) < 0) {
            gw_error_prefix(err, "--object %s", vm->config.objects[i]);
            return rc;
        }
    }
    if (vm->config.incoming_defer)
        migration_expect_incoming(vm->migration);
    if (vm->config.has_incoming_uri) {
        char uri[PATH_MAX + 32];
        uri_format(&vm->config.incoming, uri, sizeof(uri));
        rc = migration_incoming(vm->migration, uri, err);
        if (rc < 0)
            gw_error_prefix(err, "--incoming");
    }
    return rc;
}
