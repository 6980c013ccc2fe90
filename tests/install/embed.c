/* Another VMM in miniature, built out of tree against the installed
 * libgodwit (tests/install/test_install.py): <godwit/...> headers and
 * `pkg-config godwit` only, plain C11. It migrates one RAM block and one
 * device between two engines in this process, over a unix socket. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <time.h>

#include <godwit/device.h>
#include <godwit/dirty.h>
#include <godwit/error.h>
#include <godwit/hmp.h>
#include <godwit/migration.h>
#include <godwit/qmp.h>
#include <godwit/ram.h>
#include <godwit/uri.h>

#define PAGE 4096u
#define PAGES 64u
#define REDIRTIED_PAGE 7u

/* One VM: its RAM, a device whose whole state is a counter, and what the
 * engine told it through the host callbacks. Callbacks come from the
 * migration thread; main reads the flags only after the migration ended. */
struct vm {
    const char *name;
    struct ram_block block;
    struct device_registry devices;
    uint64_t counter;
    bool running;
    bool ran_before_switchover;
    unsigned syncs;
    unsigned redirtied;
    char failure[GW_ERROR_MSG_MAX];
    struct qmp_server *qmp;
    struct migration *migration;
};

static int fail(const char *what, const struct gw_error *err)
{
    fprintf(stderr, "embed: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    return 1;
}

/* --- the dirty tracker: the engine's first pass sends every page; the
 * guest writing a page after it was sent is played by the first sync, which
 * changes one and marks it: the destination must end with the new bytes. --- */

static int dirty_start(void *opaque, struct gw_error *err)
{
    (void)opaque;
    (void)err;
    return 0;
}

static int dirty_sync(void *opaque, unsigned block, uint64_t *bitmap,
                      struct dirty_sync_times *times, struct gw_error *err)
{
    struct vm *vm = opaque;

    (void)block;
    (void)times;
    (void)err;
    if (++vm->syncs == 1 && vm->running) {
        vm->block.host[REDIRTIED_PAGE * PAGE] ^= 0xff;
        bitmap[REDIRTIED_PAGE / 64] |= 1ull << (REDIRTIED_PAGE % 64);
        vm->redirtied++;
    }
    return 0;
}

static int dirty_clear(void *opaque, unsigned block, uint64_t first_page, const uint64_t *bits,
                       unsigned nr_words, struct gw_error *err)
{
    (void)opaque, (void)block, (void)first_page, (void)bits, (void)nr_words, (void)err;
    return 0;
}

static void dirty_stop(void *opaque)
{
    (void)opaque;
}

static const struct dirty_tracker_ops dirty_ops = {
    .start = dirty_start, .sync = dirty_sync, .clear = dirty_clear, .stop = dirty_stop,
};

/* --- the device --- */

static int counter_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct vm *vm = opaque;

    if (gw_buffer_append(out, &vm->counter, sizeof(vm->counter)) < 0)
        return gw_error_set(err, -ENOMEM, "out of memory saving the counter");
    return 0;
}

static int counter_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                        struct gw_error *err)
{
    struct vm *vm = opaque;

    if (len != sizeof(vm->counter) || version != 1)
        return gw_error_set(err, -EINVAL, "counter state of %zu bytes, version %u: "
                            "expected 8 bytes, version 1", len, (unsigned)version);
    memcpy(&vm->counter, data, len);
    return 0;
}

static const struct device_ops counter_ops = { .save = counter_save, .load = counter_load };

/* --- the host callbacks --- */

static bool stop_for_switchover(void *opaque)
{
    struct vm *vm = opaque;

    vm->ran_before_switchover = vm->running;
    vm->running = false;
    return vm->ran_before_switchover;
}

static void source_completed(void *opaque)
{
    (void)opaque;
}

/* A failure after stop_for_switchover: back to the state before it. */
static void rollback(void *opaque)
{
    struct vm *vm = opaque;

    vm->running = vm->ran_before_switchover;
}

/* The guest is ours now: it runs here if it ran on the source. */
static void incoming_completed(void *opaque, bool source_running)
{
    ((struct vm *)opaque)->running = source_running;
}

static void incoming_failed(void *opaque, const char *message)
{
    struct vm *vm = opaque;

    snprintf(vm->failure, sizeof(vm->failure), "%s", message);
}

static int vm_init(struct vm *vm, const char *name, bool running, uint8_t fill,
                   struct gw_error *err)
{
    int rc;

    memset(vm, 0, sizeof(*vm));
    vm->name = name;
    vm->running = running;
    vm->block = (struct ram_block){ .name = "ram", .size = PAGES * PAGE, .page_size = PAGE,
                                    .fd = -1 };
    vm->block.host = aligned_alloc(PAGE, PAGES * PAGE);
    if (!vm->block.host)
        return gw_error_set(err, -ENOMEM, "out of memory for guest RAM");
    for (unsigned i = 0; i < PAGES * PAGE; i++)
        vm->block.host[i] = fill ? (uint8_t)(fill + i / PAGE) : 0;
    rc = device_register(&vm->devices, "counter", 0, 1, &counter_ops, vm, err);
    if (rc < 0)
        return rc;
    vm->qmp = qmp_server_new(name);
    if (!vm->qmp)
        return gw_error_set(err, -ENOMEM, "out of memory for the QMP server");

    struct migration_host host = {
        .opaque = vm, .blocks = &vm->block, .nr_blocks = 1,
        .dirty = &dirty_ops, .dirty_opaque = vm, .devices = &vm->devices,
        .ram_zero_at_start = !running,
        .stop_for_switchover = stop_for_switchover, .source_completed = source_completed,
        .rollback = rollback, .incoming_completed = incoming_completed,
        .incoming_failed = incoming_failed,
    };
    vm->migration = migration_new(&host, vm->qmp, err);
    if (!vm->migration)
        return err->code ? err->code : -EINVAL;
    return migration_register_monitor(vm->migration, err);
}

static void vm_free(struct vm *vm)
{
    migration_free(vm->migration);
    qmp_server_free(vm->qmp);
    free(vm->block.host);
}

static bool finished(enum migration_status status)
{
    return status == MIGRATION_COMPLETED || status == MIGRATION_FAILED ||
           status == MIGRATION_CANCELLED;
}

/* Errors an embedder meets first: each must come back as a sentence. */
static int check_refusals(struct vm *src)
{
    struct gw_error err = { 0 };
    struct ram_block odd = { .name = "odd", .size = PAGE + 1, .page_size = PAGE, .fd = -1 };
    struct migration_host host = { .blocks = &odd, .nr_blocks = 1, .dirty = &dirty_ops };
    json_t *args, *ret = NULL;
    int rc;

    if (migration_new(&host, NULL, &err) || err.code >= 0 || !err.msg[0])
        return fail("a block of PAGE + 1 bytes was not refused with a sentence", NULL);
    printf("bad block: %s\n", err.msg);

    gw_error_clear(&err);
    args = json_pack("{s:i}", "downtime-limit", -1);
    rc = qmp_server_execute(src->qmp, "migrate-set-parameters", args, &ret, &err);
    json_decref(args);
    json_decref(ret);
    if (rc >= 0 || !strstr(err.msg, "downtime-limit"))
        return fail("downtime-limit -1 was not refused by name", &err);
    printf("bad parameter: %s\n", err.msg);

    gw_error_clear(&err);
    if (migration_incoming(src->migration, "pigeon:1", &err) >= 0 ||
        !strstr(err.msg, uri_accepted_forms))
        return fail("the URI pigeon:1 was not refused with the accepted forms", &err);
    printf("bad URI: %s\n", err.msg);
    return 0;
}

static int wait_both(struct vm *src, struct vm *dst)
{
    struct timespec pause = { .tv_nsec = 10 * 1000 * 1000 };

    for (int i = 0; i < 3000; i++) {   /* 30 s */
        if (finished(migration_status(src->migration)) &&
            finished(migration_status(dst->migration)))
            return 0;
        thrd_sleep(&pause, NULL);
    }
    return -1;
}

static int run(const char *dir)
{
    struct vm src, dst;
    struct gw_error err = { 0 };
    char uri[512], *info;
    json_t *args, *ret = NULL;
    int rc;

    if (vm_init(&src, "embed-source", true, 0x11, &err) < 0 ||
        vm_init(&dst, "embed-destination", false, 0, &err) < 0)
        return fail("setting up the VMs", &err);
    src.counter = 0x600d1700ull;
    if ((rc = check_refusals(&src)) != 0)
        goto out;

    snprintf(uri, sizeof(uri), "unix:%s/migration.sock", dir);
    if (migration_incoming(dst.migration, uri, &err) < 0) {
        rc = fail("migration_incoming", &err);
        goto out;
    }
    args = json_pack("{s:s}", "uri", uri);
    rc = qmp_server_execute(src.qmp, "migrate", args, &ret, &err);
    json_decref(args);
    json_decref(ret);
    if (rc < 0) {
        rc = fail("migrate", &err);
        goto out;
    }
    if (wait_both(&src, &dst) < 0) {
        rc = fail("the migration did not end within 30 s", NULL);
        goto out;
    }

    rc = 1;
    if (migration_status(src.migration) != MIGRATION_COMPLETED ||
        migration_status(dst.migration) != MIGRATION_COMPLETED)
        fprintf(stderr, "embed: source %s, destination %s%s%s\n",
                migration_status_name(migration_status(src.migration)),
                migration_status_name(migration_status(dst.migration)),
                dst.failure[0] ? ": " : "", dst.failure);
    else if (memcmp(src.block.host, dst.block.host, PAGES * PAGE) != 0)
        fprintf(stderr, "embed: the destination's RAM differs from the source's\n");
    else if (dst.counter != src.counter)
        fprintf(stderr, "embed: the device's counter arrived as %#llx\n",
                (unsigned long long)dst.counter);
    else if (src.redirtied != 1)
        fprintf(stderr, "embed: the first dirty sync came with the guest stopped\n");
    else if (src.running || !dst.running)
        fprintf(stderr, "embed: after the migration the source %s and the destination %s\n",
                src.running ? "runs" : "is stopped", dst.running ? "runs" : "is stopped");
    else
        rc = 0;
    if (rc)
        goto out;

    info = hmp_execute(src.qmp, "info migrate");
    if (!info || !strstr(info, "completed")) {
        rc = fail("'info migrate' does not say completed", NULL);
        fprintf(stderr, "%s\n", info ? info : "(nothing)");
    } else {
        printf("migrated %u KiB, one page written again after it was sent, and the "
               "counter\n", PAGES * PAGE / 1024);
    }
    free(info);
out:
    vm_free(&src);
    vm_free(&dst);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: embed DIR (a directory for the migration's socket)\n");
        return 2;
    }
    return run(argv[1]);
}
