/* godwit-vm's QMP and HMP commands: run state, memory dump, NMI, quit, the
 * VM's name and CPUs.
 * Handlers run on the main thread; run-state changes go through
 * run_state.c, which locks. */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <godwit/hmp.h>

static int query_status(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;

    (void)args;
    (void)err;
    enum run_state state = vm_run_state(vm);

    *ret = json_pack("{s:b,s:b,s:s}", "running", state == RUN_STATE_RUNNING,
                     "singlestep", 0, "status", run_state_name(state));
    return 0;
}

static int stop_cmd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)ret;
    (void)err;
    vm_stop(opaque);
    return 0;
}

static int cont_cmd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)ret;
    return vm_cont(opaque, err);
}

static int quit_cmd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)ret;
    (void)err;
    vm_request_exit(opaque, 0, false, "host-qmp-quit");
    return 0;
}

static int write_all(int fd, const uint8_t *data, uint64_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len > (1u << 30) ? (1u << 30) : len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        data += n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Under ram_lock, read: the mapping stays while it is read. */
static int pmemsave_mapped(struct vm *vm, json_t *args, struct gw_error *err)
{
    uint64_t addr = (uint64_t)json_integer_value(json_object_get(args, "val"));
    uint64_t size = (uint64_t)json_integer_value(json_object_get(args, "size"));
    const char *filename = json_string_value(json_object_get(args, "filename"));
    const uint8_t *host = NULL;
    int fd, rc;

    if (vm->memory.released)
        return gw_error_set(err, -EINVAL, "pmemsave: this process has no guest RAM any more: a "
                            "local update handed it to the new process, which runs the guest");
    if (size) {
        host = ram_blocks_translate(vm->memory.blocks, vm->memory.nr_blocks, addr, size, err);
        if (!host) {
            gw_error_prefix(err, "pmemsave: 'val' and 'size' must name guest RAM");
            return -EFAULT;
        }
    }
    fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return gw_error_set(err, -errno, "pmemsave: cannot open '%s' for writing: %s",
                            filename, strerror(errno));
    rc = write_all(fd, host, size);
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        return gw_error_set(err, rc, "pmemsave: cannot write '%s': %s", filename, strerror(-rc));
    return 0;
}

static int pmemsave_cmd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;
    int rc;

    (void)ret;
    pthread_rwlock_rdlock(&vm->ram_lock);
    rc = pmemsave_mapped(vm, args, err);
    pthread_rwlock_unlock(&vm->ram_lock);
    return rc;
}

static int inject_nmi_cmd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;

    (void)args;
    (void)ret;
    (void)err;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_inject_nmi(&vm->vcpus[i]);
    if (vm->config.accel_none)
        soft_cpu_nmi(&vm->soft_cpu);
    return 0;
}

static int query_name(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;

    (void)args;
    (void)err;
    /* As QEMU: without a name the answer is {}. */
    *ret = vm->config.name ? json_pack("{s:s}", "name", vm->config.name) : json_object();
    return 0;
}

/* QEMU's fields for a CPU of an x86 PC machine with one socket, core and
 * thread per CPU; QEMU's qom-path for CPUs made by -smp. */
static json_t *cpu_info(unsigned index, pid_t thread_id)
{
    char qom_path[64];

    snprintf(qom_path, sizeof(qom_path), "/machine/unattached/device[%u]", index);
    return json_pack("{s:i,s:s,s:i,s:{s:i,s:i,s:i},s:s}", "cpu-index", (int)index,
                     "qom-path", qom_path, "thread-id", (int)thread_id, "props", "core-id", 0,
                     "thread-id", 0, "socket-id", (int)index, "target", "x86_64");
}

static int query_cpus_fast(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct vm *vm = opaque;
    json_t *list = json_array();

    (void)args;
    (void)err;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        json_array_append_new(list, cpu_info(i, vcpu_thread_id(&vm->vcpus[i])));
    /* --accel none: the thread that plays the guest is its one CPU. */
    if (vm->config.accel_none)
        json_array_append_new(list, cpu_info(0, soft_cpu_thread_id(&vm->soft_cpu)));
    *ret = list;
    return 0;
}

static const struct qmp_arg pmemsave_args[] = {
    { "val", QMP_ARG_UINT, false },
    { "size", QMP_ARG_UINT, false },
    { "filename", QMP_ARG_STR, false },
    { NULL, 0, false },
};

/* HMP wrappers: the human commands call the QMP ones. */
static int hmp_via_qmp(const char *qmp_name, struct hmp_output *out, struct gw_error *err,
                       struct vm *vm)
{
    json_t *ret = NULL;
    int rc = qmp_server_execute(vm->qmp, qmp_name, NULL, &ret, err);

    (void)out;
    json_decref(ret);
    return rc;
}

static int hmp_info_status(const char *args, struct hmp_output *out, struct gw_error *err,
                           void *opaque)
{
    struct vm *vm = opaque;

    (void)args;
    (void)err;
    hmp_printf(out, "VM status: %s\r\n", run_state_name(vm_run_state(vm)));
    return 0;
}

static int hmp_info_version(const char *args, struct hmp_output *out, struct gw_error *err,
                            void *opaque)
{
    (void)args;
    (void)err;
    (void)opaque;
    hmp_printf(out, "godwit %s\r\n", GODWIT_VERSION);
    return 0;
}

static int hmp_stop(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)args;
    return hmp_via_qmp("stop", out, err, opaque);
}

static int hmp_cont(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)args;
    return hmp_via_qmp("cont", out, err, opaque);
}

static int hmp_quit(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)args;
    return hmp_via_qmp("quit", out, err, opaque);
}

static int hmp_nmi(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)args;
    return hmp_via_qmp("inject-nmi", out, err, opaque);
}

int monitor_init(struct vm *vm, struct gw_error *err)
{
    static struct qmp_command qmp_commands[] = {
        { .name = "query-status", .handler = query_status },
        { .name = "stop", .handler = stop_cmd },
        { .name = "cont", .handler = cont_cmd },
        { .name = "quit", .handler = quit_cmd },
        { .name = "pmemsave", .args = pmemsave_args, .handler = pmemsave_cmd },
        { .name = "inject-nmi", .handler = inject_nmi_cmd },
        { .name = "query-name", .handler = query_name },
        { .name = "query-cpus-fast", .handler = query_cpus_fast },
    };
    static struct hmp_command hmp_commands[] = {
        { "info status", "", "show the VM's run state", hmp_info_status, NULL },
        { "info version", "", "show godwit's version", hmp_info_version, NULL },
        { "stop", "", "stop every vCPU", hmp_stop, NULL },
        { "cont", "", "resume the vCPUs", hmp_cont, NULL },
        { "c", "", "resume the vCPUs (short for cont)", hmp_cont, NULL },
        { "nmi", "", "inject an NMI into every vCPU", hmp_nmi, NULL },
        { "quit", "", "end the VM", hmp_quit, NULL },
        { "q", "", "end the VM (short for quit)", hmp_quit, NULL },
    };
    int rc;

    for (size_t i = 0; i < sizeof(qmp_commands) / sizeof(qmp_commands[0]); i++) {
        qmp_commands[i].opaque = vm;
        rc = qmp_server_register(vm->qmp, &qmp_commands[i], err);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(hmp_commands) / sizeof(hmp_commands[0]); i++) {
        hmp_commands[i].opaque = vm;
        rc = hmp_register(vm->qmp, &hmp_commands[i], err);
        if (rc < 0)
            return rc;
    }
    return 0;
}
