/* QMP and HMP commands of dirty-limit, with QEMU's names, arguments and
 * units (set-vcpu-dirty-limit, cancel-vcpu-dirty-limit,
 * query-vcpu-dirty-limit), and ours for the dirty ring itself
 * (x-query-dirty-ring). Handlers run on the main thread. */
#include "vm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/hmp.h>

/* QEMU's cpu-index is optional: absent means every vCPU. */
static int cpu_index_arg(json_t *args, struct gw_error *err)
{
    json_t *value = json_object_get(args, "cpu-index");
    json_int_t index;

    if (!value)
        return -1;
    index = json_integer_value(value);
    if (index < 0 || index > INT32_MAX) {
        gw_error_set(err, -EINVAL, "cpu-index %" JSON_INTEGER_FORMAT " is not a vCPU of this "
                     "VM; vCPUs are numbered from 0", index);
        return -2;
    }
    return (int)index;
}

static int set_vcpu_dirty_limit(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;
    uint64_t rate = (uint64_t)json_integer_value(json_object_get(args, "dirty-rate"));
    int cpu = cpu_index_arg(args, err);

    (void)ret;
    if (cpu == -2)
        return -EINVAL;
    /* As QEMU: a rate of 0 cancels. */
    return dirty_limit_set(&vm->dirty_limit, cpu, rate, DIRTY_LIMIT_PERIOD_DEFAULT_MS, false,
                           err);
}

static int cancel_vcpu_dirty_limit(json_t *args, json_t **ret, struct gw_error *err,
                                   void *opaque)
{
    struct vm *vm = opaque;
    int cpu = cpu_index_arg(args, err);

    (void)ret;
    if (cpu == -2)
        return -EINVAL;
    /* As QEMU: without a ring there is nothing to cancel, and that is no error. */
    if (!dirty_ring_enabled(&vm->dirty_ring))
        return 0;
    return dirty_limit_set(&vm->dirty_limit, cpu, 0, DIRTY_LIMIT_PERIOD_DEFAULT_MS, false, err);
}

static int query_vcpu_dirty_limit(json_t *args, json_t **ret, struct gw_error *err,
                                  void *opaque)
{
    struct vm *vm = opaque;

    (void)args;
    (void)err;
    *ret = dirty_limit_query(&vm->dirty_limit);
    return 0;
}

/* Ours: what the rings did, for tests and for a person asking why a
 * migration resent everything (overflows: dirty_ring.c). */
static int query_dirty_ring(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;
    struct dirty_ring *ring = &vm->dirty_ring;
    json_t *vcpus = json_array();

    (void)args;
    (void)err;
    for (unsigned v = 0; v < ring->nr_vcpus; v++)
        json_array_append_new(vcpus, json_pack("{s:i,s:I,s:I,s:I}", "cpu-index", (int)v,
            "harvested", (json_int_t)atomic_load(&ring->vcpus[v].harvested),
            "full-exits", (json_int_t)atomic_load(&ring->vcpus[v].full_exits),
            "overflows", (json_int_t)atomic_load(&ring->vcpus[v].overflows)));
    *ret = json_pack("{s:I,s:o}", "size", (json_int_t)ring->entries, "vcpus", vcpus);
    return 0;
}

/* --- HMP, QEMU's: set_vcpu_dirty_limit RATE [CPU], cancel_vcpu_dirty_limit [CPU],
 * info vcpu_dirty_limit --- */

static int hmp_set(const char *args, struct hmp_output *out, struct gw_error *err,
                   void *opaque)
{
    struct vm *vm = opaque;
    long long rate, cpu = -1;
    int fields = sscanf(args, "%lld %lld", &rate, &cpu);

    (void)out;
    if (fields < 1 || rate < 0 || cpu < -1 || cpu > INT32_MAX)
        return gw_error_set(err, -EINVAL, "usage: set_vcpu_dirty_limit RATE [CPU], RATE in "
                            "MB/s from 0 (cancel), CPU a vCPU index");
    return dirty_limit_set(&vm->dirty_limit, (int)cpu, (uint64_t)rate,
                           DIRTY_LIMIT_PERIOD_DEFAULT_MS, false, err);
}

static int hmp_cancel(const char *args, struct hmp_output *out, struct gw_error *err,
                      void *opaque)
{
    struct vm *vm = opaque;
    long long cpu = -1;

    (void)out;
    if (args[0] && (sscanf(args, "%lld", &cpu) != 1 || cpu < 0 || cpu > INT32_MAX))
        return gw_error_set(err, -EINVAL, "usage: cancel_vcpu_dirty_limit [CPU]");
    if (!dirty_ring_enabled(&vm->dirty_ring))
        return 0;
    return dirty_limit_set(&vm->dirty_limit, (int)cpu, 0, DIRTY_LIMIT_PERIOD_DEFAULT_MS, false,
                           err);
}

static int hmp_info(const char *args, struct hmp_output *out, struct gw_error *err,
                    void *opaque)
{
    struct vm *vm = opaque;
    json_t *list = dirty_limit_query(&vm->dirty_limit), *entry;
    size_t i;

    (void)args;
    (void)err;
    if (!json_array_size(list))
        hmp_printf(out, "Dirty page limit not enabled!\r\n");
    json_array_foreach(list, i, entry)
        hmp_printf(out, "vcpu[%" JSON_INTEGER_FORMAT "], limit rate %" JSON_INTEGER_FORMAT
                   " (MB/s), current rate %" JSON_INTEGER_FORMAT " (MB/s)\r\n",
                   json_integer_value(json_object_get(entry, "cpu-index")),
                   json_integer_value(json_object_get(entry, "limit-rate")),
                   json_integer_value(json_object_get(entry, "current-rate")));
    json_decref(list);
    return 0;
}

static const struct qmp_arg set_args[] = {
    { "cpu-index", QMP_ARG_INT, true }, { "dirty-rate", QMP_ARG_UINT, false },
    { NULL, 0, false },
};
static const struct qmp_arg cancel_args[] = {
    { "cpu-index", QMP_ARG_INT, true }, { NULL, 0, false },
};

int dirty_limit_monitor_init(struct vm *vm, struct gw_error *err)
{
    static struct qmp_command qmp_commands[] = {
        { .name = "set-vcpu-dirty-limit", .args = set_args, .handler = set_vcpu_dirty_limit },
        { .name = "cancel-vcpu-dirty-limit", .args = cancel_args,
          .handler = cancel_vcpu_dirty_limit },
        { .name = "query-vcpu-dirty-limit", .handler = query_vcpu_dirty_limit },
        { .name = "x-query-dirty-ring", .handler = query_dirty_ring },
    };
    static struct hmp_command hmp_commands[] = {
        { "set_vcpu_dirty_limit", "RATE [CPU]", "limit the dirty page rate of CPU (every "
          "vCPU if none) to RATE MB/s; 0 cancels", hmp_set, NULL },
        { "cancel_vcpu_dirty_limit", "[CPU]", "cancel the dirty page rate limit of CPU (every "
          "vCPU if none)", hmp_cancel, NULL },
        { "info vcpu_dirty_limit", "", "show each limited vCPU's dirty page rate limit and "
          "current rate", hmp_info, NULL },
    };
    int rc;

    for (size_t i = 0; i < sizeof(qmp_commands) / sizeof(qmp_commands[0]); i++) {
        qmp_commands[i].opaque = vm;
        if ((rc = qmp_server_register(vm->qmp, &qmp_commands[i], err)) < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(hmp_commands) / sizeof(hmp_commands[0]); i++) {
        hmp_commands[i].opaque = vm;
        if ((rc = hmp_register(vm->qmp, &hmp_commands[i], err)) < 0)
            return rc;
    }
    return 0;
}
