/* The source's postcopy (docs/stream.md, "Postcopy"). At the switch, with
 * the guest stopped and its device state sent, it tells the destination
 * to listen for faults and which pages to drop (sent, then dirtied), and
 * hands the guest over with the usual READY/GO. Then the guest runs on
 * the destination while this thread sends every page still dirty, and
 * before each batch answers the pages the destination asked for: a
 * requested page never waits behind more than one batch. The guest here
 * stays stopped: after GO it is the destination's, and a failure no
 * longer gives it back. */
#include "migration_source.h"

#include <errno.h>
#include <stdlib.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <time.h>

/* Background pages per batch between two looks at the requests: 32 KiB,
 * so that a guest which has caught up with the stream waits behind no more
 * than that for the page it touched. bench/postcopy.py, 6 runs each on 2
 * cores: the guest's median stall was 10 ms with 8 pages, 28 with 32, and
 * 21 and 50 with 4 and 2, whose many small records slow the stream (the
 * runs of one size differ a lot: 4 to 44 ms with 8). */
#define BACKGROUND_BATCH 8
/* The most background bytes left in the main channel's kernel send queue:
 * a requested page written after them waits behind no more than this (the
 * queue of a loopback socket alone holds megabytes: tens of ms). */
#define BACKGROUND_QUEUE_MAX (256u << 10)
/* How long the source waits for RP_POSTCOPY_DONE after END. */
#define DONE_TIMEOUT_US (30ULL * 1000000)

int postcopy_advise(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint32_t body[2] = { 0, 0 };
    struct iovec part = { body, sizeof(body) };
    bool postcopy;

    pthread_mutex_lock(&migration->lock);
    postcopy = migration->cap_postcopy_ram;
    source->preempt = migration->cap_postcopy_preempt;
    pthread_mutex_unlock(&migration->lock);
    if (source->preempt)
        body[0] |= POSTCOPY_ADVISE_PREEMPT;
    return postcopy ? source_write_record(source, REC_POSTCOPY_ADVISE, &part, 1, err) : 0;
}

/* The bits of page's word from page on: 0 skips to the next word. */
static uint64_t bits_from(const uint64_t *bitmap, uint64_t page)
{
    return __atomic_load_n(&bitmap[page / 64], __ATOMIC_RELAXED) >> (page % 64);
}

static int write_discards(struct source *source, uint32_t block, const uint64_t *runs,
                          uint32_t count, struct gw_error *err)
{
    uint32_t head[2] = { block, count };
    struct iovec parts[2] = { { head, sizeof(head) }, { (void *)runs, (size_t)count * 16 } };

    return source_write_record(source, REC_POSTCOPY_DISCARD, parts, 2, err);
}

/* POSTCOPY_DISCARD records of up to 4096 runs: every page dirty now. Pages
 * never sent are not on the destination anyway; dropping them too costs
 * nothing and keeps the rule simple. */
static int send_discards(struct source *source, uint64_t *runs, struct gw_error *err)
{
    struct migration *migration = source->migration;

    for (uint32_t b = 0; b < migration->host.nr_blocks; b++) {
        const uint64_t *bitmap = migration->bitmaps[b];
        uint64_t pages = ram_block_pages(&migration->host.blocks[b]);
        uint32_t count = 0;
        int rc;
        for (uint64_t page = 0; page < pages;) {
            if (!postcopy_test_dirty(bitmap, page)) {
                page = bits_from(bitmap, page) ? page + 1 : (page / 64 + 1) * 64;
                continue;
            }
            uint64_t first = page;
            while (page < pages && postcopy_test_dirty(bitmap, page))
                page++;
            runs[2 * count] = first;
            runs[2 * count + 1] = page - first;
            if (++count == POSTCOPY_DISCARD_RUNS_MAX) {
                if ((rc = write_discards(source, b, runs, count, err)) < 0)
                    return rc;
                count = 0;
            }
        }
        if (count && (rc = write_discards(source, b, runs, count, err)) < 0)
            return rc;
    }
    return 0;
}

int postcopy_send_switch(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    int rc;

    pthread_mutex_lock(&migration->lock);
    migration->postcopy_queue = calloc(1, sizeof(*migration->postcopy_queue));
    pthread_mutex_unlock(&migration->lock);
    if (!migration->postcopy_queue)
        return gw_error_set(err, -ENOMEM, "out of memory for postcopy's request queue");
    uint64_t *runs = malloc(2 * POSTCOPY_DISCARD_RUNS_MAX * sizeof(uint64_t));
    if (!runs)
        return gw_error_set(err, -ENOMEM, "out of memory for postcopy's discard runs");
    /* The destination accepts the preempt channel once it reads LISTEN. */
    if ((rc = source_write_record(source, REC_POSTCOPY_LISTEN, NULL, 0, err)) == 0 &&
        (!source->preempt || (rc = preempt_connect(migration, source->page_size, err)) == 0) &&
        (rc = send_discards(source, runs, err)) == 0)
        rc = source_write_record(source, REC_POSTCOPY_RUN, NULL, 0, err);
    free(runs);
    return rc;
}

/* Pages [first, first + count) of a block, as they are, on the main
 * channel; their dirty bits are cleared (atomically: with postcopy-preempt
 * the return-path thread clears the bits of the pages it sends). */
static int send_pages(struct source *source, uint32_t block, uint64_t first, uint64_t count,
                      struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct migration_stats *stats = &migration->stats;
    uint64_t bytes = 0, normal = 0, zero = 0;
    int rc;

    postcopy_clear_dirty(migration->bitmaps[block], first, count);
    rc = postcopy_write_pages(&source->writer, &migration->host.blocks[block], block, first,
                              count, &bytes, &normal, &zero, err);
    atomic_fetch_add(&stats->transferred, bytes);
    atomic_fetch_add(&stats->postcopy_bytes, bytes);
    atomic_fetch_add(&stats->normal_pages, normal);
    atomic_fetch_add(&stats->zero_pages, zero);
    return rc;
}

/* Answers every request queued so far, whether or not its page was sent
 * already (it may be on its way: the destination places it once). */
static int serve_requests(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    struct postcopy_queue *queue = migration->postcopy_queue;
    struct postcopy_request request;

    for (;;) {
        pthread_mutex_lock(&migration->lock);
        bool any = queue->count > 0;
        if (any) {
            request = queue->requests[queue->head];
            queue->head = (queue->head + 1) % POSTCOPY_QUEUE_MAX;
            queue->count--;
            postcopy_queue_follow(queue, &request);
        }
        pthread_mutex_unlock(&migration->lock);
        if (!any)
            return 0;
        int rc = send_pages(source, request.block, request.first, request.pages, err);
        if (rc < 0)
            return rc;
    }
}

/* The background goes on after the last page served, as QEMU's does: a
 * guest faults in address order more often than not, and the pages after
 * its fault are then on their way before it touches them. What the jump
 * passes over is left dirty; next_batch comes back for it. */
static void follow_requests(struct source *source)
{
    struct migration *migration = source->migration;
    struct postcopy_queue *queue = migration->postcopy_queue;

    pthread_mutex_lock(&migration->lock);
    if (queue->follow) {
        source->postcopy_block = queue->follow_block;
        source->postcopy_cursor[queue->follow_block] = queue->follow_page;
        queue->follow = false;
    }
    pthread_mutex_unlock(&migration->lock);
}

/* The first dirty page of block b from its cursor on, moving the cursor
 * there; false when none is left after it. */
static bool dirty_from_cursor(struct source *source, uint32_t b)
{
    struct migration *migration = source->migration;
    const uint64_t *bitmap = migration->bitmaps[b];
    uint64_t pages = ram_block_pages(&migration->host.blocks[b]);
    uint64_t page = source->postcopy_cursor[b];

    while (page < pages && !postcopy_test_dirty(bitmap, page))
        page = bits_from(bitmap, page) ? page + 1 : (page / 64 + 1) * 64;
    source->postcopy_cursor[b] = page;
    return page < pages;
}

/* The next batch of dirty pages: from the background's block and cursor
 * on, then the other blocks', then, once nothing is dirty after any
 * cursor, from the start of every block again (the pages the jumps to
 * requested pages passed over). False when no page is left. */
static bool next_batch(struct source *source, uint32_t *block, uint64_t *first, uint64_t *count)
{
    struct migration *migration = source->migration;
    uint32_t nr_blocks = migration->host.nr_blocks;

    follow_requests(source);
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < nr_blocks; i++) {
            uint32_t b = (source->postcopy_block + i) % nr_blocks;
            if (!dirty_from_cursor(source, b))
                continue;
            const uint64_t *bitmap = migration->bitmaps[b];
            uint64_t pages = ram_block_pages(&migration->host.blocks[b]);
            uint64_t page = source->postcopy_cursor[b], end = page;
            while (end < pages && end - page < BACKGROUND_BATCH && postcopy_test_dirty(bitmap, end))
                end++;
            source->postcopy_block = b;
            *block = b;
            *first = page;
            *count = end - page;
            return true;
        }
        for (uint32_t b = 0; b < nr_blocks; b++)
            source->postcopy_cursor[b] = 0;
    }
    return false;
}

/* Waits, answering requests, while the main channel's send queue holds
 * more than BACKGROUND_QUEUE_MAX bytes. A channel that cannot tell (not a
 * socket) is not waited for. */
static int drain_queue(struct source *source, struct gw_error *err)
{
    struct channel *channel = &source->migration->channel;
    int queued = 0, rc = 0;

    while (rc == 0 && ioctl(channel->fd, SIOCOUTQ, &queued) == 0 &&
           (unsigned)queued > BACKGROUND_QUEUE_MAX) {
        struct timespec pause = { 0, 200000 };
        pthread_mutex_lock(&source->migration->lock);
        bool gone = source->migration->rp_error[0] || source->migration->rp_closed;
        pthread_mutex_unlock(&source->migration->lock);
        if (gone)
            break;   /* the caller's loop sees it */
        nanosleep(&pause, NULL);
        rc = serve_requests(source, err);
    }
    return rc;
}

/* max-postcopy-bandwidth over the background pages since the switch. */
static void pace(struct source *source, uint64_t started_us, uint64_t bytes)
{
    struct migration *migration = source->migration;
    uint64_t limit, now = migration_now_us();

    pthread_mutex_lock(&migration->lock);
    limit = migration->params.max_postcopy_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!limit)
        return;
    uint64_t due = started_us + bytes * 1000000 / limit;
    /* Short sleeps: a request that comes meanwhile waits at most 1 ms. */
    if (due > now) {
        uint64_t us = due - now < 1000 ? due - now : 1000;
        struct timespec pause = { 0, (long)us * 1000 };
        nanosleep(&pause, NULL);
    }
}

static int wait_done(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;

    return migration_wait_for_destination(migration, &migration->rp_postcopy_done,
                                          DONE_TIMEOUT_US, "it placed every page", err);
}

/* The rest of the pages, requested ones first, then END and the
 * destination's RP_POSTCOPY_DONE. */
static int send_rest_once(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint64_t started = migration_now_us();
    uint64_t bytes_before = atomic_load(&migration->stats.postcopy_bytes);
    uint32_t block;
    uint64_t first, count;
    int rc = 0;

    while (rc == 0) {
        if ((rc = serve_requests(source, err)) < 0)
            break;
        pthread_mutex_lock(&migration->lock);
        bool gone = migration->rp_error[0] || migration->rp_closed;
        pthread_mutex_unlock(&migration->lock);
        if (gone) {
            rc = migration_wait_for_destination(migration, &migration->rp_postcopy_done, 0,
                                                "it placed every page", err);
            break;
        }
        if (!next_batch(source, &block, &first, &count))
            break;
        if ((rc = drain_queue(source, err)) < 0)
            break;
        rc = send_pages(source, block, first, count, err);
        pace(source, started, atomic_load(&migration->stats.postcopy_bytes) - bytes_before);
    }
    if (rc == 0)
        rc = serve_requests(source, err);
    if (rc == 0)
        rc = preempt_end(migration, err);
    if (rc == 0)
        rc = source_send_end(source, err);
    if (rc == 0)
        rc = wait_done(source, err);
    return rc;
}

/* Until every page is there. A broken link pauses and, once recovered,
 * goes on from what the destination has; only a destination that says it
 * failed (RP_ERROR), or the VM ending, ends it. */
int postcopy_send_rest(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    int rc;

    migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
    rc = postcopy_keep_needed(source, err);
    while (rc == 0 && (rc = send_rest_once(source, err)) < 0) {
        pthread_mutex_lock(&migration->lock);
        bool refused = migration->rp_refused;
        pthread_mutex_unlock(&migration->lock);
        if (refused || migration_cancelled(migration))
            break;
        struct gw_error failure = *err;
        gw_error_clear(err);
        rc = postcopy_source_recover(source, &failure, err);
    }
    postcopy_free_needed(source);
    if (rc < 0)
        gw_error_prefix(err, "in postcopy, with the guest running on the destination");
    return rc;
}
