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

/* A local update completed: the new process runs the guest on the same
 * pages. KVM lets go of them first, then the mapping goes; the vCPUs are
 * stopped and stay so (postmigrate refuses cont). */
static void release_ram(void *opaque)
{
    struct vm *vm = opaque;
    struct gw_error err = { 0 };

    pthread_rwlock_wrlock(&vm->ram_lock);   /* no pmemsave reads it meanwhile */
    for (unsigned i = 0; !vm->config.accel_none && i < vm->memory.nr_blocks; i++)
        if (kvm_remove_memslot(&vm->kvm, i, &err) < 0)
            fprintf(stderr, "godwit-vm: local update: %s\n", err.msg);
    memory_release(&vm->memory);
    pthread_rwlock_unlock(&vm->ram_lock);
}

static void rollback(void *opaque)
{
    vm_rollback_switchover(opaque);
}

static uint64_t time_stop(void *opaque, uint64_t *start_us)
{
    return vm_time_stop(opaque, start_us);
}

static void incoming_completed(void *opaque, bool source_running)
{
    vm_incoming_completed(opaque, source_running);
}

static uint64_t incoming_resumed_us(void *opaque)
{
    return vm_incoming_resumed_us(opaque);
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
        /* Nothing was loaded into an incoming VM's RAM: fresh anonymous memory,
         * a file this run created or a memfd is all zero. The source's own,
         * from a local update, is not ours to assume anything about. */
        .ram_zero_at_start = config_incoming(&vm->config) &&
                             (vm->memory.fd < 0 || vm->memory.fresh),
        .ram_from_source = vm->memory.adopted,
        .release_ram = release_ram,
        .stop_for_switchover = stop_for_switchover,
        .set_cpu_throttle = set_cpu_throttle,
        .source_completed = source_completed,
        .rollback = rollback,
        .incoming_completed = incoming_completed,
        .incoming_resumed_us = incoming_resumed_us,
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
