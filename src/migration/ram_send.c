/* The source's page sender: walks the dirty bitmaps in chunks, re-arms
 * tracking for a chunk just before reading it, sends zero pages as runs and
 * other pages straight from guest memory, each with its own CRC. A guest
 * write between the CRC and the send makes the destination see a torn page;
 * that write re-dirtied the page, so a later pass (or the stop-copy phase)
 * sends it again, and the destination insists on that before END. */
#include "migration_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Pages per PAGES record the sender makes: the most the format allows.
 * Fewer syscalls and records per GiB; measured ~10% faster than 64 pages
 * here (pages are sent from guest memory, so no copy wants a small batch). */
#define BATCH_PAGES STREAM_PAGES_PER_RECORD
/* Pages re-armed and read together: one KVM_CLEAR_DIRTY_LOG per chunk. */
#define CHUNK_WORDS 4
#define CHUNK_PAGES (CHUNK_WORDS * 64)

/* Records ready to write, in order. The migration thread fills a slot (the
 * pages' CRCs, the next chunk's dirty-log clear) while the sender thread
 * writes the one before: CPU work and socket copies overlap. */
#define SEND_SLOTS 8

struct send_slot {
    uint32_t type;
    uint32_t crc_length;
    bool vm_stopped;
    uint64_t pages;                          /* counted once written */
    int nparts;
    struct iovec parts[1 + BATCH_PAGES];     /* parts[0] is meta */
    uint8_t meta[8 + STREAM_ZERO_RUNS_PER_RECORD * 16];
};

struct ram_sender {
    struct migration *migration;
    struct stream_writer *writer;
    uint32_t page_size;
    bool vm_stopped;

    uint32_t batch_block;
    uint32_t batch_count;
    /* The record's checked part: block, count, indexes, CRCs, padding. */
    struct {
        uint64_t index[BATCH_PAGES];
        uint32_t crc[BATCH_PAGES];
    } meta;
    const uint8_t *batch_pages[BATCH_PAGES];

    uint32_t zero_block;
    uint32_t zero_count;
    uint64_t zero_runs[STREAM_ZERO_RUNS_PER_RECORD][2];

    uint64_t window_start_us, window_bytes;   /* max-bandwidth pacing: sender thread only */
    int pagemap_fd;         /* /proc/self/pagemap, or -1: no zero hints */
    uint64_t pagemap[CHUNK_PAGES];

    /* The queue: `lock` guards everything below; `changed` wakes both sides. */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct send_slot slots[SEND_SLOTS];
    unsigned next_fill, next_send, queued;
    bool stopping;
    int send_rc;            /* the sender thread's first error, kept */
    struct gw_error send_err;
};

static void *sender_thread(void *opaque);

bool ram_page_is_zero(const uint8_t *page, size_t len)
{
    const uint64_t *words = (const uint64_t *)page;

    for (size_t i = 0; i < len / 8; i += 8) {
        if (words[i] | words[i + 1] | words[i + 2] | words[i + 3] | words[i + 4] |
            words[i + 5] | words[i + 6] | words[i + 7])
            return false;
    }
    return true;
}

struct ram_sender *ram_sender_new(struct migration *migration, struct stream_writer *writer,
                                  uint32_t page_size)
{
    struct ram_sender *sender = calloc(1, sizeof(*sender));

    if (!sender)
        return NULL;
    sender->migration = migration;
    sender->writer = writer;
    sender->page_size = page_size;
    sender->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    pthread_mutex_init(&sender->lock, NULL);
    pthread_cond_init(&sender->changed, NULL);
    if (pthread_create(&sender->thread, NULL, sender_thread, sender)) {
        ram_sender_free(sender);
        return NULL;
    }
    sender->thread_started = true;
    return sender;
}

void ram_sender_free(struct ram_sender *sender)
{
    if (!sender)
        return;
    if (sender->thread_started) {
        pthread_mutex_lock(&sender->lock);
        sender->stopping = true;
        pthread_cond_broadcast(&sender->changed);
        pthread_mutex_unlock(&sender->lock);
        pthread_join(sender->thread, NULL);
    }
    if (sender->pagemap_fd >= 0)
        close(sender->pagemap_fd);
    pthread_mutex_destroy(&sender->lock);
    pthread_cond_destroy(&sender->changed);
    free(sender);
}

/* Sleeps as needed to keep to max-bandwidth, in slices that notice cancel. */
static void pace(struct ram_sender *sender, uint64_t bytes, bool vm_stopped)
{
    struct migration *migration = sender->migration;
    uint64_t limit, now = migration_now_us(), due_us;

    pthread_mutex_lock(&migration->lock);
    limit = migration->params.max_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!limit || vm_stopped)
        return;   /* the stop-copy phase is never throttled: it is downtime */
    if (!sender->window_start_us || now - sender->window_start_us > 1000000) {
        sender->window_start_us = now;
        sender->window_bytes = 0;
    }
    sender->window_bytes += bytes;
    due_us = sender->window_start_us + sender->window_bytes * 1000000 / limit;
    while (now < due_us && !migration_cancelled(migration)) {
        uint64_t nap = due_us - now > 20000 ? 20000 : due_us - now;
        struct timespec ts = { 0, (long)(nap * 1000) };
        nanosleep(&ts, NULL);
        now = migration_now_us();
    }
}

static int write_slot(struct ram_sender *sender, struct send_slot *slot, struct gw_error *err)
{
    struct migration_stats *stats = &sender->migration->stats;
    uint64_t before = sender->writer->offset, bytes;
    int rc = stream_write_record_partial_crc(sender->writer, slot->type, slot->parts,
                                             slot->nparts, slot->crc_length, err);

    if (rc < 0)
        return rc;
    bytes = sender->writer->offset - before;
    migration_count_sent(sender->migration, bytes, slot->vm_stopped);
    atomic_fetch_add(slot->type == REC_PAGES ? &stats->normal_pages : &stats->zero_pages,
                     slot->pages);
    pace(sender, bytes, slot->vm_stopped);
    return 0;
}

/* The sender thread: owns the channel's write side while a pass runs. */
static void *sender_thread(void *opaque)
{
    struct ram_sender *sender = opaque;

    pthread_mutex_lock(&sender->lock);
    for (;;) {
        while (!sender->queued && !sender->stopping)
            pthread_cond_wait(&sender->changed, &sender->lock);
        if (!sender->queued)
            break;
        struct send_slot *slot = &sender->slots[sender->next_send];
        int rc = sender->send_rc;
        pthread_mutex_unlock(&sender->lock);
        if (rc == 0)   /* after an error, queued records are dropped */
            rc = write_slot(sender, slot, &sender->send_err);
        pthread_mutex_lock(&sender->lock);
        if (rc < 0 && !sender->send_rc)
            sender->send_rc = rc;
        sender->next_send = (sender->next_send + 1) % SEND_SLOTS;
        sender->queued--;
        pthread_cond_broadcast(&sender->changed);
    }
    pthread_mutex_unlock(&sender->lock);
    return NULL;
}

static int sender_error(struct ram_sender *sender, struct gw_error *err)
{
    int rc = sender->send_rc;

    if (rc < 0 && err)
        *err = sender->send_err;
    return rc;
}

/* Waits for a free slot; returns it, or NULL after a send error. */
static struct send_slot *claim_slot(struct ram_sender *sender)
{
    struct send_slot *slot = NULL;

    pthread_mutex_lock(&sender->lock);
    while (sender->queued == SEND_SLOTS && !sender->send_rc)
        pthread_cond_wait(&sender->changed, &sender->lock);
    if (!sender->send_rc)
        slot = &sender->slots[sender->next_fill];
    pthread_mutex_unlock(&sender->lock);
    return slot;
}

static void queue_slot(struct ram_sender *sender)
{
    pthread_mutex_lock(&sender->lock);
    sender->next_fill = (sender->next_fill + 1) % SEND_SLOTS;
    sender->queued++;
    pthread_cond_broadcast(&sender->changed);
    pthread_mutex_unlock(&sender->lock);
}

/* Returns once every queued record is written (or one failed). */
static int drain(struct ram_sender *sender, struct gw_error *err)
{
    int rc;

    pthread_mutex_lock(&sender->lock);
    while (sender->queued)
        pthread_cond_wait(&sender->changed, &sender->lock);
    rc = sender_error(sender, err);
    pthread_mutex_unlock(&sender->lock);
    return rc;
}

/* The PAGES body: meta (block, count, count indexes, count CRCs, padding to
 * 8), covered by the record CRC, then the pages from guest memory, adjacent
 * pages in one iovec. */
static int flush_batch(struct ram_sender *sender, struct gw_error *err)
{
    uint32_t count = sender->batch_count, crc_length = 8 + 12 * count + (count % 2) * 4;
    struct send_slot *slot;

    if (!count)
        return 0;
    slot = claim_slot(sender);
    if (!slot)
        return sender_error(sender, err);
    memcpy(slot->meta, &sender->batch_block, 4);
    memcpy(slot->meta + 4, &count, 4);
    memcpy(slot->meta + 8, sender->meta.index, 8 * count);
    memcpy(slot->meta + 8 + 8 * count, sender->meta.crc, 4 * count);
    memset(slot->meta + 8 + 12 * count, 0, 4);
    slot->parts[0] = (struct iovec){ slot->meta, crc_length };
    slot->nparts = 1;
    for (uint32_t i = 0; i < count; i++) {
        struct iovec *last = &slot->parts[slot->nparts - 1];
        if (slot->nparts > 1 &&
            (const uint8_t *)last->iov_base + last->iov_len == sender->batch_pages[i])
            last->iov_len += sender->page_size;
        else
            slot->parts[slot->nparts++] = (struct iovec){ (void *)sender->batch_pages[i],
                                                          sender->page_size };
    }
    slot->type = REC_PAGES;
    slot->crc_length = crc_length;
    slot->vm_stopped = sender->vm_stopped;
    slot->pages = count;
    sender->batch_count = 0;
    queue_slot(sender);
    return 0;
}

static int flush_zero(struct ram_sender *sender, struct gw_error *err)
{
    uint32_t header[2] = { sender->zero_block, sender->zero_count };
    size_t runs = sender->zero_count * sizeof(sender->zero_runs[0]);
    struct send_slot *slot;
    uint64_t pages = 0;

    if (!sender->zero_count)
        return 0;
    slot = claim_slot(sender);
    if (!slot)
        return sender_error(sender, err);
    for (uint32_t i = 0; i < sender->zero_count; i++)
        pages += sender->zero_runs[i][1];
    memcpy(slot->meta, header, sizeof(header));
    memcpy(slot->meta + sizeof(header), sender->zero_runs, runs);
    slot->parts[0] = (struct iovec){ slot->meta, sizeof(header) + runs };
    slot->nparts = 1;
    slot->type = REC_ZERO_PAGES;
    slot->crc_length = (uint32_t)(sizeof(header) + runs);
    slot->vm_stopped = sender->vm_stopped;
    slot->pages = pages;
    sender->zero_count = 0;
    queue_slot(sender);
    return 0;
}

static int add_zero(struct ram_sender *sender, uint32_t block, uint64_t page,
                    struct gw_error *err)
{
    int rc;

    if (sender->zero_count && sender->zero_block == block) {
        uint64_t *last = sender->zero_runs[sender->zero_count - 1];
        if (last[0] + last[1] == page) {
            last[1]++;
            return 0;
        }
    }
    if (sender->zero_count == STREAM_ZERO_RUNS_PER_RECORD ||
        (sender->zero_count && sender->zero_block != block)) {
        rc = flush_zero(sender, err);
        if (rc < 0)
            return rc;
    }
    sender->zero_block = block;
    sender->zero_runs[sender->zero_count][0] = page;
    sender->zero_runs[sender->zero_count][1] = 1;
    sender->zero_count++;
    return 0;
}

static int add_page(struct ram_sender *sender, uint32_t block, uint64_t page,
                    const uint8_t *data, struct gw_error *err)
{
    int rc;

    if (sender->batch_count == BATCH_PAGES ||
        (sender->batch_count && sender->batch_block != block)) {
        rc = flush_batch(sender, err);
        if (rc < 0)
            return rc;
    }
    sender->batch_block = block;
    sender->meta.index[sender->batch_count] = page;
    sender->meta.crc[sender->batch_count] = stream_crc32c(0, data, sender->page_size);
    sender->batch_pages[sender->batch_count] = data;
    sender->batch_count++;
    return 0;
}

static void mark_zero(uint64_t *zero, uint64_t from, uint64_t to)
{
    for (uint64_t page = from; page < to; page++)
        zero[page / 64] |= 1ULL << (page % 64);
}

/* A hole in the backing file reads as zero. One SEEK_DATA per chunk: the
 * pages before the first data are holes. (SEEK_HOLE would walk a full file
 * to its end on every call.) */
static void file_holes(const struct ram_block *block, uint64_t first_page, unsigned pages,
                       uint64_t *zero)
{
    off_t start = (off_t)(block->fd_offset + first_page * block->page_size);
    off_t end = start + (off_t)pages * (off_t)block->page_size;
    off_t data = lseek(block->fd, start, SEEK_DATA);

    if (data < 0 && errno != ENXIO)
        return;   /* no answer: read the pages */
    if (data < 0 || data > end)
        data = end;
    mark_zero(zero, 0, (uint64_t)(data - start) / block->page_size);
}

/* Anonymous pages neither present nor swapped were never written: zero. */
static void untouched_pages(struct ram_sender *sender, const struct ram_block *block,
                            uint64_t first_page, unsigned pages, uint64_t *zero)
{
    uint64_t first_host_page = (uint64_t)(uintptr_t)(block->host + first_page * block->page_size)
                               / 4096;
    size_t len = pages * sizeof(uint64_t);

    if (block->page_size != 4096 ||
        pread(sender->pagemap_fd, sender->pagemap, len, (off_t)(first_host_page * 8)) != (ssize_t)len)
        return;
    for (unsigned i = 0; i < pages; i++)
        if (!(sender->pagemap[i] & (3ULL << 62)))   /* bit 63 present, bit 62 swapped */
            zero[i / 64] |= 1ULL << (i % 64);
}

/* Pages of a chunk known to be zero without reading them. Asked after the
 * chunk is re-armed, so a page written since is either seen as written here
 * or dirty again for the next pass. */
static void known_zero(struct ram_sender *sender, const struct ram_block *block,
                       uint64_t first_page, unsigned nr_words, uint64_t *zero)
{
    uint64_t block_pages = ram_block_pages(block);
    unsigned pages = (unsigned)(block_pages - first_page < (uint64_t)nr_words * 64
                                    ? block_pages - first_page : (uint64_t)nr_words * 64);

    memset(zero, 0, nr_words * sizeof(uint64_t));
    if (block->fd >= 0)
        file_holes(block, first_page, pages, zero);
    else if (sender->pagemap_fd >= 0)
        untouched_pages(sender, block, first_page, pages, zero);
}

static int send_chunk(struct ram_sender *sender, uint32_t block_index, uint64_t first_page,
                      uint64_t *words, unsigned nr_words, bool clear_tracker,
                      struct gw_error *err)
{
    struct migration *migration = sender->migration;
    const struct ram_block *block = &migration->host.blocks[block_index];
    uint64_t bits[CHUNK_WORDS], zero[CHUNK_WORDS];
    int rc;

    memcpy(bits, words, nr_words * sizeof(uint64_t));
    memset(words, 0, nr_words * sizeof(uint64_t));
    uint64_t pages = 0;
    for (unsigned w = 0; w < nr_words; w++)
        pages += (uint64_t)__builtin_popcountll(bits[w]);
    /* remaining counts what is not sent yet, as QEMU's does. */
    atomic_fetch_sub(&migration->stats.remaining_bytes, pages * sender->page_size);
    if (clear_tracker) {
        rc = migration->host.dirty->clear(migration->host.dirty_opaque, block_index, first_page,
                                          bits, nr_words, err);
        if (rc < 0)
            return rc;
    }
    known_zero(sender, block, first_page, nr_words, zero);
    for (unsigned w = 0; w < nr_words; w++) {
        for (uint64_t word = bits[w]; word; word &= word - 1) {
            unsigned bit = (unsigned)__builtin_ctzll(word);
            uint64_t page = first_page + w * 64 + bit;
            const uint8_t *data = block->host + page * sender->page_size;
            rc = (zero[w] >> bit & 1) || ram_page_is_zero(data, sender->page_size)
                     ? add_zero(sender, block_index, page, err)
                     : add_page(sender, block_index, page, data, err);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int ram_sender_send_dirty(struct ram_sender *sender, bool clear_tracker, bool vm_stopped,
                          struct gw_error *err)
{
    struct migration *migration = sender->migration;
    int rc;

    sender->vm_stopped = vm_stopped;
    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t *bitmap = migration->bitmaps[b];
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);

        for (uint64_t w = 0; w < words; w += CHUNK_WORDS) {
            unsigned nr_words = words - w < CHUNK_WORDS ? (unsigned)(words - w) : CHUNK_WORDS;
            bool any = false;
            for (unsigned i = 0; i < nr_words; i++)
                any |= bitmap[w + i] != 0;
            if (!any)
                continue;
            if (migration_cancelled(migration)) {
                drain(sender, NULL);
                return gw_error_set(err, -ECANCELED, "the migration was cancelled");
            }
            rc = send_chunk(sender, b, w * 64, bitmap + w, nr_words, clear_tracker, err);
            if (rc < 0) {
                drain(sender, NULL);
                return rc;
            }
        }
    }
    if ((rc = flush_batch(sender, err)) < 0 || (rc = flush_zero(sender, err)) < 0)
        return rc;
    /* The caller writes its own records next (PASS_END, DEVICE, END): ours
     * must all be on the wire first. */
    return drain(sender, err);
}

uint64_t ram_count_dirty(struct migration *migration)
{
    uint64_t pages = 0;

    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        for (uint64_t w = 0; w < words; w++)
            pages += (uint64_t)__builtin_popcountll(migration->bitmaps[b][w]);
    }
    return pages;
}
