/* The accel test device (vm/accel.h): state-size bytes of state that a
 * thread of its own rewrites, 4 KiB at a time, while the VM runs, like a
 * device doing DMA; dirty tracking per 4 KiB page; precopy and stop-copy
 * saves; x-query-accel for tests. It takes multifd, unless the test-only
 * key multifd=off says not to.
 *
 * State format (version 1), little-endian and unpadded: a list of entries,
 * each {u64 offset, u32 length, u32 kind} followed by length bytes.
 *  - kind 0, STATE: bytes [offset, offset + length) of the device's state;
 *    the sender cuts at 4 KiB pages (and at most 1 MiB per entry), the
 *    loader only demands 0 < length and offset + length <= state-size.
 *  - kind 1, REGISTERS: the 4 KiB register block, offset 0, length 4096:
 *    {u32 magic "ACCL", u32 version 1, u64 state-size, u64 changes made,
 *    u64 the changing thread's generator}, then zeros to 4 KiB.
 * save_precopy appends STATE entries only (nothing at all is fine); save
 * appends a STATE entry for every page still dirty and ends with exactly
 * one REGISTERS entry, so a stop-copy state is never empty. load takes a
 * whole state with or without precopy buffers before it (a VM that never
 * ran precopy sends everything in save). Every load checks the whole
 * buffer before it changes anything, and never writes outside the state.
 *
 * Locking: one mutex per device guards its state, dirty bitmap and
 * registers. The changing thread checks the VM's run state under it before
 * every change (so no change lands once the VM is stopped), and every save
 * copies under it (a change lands before the copy, or sets its page dirty
 * again after the copy cleared it). Lock order: device lock, then the VM's
 * state_lock (through vm_run_state). */
#include "accel_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <isa-l/crc64.h>

#include <godwit/size.h>

#include "vm.h"

/* Devices live for the whole process: the changing threads are never
 * joined (they only touch their device and the static VM's state_lock). */
static struct accel accels[VM_ACCEL_MAX];
static unsigned nr_accels;

/* --- pseudo-random content --- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t id_seed(const char *id)
{
    uint64_t hash = 0xcbf29ce484222325ull;   /* FNV-1a */

    for (; *id; id++)
        hash = (hash ^ (uint8_t)*id) * 0x100000001b3ull;
    return hash;
}

static void fill_pseudo_random(uint8_t *data, uint64_t len, uint64_t *rng)
{
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t word = splitmix64(rng);
        memcpy(data + i, &word, 8);
    }
}

/* --- dirty bitmap (under the device lock) --- */

bool accel_page_dirty(const struct accel *a, uint64_t page)
{
    return a->dirty[page / 64] & (1ull << (page % 64));
}

void accel_set_dirty(struct accel *a, uint64_t page)
{
    if (!accel_page_dirty(a, page)) {
        a->dirty[page / 64] |= 1ull << (page % 64);
        a->dirty_pages++;
    }
}

void accel_clear_dirty(struct accel *a, uint64_t first, uint64_t count)
{
    for (uint64_t page = first; page < first + count; page++) {
        if (accel_page_dirty(a, page)) {
            a->dirty[page / 64] &= ~(1ull << (page % 64));
            a->dirty_pages--;
        }
    }
}

void accel_set_all_dirty(struct accel *a)
{
    for (uint64_t page = 0; page < a->pages; page++)
        accel_set_dirty(a, page);
}

/* The first dirty page at or after from, or a->pages if there is none. */
uint64_t accel_next_dirty(const struct accel *a, uint64_t from)
{
    while (from < a->pages) {
        uint64_t word = a->dirty[from / 64] >> (from % 64);
        if (word)
            return from + (uint64_t)__builtin_ctzll(word);
        from = (from / 64 + 1) * 64;
    }
    return a->pages;
}

/* Dirty pages from first on, at most max. */
uint64_t accel_dirty_run(const struct accel *a, uint64_t first, uint64_t max)
{
    uint64_t n = 0;

    while (n < max && first + n < a->pages && accel_page_dirty(a, first + n))
        n++;
    return n;
}

/* --- registers --- */

void accel_regs_block(const struct accel *a, uint8_t block[ACCEL_REGS_SIZE])
{
    struct accel_regs regs = {
        .magic = ACCEL_REGS_MAGIC, .version = ACCEL_VERSION,
        .state_size = a->config->state_size, .changes = a->changes, .rng = a->rng,
    };

    memset(block, 0, ACCEL_REGS_SIZE);
    memcpy(block, &regs, sizeof(regs));
}

/* --- the changing thread --- */

/* Rewrites one pseudo-randomly chosen 4 KiB page, as DMA would. */
static void change_one(struct accel *a)
{
    uint64_t page = splitmix64(&a->rng) % a->pages;

    fill_pseudo_random(a->state + page * ACCEL_PAGE, ACCEL_PAGE, &a->rng);
    accel_set_dirty(a, page);
    a->changes++;
}

static void *changer(void *opaque)
{
    struct accel *a = opaque;
    const struct timespec period = { 0, ACCEL_CHANGE_PERIOD_NS };

    for (;;) {
        nanosleep(&period, NULL);
        pthread_mutex_lock(&a->lock);
        if (vm_run_state(a->vm) == RUN_STATE_RUNNING)
            change_one(a);
        pthread_mutex_unlock(&a->lock);
    }
    return NULL;
}

/* --- x-query-accel --- */

static const struct qmp_arg query_args[] = {
    { "id", QMP_ARG_STR, false },
    { NULL, 0, false },
};

/* CRC-64/ECMA-182 reflected (isa-l's crc64_ecma_refl, initial value 0) of
 * the whole state and then the 4 KiB register block, under the lock. */
static int query_accel(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    const char *id = json_string_value(json_object_get(args, "id"));
    uint8_t block[ACCEL_REGS_SIZE];
    uint64_t crc, changes, dirty;
    char ids[VM_ACCEL_MAX * (VM_ACCEL_ID_MAX + 2)] = "";
    char digest[17];

    (void)opaque;
    for (unsigned i = 0; i < nr_accels; i++) {
        struct accel *a = &accels[i];
        if (strcmp(a->config->id, id))
            continue;
        pthread_mutex_lock(&a->lock);
        crc = crc64_ecma_refl(0, a->state, a->config->state_size);
        accel_regs_block(a, block);
        crc = crc64_ecma_refl(crc, block, sizeof(block));
        changes = a->changes;
        dirty = a->dirty_pages * ACCEL_PAGE;
        pthread_mutex_unlock(&a->lock);
        snprintf(digest, sizeof(digest), "%016" PRIx64, crc);
        *ret = json_pack("{s:I,s:s,s:I,s:I}", "state-size", (json_int_t)a->config->state_size,
                         "digest", digest, "changes", (json_int_t)changes, "dirty-bytes",
                         (json_int_t)dirty);
        return 0;
    }
    if (nr_accels == 0)
        return gw_error_set(err, -ENODEV, "no accel device has id '%s': this VM has none "
                            "(start godwit-vm with --device accel,id=NAME,state-size=SIZE)",
                            id);
    for (unsigned i = 0; i < nr_accels; i++) {
        strcat(ids, i ? ", " : "");
        strcat(ids, accels[i].config->id);
    }
    return gw_error_set(err, -ENODEV, "no accel device has id '%s'; the accel devices are %s",
                        id, ids);
}

/* --- creation --- */

static int accel_create(struct vm *vm, struct accel *a, const struct vm_accel_config *config,
                        bool incoming, struct gw_error *err)
{
    uint64_t seed = id_seed(config->id);
    pthread_t thread;
    int rc;

    a->vm = vm;
    a->config = config;
    pthread_mutex_init(&a->lock, NULL);
    a->pages = config->state_size / ACCEL_PAGE;
    /* Populated now: it stands in for a device's own memory, which exists
     * before any migration, so a destination's load must not pay for
     * first touches (as --mem-prealloc for RAM). */
    a->state = mmap(NULL, config->state_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (a->state == MAP_FAILED) {
        a->state = NULL;
        return gw_error_set(err, -errno, "accel %s: cannot map %" PRIu64 " bytes of state: %s",
                            config->id, config->state_size, strerror(errno));
    }
    a->dirty = calloc((a->pages + 63) / 64, sizeof(uint64_t));
    if (!a->dirty)
        return gw_error_set(err, -ENOMEM, "accel %s: out of memory for its dirty bitmap",
                            config->id);
    /* A destination's state must come from the migration: it starts all
     * zero (fresh anonymous memory), not with the source's pattern. */
    if (!incoming) {
        uint64_t fill = seed;
        fill_pseudo_random(a->state, config->state_size, &fill);
    }
    a->rng = seed ^ 0x6368616e6765ull;   /* another stream than the fill's */
    accel_set_all_dirty(a);   /* nothing was sent anywhere yet */
    if (!config->changes)
        return 0;
    rc = pthread_create(&thread, NULL, changer, a);
    if (rc)
        return gw_error_set(err, -rc, "accel %s: cannot start its thread: %s", config->id,
                            strerror(rc));
    pthread_detach(thread);
    return 0;
}

int accel_register(struct vm *vm, struct gw_error *err)
{
    static struct qmp_command query = {
        .name = "x-query-accel", .args = query_args, .handler = query_accel,
    };
    bool incoming = config_incoming(&vm->config);
    int rc;

    for (unsigned i = 0; i < vm->config.nr_accel; i++) {
        const struct vm_accel_config *config = &vm->config.accel[i];
        struct accel *a = &accels[nr_accels];
        if ((rc = accel_create(vm, a, config, incoming, err)) < 0)
            return rc;
        nr_accels++;
        if ((rc = device_register(&vm->devices, config->id, 0, ACCEL_VERSION,
                                  config->multifd ? &accel_ops : &accel_ops_main_channel, a,
                                  err)) < 0)
            return rc;
    }
    return qmp_server_register(vm->qmp, &query, err);
}
