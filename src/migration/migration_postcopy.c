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
#include <time.h>

/* Background pages per batch between two looks at the requests. */
#define BACKGROUND_BATCH 32
/* How long the source waits for RP_POSTCOPY_DONE after END. */
#define DONE_TIMEOUT_US (30ULL * 1000000)

int postcopy_advise(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    bool postcopy;

    pthread_mutex_lock(&migration->lock);
    postcopy = migration->cap_postcopy_ram;
    pthread_mutex_unlock(&migration->lock);
    return postcopy ? source_write_record(source, REC_POSTCOPY_ADVISE, NULL, 0, err) : 0;
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
            if (!(bitmap[page / 64] >> (page % 64) & 1)) {
                page = bitmap[page / 64] >> (page % 64) ? page + 1 : (page / 64 + 1) * 64;
                continue;
            }
            uint64_t first = page;
            while (page < pages && (bitmap[page / 64] >> (page % 64) & 1))
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
    if ((rc = source_write_record(source, REC_POSTCOPY_LISTEN, NULL, 0, err)) == 0 &&
        (rc = send_discards(source, runs, err)) == 0)
        rc = source_write_record(source, REC_POSTCOPY_RUN, NULL, 0, err);
    free(runs);
    return rc;
}

/* Bytes written after the switch: transferred and postcopy-bytes. The
 * record CRC covers crc_length bytes (PAGES: the metadata). */
static int write_counted(struct source *source, uint32_t type, const struct iovec *parts,
                         int nparts, uint32_t crc_length, struct gw_error *err)
{
    struct migration_stats *stats = &source->migration->stats;
    uint64_t before = source->writer.offset;
    int rc = stream_write_record_partial_crc(&source->writer, type, parts, nparts, crc_length,
                                             err);

    atomic_fetch_add(&stats->transferred, source->writer.offset - before);
    atomic_fetch_add(&stats->postcopy_bytes, source->writer.offset - before);
    return rc;
}

static int send_data_pages(struct source *source, uint32_t block, uint64_t first,
                           uint32_t count, struct gw_error *err)
{
    const struct ram_block *ram = &source->migration->host.blocks[block];
    uint8_t meta[8 + STREAM_PAGES_PER_RECORD * 12 + 4];
    uint32_t meta_length = 8 + 12 * count + (count % 2) * 4;
    const uint8_t *data = ram->host + first * ram->page_size;

    memset(meta, 0, meta_length);
    memcpy(meta, &block, 4);
    memcpy(meta + 4, &count, 4);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t page = first + i;
        uint32_t crc = stream_crc32c(0, data + (size_t)i * ram->page_size, ram->page_size);
        memcpy(meta + 8 + 8 * i, &page, 8);
        memcpy(meta + 8 + 8 * count + 4 * i, &crc, 4);
    }
    struct iovec parts[2] = { { meta, meta_length },
                              { (void *)data, (size_t)count * ram->page_size } };
    atomic_fetch_add(&source->migration->stats.normal_pages, count);
    return write_counted(source, REC_PAGES, parts, 2, meta_length, err);
}

static int send_zero_pages(struct source *source, uint32_t block, uint64_t first,
                           uint64_t count, struct gw_error *err)
{
    uint32_t head[2] = { block, 1 };
    uint64_t run[2] = { first, count };
    struct iovec parts[2] = { { head, sizeof(head) }, { run, sizeof(run) } };

    atomic_fetch_add(&source->migration->stats.zero_pages, count);
    return write_counted(source, REC_ZERO_PAGES, parts, 2, sizeof(head) + sizeof(run), err);
}

/* Pages [first, first + count) of a block, as they are: runs of zero
 * pages as ZERO_PAGES, the others as PAGES. Their dirty bits are cleared. */
static int send_pages(struct source *source, uint32_t block, uint64_t first, uint64_t count,
                      struct gw_error *err)
{
    const struct ram_block *ram = &source->migration->host.blocks[block];
    uint64_t *bitmap = source->migration->bitmaps[block];
    uint64_t end = first + count;
    int rc = 0;

    for (uint64_t page = first; page < end; page++)
        bitmap[page / 64] &= ~(1ULL << (page % 64));
    for (uint64_t page = first; page < end && rc == 0;) {
        bool zero = ram_page_is_zero(ram->host + page * ram->page_size, ram->page_size);
        uint64_t run = 1;
        while (page + run < end && run < STREAM_PAGES_PER_RECORD &&
               ram_page_is_zero(ram->host + (page + run) * ram->page_size, ram->page_size) ==
                   zero)
            run++;
        rc = zero ? send_zero_pages(source, block, page, run, err)
                  : send_data_pages(source, block, page, (uint32_t)run, err);
        page += run;
    }
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
        }
        pthread_mutex_unlock(&migration->lock);
        if (!any)
            return 0;
        int rc = send_pages(source, request.block, request.first, request.pages, err);
        if (rc < 0)
            return rc;
    }
}

/* The next batch of dirty pages after the block's cursor; false when no
 * page is left in any block. */
static bool next_batch(struct source *source, uint32_t *block, uint64_t *first, uint64_t *count)
{
    struct migration *migration = source->migration;

    for (uint32_t b = 0; b < migration->host.nr_blocks; b++) {
        const uint64_t *bitmap = migration->bitmaps[b];
        uint64_t pages = ram_block_pages(&migration->host.blocks[b]);
        uint64_t page = source->postcopy_cursor[b];
        while (page < pages && !(bitmap[page / 64] >> (page % 64) & 1))
            page = bitmap[page / 64] >> (page % 64) ? page + 1 : (page / 64 + 1) * 64;
        source->postcopy_cursor[b] = page;
        if (page >= pages)
            continue;
        uint64_t end = page;
        while (end < pages && end - page < BACKGROUND_BATCH && (bitmap[end / 64] >> (end % 64) & 1))
            end++;
        *block = b;
        *first = page;
        *count = end - page;
        return true;
    }
    return false;
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

int postcopy_send_rest(struct source *source, struct gw_error *err)
{
    struct migration *migration = source->migration;
    uint64_t started = migration_now_us();
    uint64_t bytes_before = atomic_load(&migration->stats.postcopy_bytes);
    uint32_t block;
    uint64_t first, count;
    int rc = 0;

    migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
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
        rc = send_pages(source, block, first, count, err);
        pace(source, started, atomic_load(&migration->stats.postcopy_bytes) - bytes_before);
    }
    if (rc == 0)
        rc = serve_requests(source, err);
    if (rc == 0)
        rc = source_send_end(source, err);
    if (rc == 0)
        rc = wait_done(source, err);
    if (rc < 0)
        gw_error_prefix(err, "in postcopy, with the guest running on the destination");
    return rc;
}
