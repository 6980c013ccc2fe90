/* The accel test device's migration ops: precopy saves of dirty pages,
 * the stop-copy state whole or in pieces, and loads that check the whole
 * buffer before they change anything. The format is in accel.c's opening
 * comment. */
#include "accel_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/size.h>

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

    accel_regs_block(a, block);
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
        first = a->dirty_pages ? accel_next_dirty(a, a->cursor) : a->pages;
        if (first == a->pages && a->dirty_pages)
            first = accel_next_dirty(a, 0);
        if (first == a->pages) {
            pthread_mutex_unlock(&a->lock);
            break;
        }
        count = accel_dirty_run(a, first, room);
        rc = put_state_entry(a, out, first, count);
        if (rc == 0) {
            accel_clear_dirty(a, first, count);
            a->cursor = first + count < a->pages ? first + count : 0;
        } else {
            /* What was appended is dropped, so what it marked clean is not
             * sent: send everything again. */
            out->len = start;
            accel_set_all_dirty(a);
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
    while (rc == 0 && (page = accel_next_dirty(a, page)) < a->pages) {
        uint64_t count = accel_dirty_run(a, page, ACCEL_RUN_MAX / ACCEL_PAGE);
        rc = put_state_entry(a, out, page, count);
        page += count;
    }
    if (rc == 0)
        rc = put_registers(a, out);
    accel_set_all_dirty(a);
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
    accel_set_all_dirty(a);   /* a migration onward sends it all */
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
    accel_set_all_dirty(a);
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
        uint64_t first = accel_next_dirty(a, a->piece_cursor), room, count;
        if (first == a->pages) {
            if (max_bytes - used < regs_room)
                break;   /* the registers go in the next piece */
            rc = put_registers(a, out);
            *last = rc == 0;
            a->piece_cursor = 0;
            accel_set_all_dirty(a);
            break;
        }
        if (max_bytes - used < sizeof(struct accel_entry) + ACCEL_PAGE)
            break;
        room = (max_bytes - used - sizeof(struct accel_entry)) / ACCEL_PAGE;
        room = room > ACCEL_RUN_MAX / ACCEL_PAGE ? ACCEL_RUN_MAX / ACCEL_PAGE : room;
        count = accel_dirty_run(a, first, room);
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
        accel_set_all_dirty(a);   /* a migration onward sends it all */
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
const struct device_ops accel_ops = ACCEL_OPS(true);
const struct device_ops accel_ops_main_channel = ACCEL_OPS(false);

