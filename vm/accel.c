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
#include "accel.h"

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

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "accel state is written in host byte order, which the layout says is little-endian"
#endif

#define ACCEL_VERSION 1
#define ACCEL_PAGE 4096u
#define ACCEL_REGS_SIZE 4096u
#define ACCEL_RUN_MAX (1u << 20)           /* longest STATE entry a save writes */
#define ACCEL_CHANGE_PERIOD_NS 2000000L    /* one 4 KiB change every ~2 ms */
#define ACCEL_REGS_MAGIC 0x4c434341u       /* "ACCL" */

enum { ACCEL_KIND_STATE = 0, ACCEL_KIND_REGISTERS = 1 };

struct accel_entry {
    uint64_t offset;
    uint32_t length;
    uint32_t kind;
};
_Static_assert(sizeof(struct accel_entry) == 16, "entry header is 16 bytes on the wire");

/* The start of the register block; the rest of its 4 KiB is zero. */
struct accel_regs {
    uint32_t magic;
    uint32_t version;
    uint64_t state_size;
    uint64_t changes;
    uint64_t rng;
};

struct accel {
    struct vm *vm;
    const struct vm_accel_config *config;
    pthread_mutex_t lock;
    uint8_t *state;               /* config->state_size bytes, mmap'ed */
    uint64_t pages;
    uint64_t *dirty;              /* one bit per 4 KiB page */
    uint64_t dirty_pages;
    uint64_t cursor;              /* the page save_precopy looks at first */
    uint64_t piece_cursor;        /* the page the next stop-copy piece starts at */
    struct accel_regs piece_regs; /* the registers a piece brought, for load_finish */
    bool piece_regs_seen;
    uint64_t changes;             /* registers */
    uint64_t rng;
};

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

static bool page_dirty(const struct accel *a, uint64_t page)
{
    return a->dirty[page / 64] & (1ull << (page % 64));
}

static void set_dirty(struct accel *a, uint64_t page)
{
    if (!page_dirty(a, page)) {
        a->dirty[page / 64] |= 1ull << (page % 64);
        a->dirty_pages++;
    }
}

static void clear_dirty(struct accel *a, uint64_t first, uint64_t count)
{
    for (uint64_t page = first; page < first + count; page++) {
        if (page_dirty(a, page)) {
            a->dirty[page / 64] &= ~(1ull << (page % 64));
            a->dirty_pages--;
        }
    }
}

static void set_all_dirty(struct accel *a)
{
    for (uint64_t page = 0; page < a->pages; page++)
        set_dirty(a, page);
}

/* The first dirty page at or after from, or a->pages if there is none. */
static uint64_t next_dirty(const struct accel *a, uint64_t from)
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
static uint64_t dirty_run(const struct accel *a, uint64_t first, uint64_t max)
{
    uint64_t n = 0;

    while (n < max && first + n < a->pages && page_dirty(a, first + n))
        n++;
    return n;
}

/* --- registers --- */

static void regs_block(const struct accel *a, uint8_t block[ACCEL_REGS_SIZE])
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
    set_dirty(a, page);
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

/* --- saving --- */

/* Appends one STATE entry for pages [first, first + count); the caller
 * holds the lock. */
static int put_state_entry(struct accel *a, struct gw_buffer *out, uint64_t first,
                           uint64_t count)
{
    struct accel_entry entry = {
        .offset = first * ACCEL_PAGE, .length = (uint32_t)(count * ACCEL_PAGE),
        .kind = ACCEL_KIND_STATE,
    };
    int rc = gw_buffer_append(out, &entry, sizeof(entry));

    return rc < 0 ? rc : gw_buffer_append(out, a->state + entry.offset, entry.length);
}

/* Appends the REGISTERS entry; the caller holds the lock. */
static int put_registers(struct accel *a, struct gw_buffer *out)
{
    uint8_t block[ACCEL_REGS_SIZE];
    struct accel_entry entry = { .offset = 0, .length = ACCEL_REGS_SIZE,
                                 .kind = ACCEL_KIND_REGISTERS };
    int rc = gw_buffer_append(out, &entry, sizeof(entry));

    regs_block(a, block);
    return rc < 0 ? rc : gw_buffer_append(out, block, sizeof(block));
}

/* While the VM runs: dirty pages, at most max_bytes of entries, each copied
 * and marked clean under the lock (taken per entry, so the changing thread
 * waits for at most one 1 MiB copy). */
static int accel_save_precopy(void *opaque, struct gw_buffer *out, uint64_t max_bytes,
                              struct gw_error *err)
{
    struct accel *a = opaque;
    size_t start = out->len;
    uint64_t used = 0;
    int rc = 0;

    if (!a->config->precopy)
        return 0;   /* precopy=off: everything waits for stop-copy */
    for (;;) {
        uint64_t room, first, count;

        if (max_bytes - used < sizeof(struct accel_entry) + ACCEL_PAGE)
            break;
        room = (max_bytes - used - sizeof(struct accel_entry)) / ACCEL_PAGE;
        if (room > ACCEL_RUN_MAX / ACCEL_PAGE)
            room = ACCEL_RUN_MAX / ACCEL_PAGE;
        pthread_mutex_lock(&a->lock);
        first = a->dirty_pages ? next_dirty(a, a->cursor) : a->pages;
        if (first == a->pages && a->dirty_pages)
            first = next_dirty(a, 0);
        if (first == a->pages) {
            pthread_mutex_unlock(&a->lock);
            break;
        }
        count = dirty_run(a, first, room);
        rc = put_state_entry(a, out, first, count);
        if (rc == 0) {
            clear_dirty(a, first, count);
            a->cursor = first + count < a->pages ? first + count : 0;
        } else {
            /* What was appended is dropped, so what it marked clean is not
             * sent: send everything again. */
            out->len = start;
            set_all_dirty(a);
        }
        pthread_mutex_unlock(&a->lock);
        if (rc < 0)
            return gw_error_set(err, rc, "accel %s: cannot append its precopy state: %s",
                                a->config->id, strerror(-rc));
        used += sizeof(struct accel_entry) + count * ACCEL_PAGE;
    }
    return 0;
}

/* With the VM stopped: every dirty page, then the register block. The
 * pages stay dirty, and afterwards all are: whatever follows (the source
 * is done, or the switchover failed and the VM runs on here) the next
 * migration has a new destination that holds nothing of this state. The
 * start-up measure (device_measure) calls this too, and must not clear. */
static int accel_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct accel *a = opaque;
    size_t start = out->len;
    uint64_t page = 0;
    int rc = 0;

    pthread_mutex_lock(&a->lock);
    while (rc == 0 && (page = next_dirty(a, page)) < a->pages) {
        uint64_t count = dirty_run(a, page, ACCEL_RUN_MAX / ACCEL_PAGE);
        rc = put_state_entry(a, out, page, count);
        page += count;
    }
    if (rc == 0)
        rc = put_registers(a, out);
    set_all_dirty(a);
    pthread_mutex_unlock(&a->lock);
    if (rc < 0) {
        out->len = start;
        return gw_error_set(err, rc, "accel %s: cannot append its state: %s", a->config->id,
                            strerror(-rc));
    }
    return 0;
}

static void accel_query_pending(void *opaque, uint64_t *precopy_bytes, uint64_t *stopcopy_bytes)
{
    struct accel *a = opaque;

    pthread_mutex_lock(&a->lock);
    if (a->config->pending_nonsense) {
        /* For tests of the engine's tolerance: more precopy bytes than
         * could exist, and a stop-copy size below it (the contract says
         * stop-copy includes what precopy has not sent). */
        *precopy_bytes = UINT64_MAX;
        *stopcopy_bytes = 1;
    } else {
        *stopcopy_bytes = a->dirty_pages * ACCEL_PAGE + ACCEL_REGS_SIZE;
        *precopy_bytes = a->config->precopy ? a->dirty_pages * ACCEL_PAGE : 0;
    }
    pthread_mutex_unlock(&a->lock);
}

/* --- loading --- */

static int check_version(const struct accel *a, uint32_t version, struct gw_error *err)
{
    if (version != ACCEL_VERSION)
        return gw_error_set(err, -EPROTONOSUPPORT, "accel %s: state format version %u is not "
                            "one this build reads (it reads version %d)", a->config->id,
                            version, ACCEL_VERSION);
    return 0;
}

/* Walks the entries of data, checking each against this device; with
 * apply, copies them in (the caller holds the lock and has checked the
 * whole buffer first). registers: whether a REGISTERS entry must end it
 * (load) or none may appear (load_precopy); *regs_at gets its data. */
enum registers { REGS_NONE, REGS_LAST, REGS_MAYBE };   /* precopy, whole state, piece */

static int walk_entries(struct accel *a, const uint8_t *data, size_t len, enum registers registers,
                        bool apply, const uint8_t **regs_at, struct gw_error *err)
{
    struct gw_cursor cursor = { .data = data, .len = len };
    const char *id = a->config->id;
    const char *what = registers == REGS_NONE ? "precopy state"
                       : registers == REGS_LAST ? "state" : "state piece";
    uint64_t size = a->config->state_size;

    *regs_at = NULL;
    while (cursor.pos < cursor.len) {
        size_t at = cursor.pos;
        struct accel_entry entry;

        if (*regs_at)
            return gw_error_set(err, -EBADMSG, "accel %s: the %s goes on after its register "
                                "block (byte %zu of %zu); the register block must be last",
                                id, what, at, len);
        if (gw_cursor_take(&cursor, &entry, sizeof(entry)) < 0)
            return gw_error_set(err, -EBADMSG, "accel %s: the %s ends inside an entry header "
                                "(byte %zu of %zu): it is truncated", id, what, at, len);
        if (entry.length > cursor.len - cursor.pos)
            return gw_error_set(err, -EBADMSG, "accel %s: an entry at byte %zu says %u bytes "
                                "but only %zu remain: the %s is truncated", id, at,
                                entry.length, cursor.len - cursor.pos, what);
        switch (entry.kind) {
        case ACCEL_KIND_STATE:
            if (entry.length == 0 || entry.offset > size || entry.length > size - entry.offset)
                return gw_error_set(err, -EINVAL, "accel %s: an entry at byte %zu writes "
                                    "[%" PRIu64 ", +%u) but the state is %" PRIu64 " bytes; "
                                    "an entry must lie inside it and hold 1 byte or more", id, at,
                                    entry.offset, entry.length, size);
            if (apply)
                memcpy(a->state + entry.offset, cursor.data + cursor.pos, entry.length);
            break;
        case ACCEL_KIND_REGISTERS:
            if (registers == REGS_NONE)
                return gw_error_set(err, -EINVAL, "accel %s: a register block at byte %zu of "
                                    "a precopy state; registers come only with the stop-copy "
                                    "state", id, at);
            if (entry.offset != 0 || entry.length != ACCEL_REGS_SIZE)
                return gw_error_set(err, -EINVAL, "accel %s: the register block at byte %zu "
                                    "is [%" PRIu64 ", +%u); it must be [0, +%u)", id, at,
                                    entry.offset, entry.length, ACCEL_REGS_SIZE);
            *regs_at = cursor.data + cursor.pos;
            break;
        default:
            return gw_error_set(err, -EBADMSG, "accel %s: unknown entry kind %u at byte %zu; "
                                "this build knows 0 (state) and 1 (registers)", id, entry.kind,
                                at);
        }
        cursor.pos += entry.length;
    }
    if (registers == REGS_LAST && !*regs_at)
        return gw_error_set(err, -EBADMSG, "accel %s: the state has no register block: it is "
                            "truncated", id);
    return 0;
}

static int check_regs(const struct accel *a, const uint8_t *block, struct accel_regs *regs,
                      struct gw_error *err)
{
    char theirs[32], ours[32];

    memcpy(regs, block, sizeof(*regs));
    if (regs->magic != ACCEL_REGS_MAGIC || regs->version != ACCEL_VERSION)
        return gw_error_set(err, -EBADMSG, "accel %s: the register block has magic 0x%08x "
                            "version %u; it must be 0x%08x version %d", a->config->id,
                            regs->magic, regs->version, ACCEL_REGS_MAGIC, ACCEL_VERSION);
    if (regs->state_size != a->config->state_size)
        return gw_error_set(err, -EINVAL, "accel %s: the source's device holds %s of state, "
                            "this one %s; start the destination with the same state-size",
                            a->config->id, size_format(regs->state_size, theirs, sizeof(theirs)),
                            size_format(a->config->state_size, ours, sizeof(ours)));
    for (size_t i = sizeof(*regs); i < ACCEL_REGS_SIZE; i++)
        if (block[i])
            return gw_error_set(err, -EINVAL, "accel %s: byte %zu of the register block is "
                                "%u; bytes %zu and up must be zero", a->config->id, i, block[i],
                                sizeof(*regs));
    return 0;
}

static int accel_load_precopy(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                              struct gw_error *err)
{
    struct accel *a = opaque;
    const uint8_t *regs_at;
    int rc;

    if ((rc = check_version(a, version, err)) < 0 ||
        (rc = walk_entries(a, data, len, REGS_NONE, false, &regs_at, err)) < 0)
        return rc;
    pthread_mutex_lock(&a->lock);
    rc = walk_entries(a, data, len, REGS_NONE, true, &regs_at, err);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

static int accel_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                      struct gw_error *err)
{
    struct accel *a = opaque;
    struct accel_regs regs;
    const uint8_t *regs_at;
    int rc;

    if ((rc = check_version(a, version, err)) < 0 ||
        (rc = walk_entries(a, data, len, REGS_LAST, false, &regs_at, err)) < 0 ||
        (rc = check_regs(a, regs_at, &regs, err)) < 0)
        return rc;
    pthread_mutex_lock(&a->lock);
    rc = walk_entries(a, data, len, REGS_LAST, true, &regs_at, err);
    a->changes = regs.changes;
    a->rng = regs.rng;
    set_all_dirty(a);   /* a migration onward sends it all */
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* A new outgoing migration: its destination has nothing, so everything
 * precopy sent to an earlier, cancelled one is to be sent again, and a
 * stop-copy that an earlier one left part-way (its migration failed between
 * pieces) starts over at the first page: the pieces of this migration are
 * all the dirty pages. */
static int accel_save_setup(void *opaque, struct gw_error *err)
{
    struct accel *a = opaque;

    (void)err;
    pthread_mutex_lock(&a->lock);
    set_all_dirty(a);
    a->piece_cursor = 0;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

/* With the VM stopped, the stop-copy state in pieces of at most max_bytes:
 * STATE entries for the dirty pages from piece_cursor on, and the register
 * block in the last piece. Pieces put together are what accel_save writes;
 * each stands alone, so the destination can load them in any order. As in
 * accel_save, nothing is marked clean, and all is dirty after the last. */
static int accel_save_piece(void *opaque, struct gw_buffer *out, size_t max_bytes, bool *last,
                            struct gw_error *err)
{
    struct accel *a = opaque;
    const size_t regs_room = sizeof(struct accel_entry) + ACCEL_REGS_SIZE;
    size_t start = out->len, used = 0;
    int rc = 0;

    *last = false;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        uint64_t first = next_dirty(a, a->piece_cursor), room, count;
        if (first == a->pages) {
            if (max_bytes - used < regs_room)
                break;   /* the registers go in the next piece */
            rc = put_registers(a, out);
            *last = rc == 0;
            a->piece_cursor = 0;
            set_all_dirty(a);
            break;
        }
        if (max_bytes - used < sizeof(struct accel_entry) + ACCEL_PAGE)
            break;
        room = (max_bytes - used - sizeof(struct accel_entry)) / ACCEL_PAGE;
        room = room > ACCEL_RUN_MAX / ACCEL_PAGE ? ACCEL_RUN_MAX / ACCEL_PAGE : room;
        count = dirty_run(a, first, room);
        if ((rc = put_state_entry(a, out, first, count)) < 0)
            break;
        used += sizeof(struct accel_entry) + count * ACCEL_PAGE;
        a->piece_cursor = first + count;
    }
    if (rc < 0)
        a->piece_cursor = 0;   /* a failed save starts over */
    pthread_mutex_unlock(&a->lock);
    if (rc < 0) {
        out->len = start;
        return gw_error_set(err, rc, "accel %s: cannot append its state: %s", a->config->id,
                            strerror(-rc));
    }
    return 0;
}

/* One piece, checked whole before any of it lands; its registers, if it
 * has them, wait for load_finish. */
static int accel_load_piece(void *opaque, uint32_t index, const uint8_t *data, size_t len,
                            uint32_t version, struct gw_error *err)
{
    struct accel *a = opaque;
    struct accel_regs regs;
    const uint8_t *regs_at;
    int rc;

    if ((rc = check_version(a, version, err)) < 0 ||
        (rc = walk_entries(a, data, len, REGS_MAYBE, false, &regs_at, err)) < 0 ||
        (regs_at && (rc = check_regs(a, regs_at, &regs, err)) < 0)) {
        gw_error_prefix(err, "piece %u", index);
        return rc;
    }
    pthread_mutex_lock(&a->lock);
    if (regs_at && a->piece_regs_seen)
        rc = gw_error_set(err, -EBADMSG, "accel %s: piece %u has a second register block",
                          a->config->id, index);
    if (rc == 0)
        rc = walk_entries(a, data, len, REGS_MAYBE, true, &regs_at, err);
    if (rc == 0 && regs_at) {
        a->piece_regs = regs;
        a->piece_regs_seen = true;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

static int accel_load_finish(void *opaque, uint32_t pieces, uint32_t version,
                             struct gw_error *err)
{
    struct accel *a = opaque;
    int rc = 0;

    (void)version;
    pthread_mutex_lock(&a->lock);
    if (!a->piece_regs_seen) {
        rc = gw_error_set(err, -EBADMSG, "accel %s: none of the %u pieces of its state had the "
                          "register block", a->config->id, pieces);
    } else {
        a->changes = a->piece_regs.changes;
        a->rng = a->piece_regs.rng;
        a->piece_regs_seen = false;
        set_all_dirty(a);   /* a migration onward sends it all */
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* Two kinds of device, the same but for multifd. Its state stands alone
 * (no other device's load is needed first), so it takes multifd; with the
 * test-only key multifd=off it is registered as a device that does not, so
 * its stop-copy pieces stay on the main channel and a test can mix both
 * kinds in one registry. */
#define ACCEL_OPS(takes_multifd)                                                             \
    {                                                                                        \
        .save_setup = accel_save_setup, .save = accel_save, .load = accel_load,              \
        .query_pending = accel_query_pending, .save_precopy = accel_save_precopy,            \
        .load_precopy = accel_load_precopy, .multifd = (takes_multifd),                      \
        .save_piece = accel_save_piece, .load_piece = accel_load_piece,                      \
        .load_finish = accel_load_finish,                                                    \
    }
static const struct device_ops accel_ops = ACCEL_OPS(true);
static const struct device_ops accel_ops_main_channel = ACCEL_OPS(false);

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
        regs_block(a, block);
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
    set_all_dirty(a);   /* nothing was sent anywhere yet */
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
