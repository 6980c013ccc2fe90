/* godwit-vm's entry point: checks the command line, builds the VM, runs the
 * event loop, and tears everything down. Bad input is checked before any
 * resource exists; whatever was created is removed again on failure, so a
 * refused start leaves nothing behind. Exit status 2 means bad input. */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <godwit/migration.h>

#include "accel.h"
#include "debug_exit.h"
#include "multiboot.h"
#include "pvh.h"

#define EXIT_BAD_INPUT 2

void vm_request_exit(struct vm *vm, int status, bool by_guest, const char *reason)
{
    uint64_t one = 1;
    bool expected = false;

    if (!atomic_compare_exchange_strong(&vm->exit_requested, &expected, true))
        return;   /* the first reason wins */
    snprintf(vm->exit_reason, sizeof(vm->exit_reason), "%s", reason);
    atomic_store(&vm->exit_status, status);
    atomic_store(&vm->guest_requested, by_guest);
    if (write(vm->notify_fd, &one, sizeof(one)) < 0)
        perror("godwit-vm: cannot wake the event loop");
}

/* --- start-up, in the order that keeps failures clean --- */

struct startup {
    uint8_t *kernel_data;
    size_t kernel_size;
    struct multiboot_image kernel;
    struct pvh_image pvh;
    bool is_pvh;                 /* a 64-bit vmlinux, booted through its PVH note */
    int serial_fd;
    bool serial_created;
    int signal_fd;
    /* A local update's destination: the source's RAM, and the cpr channel
     * to answer on once the machine is built (or could not be). */
    struct cpr_memory passed;
    int cpr_conn;
};

/* Guest RAM as the command line asks, or the source's from the cpr channel. */
static int make_memory(struct vm *vm, struct startup *start, struct gw_error *err)
{
    if (vm->config.has_cpr_incoming)
        return memory_adopt(&vm->memory, &vm->config, &start->passed, err);
    return memory_init(&vm->memory, &vm->config, err);
}

static int load_kernel(struct startup *start, const char *path, struct gw_error *err)
{
    int rc = multiboot_read_file(path, &start->kernel_data, &start->kernel_size, err);

    if (rc < 0)
        return rc;
    start->is_pvh = pvh_is_elf64(start->kernel_data, start->kernel_size);
    if (start->is_pvh)
        rc = pvh_parse(start->kernel_data, start->kernel_size, &start->pvh, err);
    else
        rc = multiboot_parse(start->kernel_data, start->kernel_size, &start->kernel, err);
    if (rc < 0)
        gw_error_prefix(err, "kernel '%s' cannot be booted", path);
    return rc;
}

static int open_serial(struct startup *start, const struct vm_config *config,
                       struct gw_error *err)
{
    struct stat st;

    start->serial_fd = -1;
    if (config->serial == SERIAL_STDIO)
        start->serial_fd = dup(STDOUT_FILENO);
    if (config->serial != SERIAL_FILE)
        return 0;
    start->serial_created = stat(config->serial_path, &st) < 0;
    start->serial_fd = open(config->serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (start->serial_fd < 0) {
        start->serial_created = false;
        return gw_error_set(err, -errno, "--serial: cannot open '%s' for writing: %s",
                            config->serial_path, strerror(errno));
    }
    return 0;
}

/* SIGINT and SIGTERM end the VM through the event loop, like QMP quit. */
static int open_signal_fd(struct gw_error *err)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0)
        return gw_error_set(err, -errno, "signalfd failed: %s", strerror(errno));
    return fd;
}

static int check_inputs(struct vm *vm, struct startup *start, struct gw_error *err)
{
    int rc;

    rc = memory_check_size(vm->config.memory, err);
    if (rc < 0)
        return rc;
    rc = load_kernel(start, vm->config.kernel, err);
    if (rc == 0 && start->is_pvh && vm->config.accel_none)
        return gw_error_set(err, -EINVAL, "--accel none plays the multiboot test guest only; "
                            "'%s' is a PVH kernel, which needs --accel kvm", vm->config.kernel);
    return rc;
}

static int create_files(struct vm *vm, struct startup *start, struct gw_error *err)
{
    int rc;

    vm->qmp = qmp_server_new("godwit " GODWIT_VERSION);
    if (!vm->qmp)
        return gw_error_set(err, -ENOMEM, "out of memory creating the QMP server");
    if (vm->config.qmp_path) {
        rc = qmp_server_listen_unix(vm->qmp, vm->config.qmp_path, err);
        if (rc < 0) {
            gw_error_prefix(err, "--qmp");
            return rc;
        }
    }
    return open_serial(start, &vm->config, err);
}

/* --accel none: RAM, the soft CPU, the accel devices; no KVM at all. */
static int build_soft_machine(struct vm *vm, struct startup *start, struct gw_error *err)
{
    struct vcpu_entry entry;
    int rc;

    if ((rc = make_memory(vm, start, err)) < 0 ||
        /* loaded, though not run: RAM holds what it holds under KVM */
        (!config_incoming(&vm->config) &&
         (rc = multiboot_load(&start->kernel, vm->memory.blocks, vm->memory.nr_blocks,
                              vm->config.append, &entry, err)) < 0) ||
        (rc = soft_cpu_init(&vm->soft_cpu, &vm->memory, vm->config.append, start->serial_fd,
                            err)) < 0 ||
        (rc = soft_cpu_register(&vm->soft_cpu, &vm->devices, err)) < 0 ||
        (rc = accel_register(vm, err)) < 0 || (rc = device_measure(&vm->devices, err)) < 0 ||
        (rc = dirty_limit_init(&vm->dirty_limit, &vm->dirty_ring, 1, NULL, NULL, err)) < 0 ||
        (rc = monitor_init(vm, err)) < 0 || (rc = dirty_limit_monitor_init(vm, err)) < 0 ||
        (rc = vm_migration_init(vm, err)) < 0)
        return rc;
    return soft_cpu_start(&vm->soft_cpu, err);
}

static int build_machine(struct vm *vm, struct startup *start, struct gw_error *err)
{
    bool incoming = config_incoming(&vm->config);
    struct vcpu_entry entry;
    int rc;

    if (vm->config.accel_none)
        return build_soft_machine(vm, start, err);
    if ((rc = vcpu_signals_init(err)) < 0 || (rc = kvm_init(&vm->kvm, err)) < 0 ||
        (rc = make_memory(vm, start, err)) < 0)
        return rc;
    /* The ring, or the dirty log with manual protect: never both, since
     * manual protect leaves pages writable when logging starts and the ring
     * would see no write (dirty_ring.c). */
    if (vm->config.dirty_ring_size)
        rc = dirty_ring_enable(&vm->dirty_ring, &vm->kvm, &vm->memory,
                               vm->config.dirty_ring_size, VM_MAX_VCPUS, err);
    else
        dirty_log_init(&vm->dirty_log, &vm->kvm, &vm->memory);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < vm->memory.nr_blocks; i++)
        if ((rc = kvm_add_memslot(&vm->kvm, i, &vm->memory.blocks[i], err)) < 0)
            return rc;
    /* An incoming VM gets RAM and vCPU state from the stream: its RAM stays
     * untouched (all zero), which spares the migration work on zero pages. */
    if (!incoming) {
        if (start->is_pvh)
            rc = pvh_load(&start->pvh, vm->memory.blocks, vm->memory.nr_blocks,
                          vm->config.append, vm->config.smp, &entry, err);
        else
            rc = multiboot_load(&start->kernel, vm->memory.blocks, vm->memory.nr_blocks,
                                vm->config.append, &entry, err);
        if (rc < 0)
            return rc;
    }
    pio_init(&vm->pio);
    uart_init(&vm->uart, start->serial_fd, &vm->kvm);
    pio_register(&vm->pio, UART_COM1_BASE, 8, uart_io, &vm->uart);
    pio_register(&vm->pio, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, debug_exit_io, vm);
    /* nr_vcpus counts those begun, which teardown destroys (a half-made
     * vCPU included: vcpu_create sets it up to be destroyed first) */
    for (unsigned i = 0; i < vm->config.smp; i++) {
        vm->nr_vcpus = i + 1;
        if ((rc = vcpu_create(vm, &vm->vcpus[i], i, err)) < 0)
            return rc;
    }
    /* The boot CPU enters the kernel; KVM holds the others in KVM_RUN until
     * the guest's INIT and SIPI through the in-kernel LAPIC. */
    if ((rc = dirty_limit_init(&vm->dirty_limit, &vm->dirty_ring, vm->nr_vcpus,
                               vcpu_request_dirty_throttle, vm, err)) < 0 ||
        (!incoming && (rc = vcpu_set_multiboot_entry(&vm->vcpus[0], &entry, err)) < 0) ||
        (rc = vm_devices_register(vm, err)) < 0 ||
        (rc = device_measure(&vm->devices, err)) < 0 || (rc = monitor_init(vm, err)) < 0 ||
        (rc = dirty_limit_monitor_init(vm, err)) < 0 || (rc = vm_migration_init(vm, err)) < 0)
        return rc;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if ((rc = vcpu_start(&vm->vcpus[i], err)) < 0)
            return rc;
    return 0;
}

/* --- the event loop: QMP, signals, and exit requests from vCPU threads --- */

static void handle_signal(struct vm *vm, int signal_fd)
{
    struct signalfd_siginfo info;

    if (read(signal_fd, &info, sizeof(info)) == sizeof(info))
        vm_request_exit(vm, 0, false, "host-signal");
}

static void event_loop(struct vm *vm, int signal_fd)
{
    struct pollfd fds[10];

    while (!atomic_load(&vm->exit_requested)) {
        int nfds = qmp_server_pollfds(vm->qmp, fds, 8);
        fds[nfds++] = (struct pollfd){ .fd = vm->notify_fd, .events = POLLIN };
        fds[nfds++] = (struct pollfd){ .fd = signal_fd, .events = POLLIN };
        if (poll(fds, (nfds_t)nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("godwit-vm: poll");
            vm_request_exit(vm, 1, false, "host-error");
            break;
        }
        if (fds[nfds - 1].revents)
            handle_signal(vm, signal_fd);
        qmp_server_service(vm->qmp, fds, nfds - 2);
    }
}

static void shutdown_vm(struct vm *vm)
{
    migration_free(vm->migration);   /* cancels and joins whatever runs */
    vm->migration = NULL;
    vm_pause(vm, RUN_STATE_SHUTDOWN);
    qmp_server_emit_event(vm->qmp, "SHUTDOWN",
                          json_pack("{s:b,s:s}", "guest", atomic_load(&vm->guest_requested),
                                    "reason", vm->exit_reason));
}

static void teardown(struct vm *vm, struct startup *start, bool failed)
{
    migration_free(vm->migration);
    vm->migration = NULL;
    cpu_throttle_cleanup(&vm->throttle);   /* its timer asks the CPUs: before they go */
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_destroy(&vm->vcpus[i]);
    dirty_ring_cleanup(&vm->dirty_ring);   /* the vCPU threads that harvest are gone */
    dirty_limit_cleanup(&vm->dirty_limit); /* and the reaper that ticks it */
    soft_cpu_cleanup(&vm->soft_cpu);
    if (vm->qmp)
        qmp_server_free(vm->qmp);   /* closes the client, removes the socket file */
    dirty_log_cleanup(&vm->dirty_log);
    memory_cleanup(&vm->memory, failed);
    kvm_cleanup(&vm->kvm);
    if (start->serial_fd >= 0)
        close(start->serial_fd);
    if (failed && start->serial_created)
        unlink(vm->config.serial_path);
    if (start->signal_fd >= 0)
        close(start->signal_fd);
    cpr_memory_close(&start->passed);   /* what memory_adopt did not take */
    if (vm->notify_fd >= 0)
        close(vm->notify_fd);
    free(start->kernel_data);
}

int main(int argc, char **argv)
{
    static struct vm vm = { .kvm = { .dev_fd = -1, .vm_fd = -1 }, .notify_fd = -1,
                            .state_lock = PTHREAD_MUTEX_INITIALIZER,
                            .ram_lock = PTHREAD_RWLOCK_INITIALIZER };
    struct startup start = { .serial_fd = -1, .signal_fd = -1, .cpr_conn = -1 };
    struct gw_error err = { 0 };
    int rc, status = EXIT_BAD_INPUT;

    signal(SIGPIPE, SIG_IGN);   /* a vanished peer is an error to report, not a kill */
    rc = options_parse(argc, argv, &vm.config, &err);
    if (rc == OPTIONS_EXIT)
        return 0;
    if (rc < 0 || check_inputs(&vm, &start, &err) < 0 || create_files(&vm, &start, &err) < 0)
        goto fail;
    status = 1;   /* from here on a failure is the host's, not the user's input */
    /* A local update's RAM comes first, before the signals are taken over:
     * until a source connects, SIGTERM ends this process at once. */
    if (vm.config.has_cpr_incoming &&
        (start.cpr_conn = cpr_incoming_receive(vm.config.cpr_incoming.path, &start.passed,
                                               &err)) < 0)
        goto fail;
    vm.notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    start.signal_fd = open_signal_fd(&err);
    /* Before the machine is built: building it starts an --incoming
     * migration, and a short stream (a file) can finish and resume the
     * guest before build_machine returns; that resume must not be undone. */
    if (config_incoming(&vm.config))
        vm.run_state = RUN_STATE_INMIGRATE;   /* the guest starts when the migration ends */
    vm.autostart = !vm.config.start_paused;
    if (vm.notify_fd < 0 || start.signal_fd < 0 || build_machine(&vm, &start, &err) < 0)
        goto fail;
    /* Built, RAM mapped, listening on the main channel: the source may go on. */
    cpr_incoming_answer(start.cpr_conn, 0, NULL);
    start.cpr_conn = -1;
    /* -S: prelaunch, the vCPUs parked until cont, as QEMU. */
    if (!config_incoming(&vm.config) && vm.autostart)
        vm_resume(&vm);
    event_loop(&vm, start.signal_fd);
    shutdown_vm(&vm);
    status = atomic_load(&vm.exit_status);
    teardown(&vm, &start, false);
    return status;
fail:
    fprintf(stderr, "godwit-vm: %s\n", err.msg[0] ? err.msg : "start-up failed");
    cpr_incoming_answer(start.cpr_conn, err.code < 0 ? err.code : -EIO,
                        err.msg[0] ? err.msg : "the new godwit-vm failed to start");
    teardown(&vm, &start, true);
    return status;
}
