/* The destination's page loader, and the RAM_BLOCKS record both sides
 * read. Everything in a body is checked before it is used: block ids
 * against the block list, page indexes against the block, counts against
 * the record length; only then does the landing give a target. No write
 * ever leaves a block. */
#include "ram_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/size.h>

#include <zstd.h>

#define RAM_BLOCK_ENTRY 48   /* name[32], size u64, gpa u64 */

uint32_t ram_blocks_record(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *body)
{
    uint32_t count = nr_blocks, reserved = 0;
    uint8_t *at = body + 8;

    memcpy(body, &count, 4);
    memcpy(body + 4, &reserved, 4);
    for (unsigned i = 0; i < nr_blocks; i++, at += RAM_BLOCK_ENTRY) {
        memset(at, 0, 32);
        memcpy(at, blocks[i].name, strnlen(blocks[i].name, 31));
        memcpy(at + 32, &blocks[i].size, 8);
        memcpy(at + 40, &blocks[i].gpa, 8);
    }
    return 8 + nr_blocks * RAM_BLOCK_ENTRY;
}

int ram_check_blocks(const struct ram_block *blocks, unsigned nr_blocks, uint32_t page_size,
                     const uint8_t *body, uint32_t length, struct gw_error *err)
{
    char theirs[32], ours[32];
    uint32_t count;

    if (length < 8)
        return gw_error_set(err, -EPROTO, "RAM_BLOCKS record is too short");
    memcpy(&count, body, 4);
    if (count > STREAM_BLOCKS_MAX || length != 8 + count * RAM_BLOCK_ENTRY)
        return gw_error_set(err, -EPROTO, "RAM_BLOCKS record lists %u blocks in %u bytes",
                            count, length);
    if (page_size != blocks[0].page_size)
        return gw_error_set(err, -EPROTO, "the source's page size is %u, this VM's is %" PRIu64,
                            page_size, blocks[0].page_size);
    for (uint32_t i = 0; i < count || i < nr_blocks; i++) {
        const uint8_t *entry = body + 8 + i * RAM_BLOCK_ENTRY;
        char name[33] = { 0 };
        uint64_t size = 0;

        if (i < count) {
            memcpy(name, entry, 32);
            memcpy(&size, entry + 32, 8);
        }
        if (i >= count)
            return gw_error_set(err, -EINVAL,
                                "this VM has RAM block '%s' (%s) that the source lacks: start "
                                "the destination with the source's --memory",
                                blocks[i].name, size_format(blocks[i].size, ours, sizeof(ours)));
        if (i >= nr_blocks)
            return gw_error_set(err, -EINVAL,
                                "the source has RAM block '%s' (%s) that this VM lacks: start "
                                "the destination with the source's --memory",
                                name, size_format(size, theirs, sizeof(theirs)));
        if (strcmp(name, blocks[i].name) || size != blocks[i].size)
            return gw_error_set(err, -EINVAL,
                                "RAM block %u differs: the source has '%s' of %s, this VM has "
                                "'%s' of %s; start the destination with the source's --memory",
                                i, name, size_format(size, theirs, sizeof(theirs)),
                                blocks[i].name, size_format(blocks[i].size, ours, sizeof(ours)));
    }
    return 0;
}

static int check_block(unsigned nr_blocks, uint32_t block, const char *what,
                       struct gw_error *err)
{
    if (block >= nr_blocks)
        return gw_error_set(err, -EPROTO, "%s record names RAM block %u; there are %u", what,
                            block, nr_blocks);
    return 0;
}

/* Bits of one word may belong to pages that other receivers load at the
 * same time: every change is atomic. */
static void set_bit(uint64_t *bitmap, uint64_t page)
{
    __atomic_fetch_or(&bitmap[page / 64], 1ULL << (page % 64), __ATOMIC_RELAXED);
}

static bool test_and_clear_bit(uint64_t *bitmap, uint64_t page)
{
    uint64_t mask = 1ULL << (page % 64);

    return __atomic_fetch_and(&bitmap[page / 64], ~mask, __ATOMIC_RELAXED) & mask;
}

void ram_loader_init(struct ram_loader *loader, const struct ram_block *blocks,
                     unsigned nr_blocks, const struct page_landing *landing)
{
    memset(loader, 0, sizeof(*loader));
    loader->blocks = blocks;
    loader->nr_blocks = nr_blocks;
    loader->landing = *landing;
    pthread_mutex_init(&loader->torn.lock, NULL);
}

void ram_loader_destroy(struct ram_loader *loader)
{
    for (unsigned i = 0; i < STREAM_BLOCKS_MAX; i++) {
        free(loader->torn.bitmaps[i]);
        loader->torn.bitmaps[i] = NULL;
    }
    pthread_mutex_destroy(&loader->torn.lock);
}

/* A page that arrived with a bad checksum must come again before END. */
static int mark_torn(struct ram_loader *loader, uint32_t block, uint64_t page,
                     uint64_t record_offset, struct gw_error *err)
{
    struct torn_pages *torn = &loader->torn;
    int rc = 0;

    pthread_mutex_lock(&torn->lock);
    if (!torn->bitmaps[block]) {
        uint64_t words = ram_block_bitmap_words(&loader->blocks[block]);
        torn->bitmaps[block] = calloc(words, sizeof(uint64_t));
    }
    if (!torn->bitmaps[block]) {
        rc = gw_error_set(err, -ENOMEM, "out of memory for the torn-page bitmap");
    } else if (!(torn->bitmaps[block][page / 64] >> (page % 64) & 1)) {
        set_bit(torn->bitmaps[block], page);
        torn->pages++;
        torn->offset = record_offset;
    }
    pthread_mutex_unlock(&torn->lock);
    return rc;
}

/* Without a torn page anywhere (the usual case) this takes no lock. A page
 * is in at most one record per pass, and the receivers meet at every pass
 * boundary, so a tear in pass k is seen here in pass k+1. */
static void page_arrived_whole(struct ram_loader *loader, uint32_t block, uint64_t page)
{
    struct torn_pages *torn = &loader->torn;

    if (!atomic_load(&torn->pages))
        return;
    pthread_mutex_lock(&torn->lock);
    if (torn->bitmaps[block] && test_and_clear_bit(torn->bitmaps[block], page))
        torn->pages--;
    pthread_mutex_unlock(&torn->lock);
}

static int check_page_indexes(const struct ram_loader *loader, uint32_t block, uint32_t count,
                              const uint64_t *indexes, struct gw_error *err)
{
    uint64_t block_pages = ram_block_pages(&loader->blocks[block]);

    for (uint32_t i = 0; i < count; i++)
        if (indexes[i] >= block_pages)
            return gw_error_set(err, -EPROTO,
                                "PAGES record names page %" PRIu64 " of block '%s', which has %"
                                PRIu64 " pages", indexes[i], loader->blocks[block].name,
                                block_pages);
    return 0;
}

/* The checked part of PAGES and PAGES_ZSTD: block, count, indexes, CRCs,
 * and where each page's bytes go. */
struct pages_meta {
    uint32_t block, count;
    uint64_t indexes[STREAM_PAGES_PER_RECORD];
    uint32_t crcs[STREAM_PAGES_PER_RECORD];
    uint8_t *targets[STREAM_PAGES_PER_RECORD];
};

static int parse_pages_meta(const struct stream_record *record, struct ram_loader *loader,
                            uint32_t meta_length, struct pages_meta *meta, struct gw_error *err)
{
    const char *name = stream_record_name(record->type);
    const struct page_landing *landing = &loader->landing;
    int rc;

    if (meta_length < 8)
        return gw_error_set(err, -EPROTO, "%s record is too short", name);
    memcpy(&meta->block, record->body, 4);
    memcpy(&meta->count, record->body + 4, 4);
    if ((rc = check_block(loader->nr_blocks, meta->block, name, err)) < 0)
        return rc;
    if (meta->count == 0 || meta->count > STREAM_PAGES_PER_RECORD ||
        meta_length < 8 + 12 * meta->count + (meta->count % 2) * 4)
        return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64 " of %u "
                            "bytes cannot hold %u pages", name, record->offset, record->length,
                            meta->count);
    memcpy(meta->indexes, record->body + 8, 8 * meta->count);
    memcpy(meta->crcs, record->body + 8 + 8 * meta->count, 4 * meta->count);
    if ((rc = check_page_indexes(loader, meta->block, meta->count, meta->indexes, err)) < 0)
        return rc;
    /* Every index is inside the block: only now may the landing give targets. */
    for (uint32_t i = 0; i < meta->count; i++)
        meta->targets[i] = landing->ops->target(landing->opaque, meta->block, meta->indexes[i]);
    return 0;
}

/* The pages are at their targets: check each one's CRC, and commit it. */
static int pages_landed(struct ram_loader *loader, struct ram_load_counts *counts,
                        const struct pages_meta *meta, uint32_t page_size,
                        uint64_t record_offset, struct gw_error *err)
{
    const struct page_landing *landing = &loader->landing;
    int rc;

    for (uint32_t i = 0; i < meta->count; i++) {
        if (stream_crc32c(0, meta->targets[i], page_size) != meta->crcs[i]) {
            rc = mark_torn(loader, meta->block, meta->indexes[i], record_offset, err);
        } else {
            page_arrived_whole(loader, meta->block, meta->indexes[i]);
            rc = landing->ops->commit ? landing->ops->commit(landing->opaque, meta->block,
                                                             meta->indexes[i], err) : 0;
        }
        if (rc < 0)
            return rc;
    }
    counts->normal_pages += meta->count;
    return 0;
}

int ram_load_pages(struct stream_reader *reader, struct stream_record *record,
                   struct ram_loader *loader, struct ram_load_counts *counts,
                   struct gw_error *err)
{
    uint32_t page_size = reader->page_size;
    struct pages_meta meta;
    struct iovec iov[STREAM_PAGES_PER_RECORD];
    int nparts = 0, rc;

    rc = parse_pages_meta(record, loader, record->crc_length, &meta, err);
    if (rc < 0)
        return rc;
    if (record->crc_length != 8 + 12 * meta.count + (meta.count % 2) * 4 ||
        record->length != record->crc_length + (uint64_t)meta.count * page_size)
        return gw_error_set(err, -EPROTO, "PAGES record at stream offset %" PRIu64 " of %u "
                            "bytes cannot hold %u pages", record->offset, record->length,
                            meta.count);
    for (uint32_t i = 0; i < meta.count; i++) {
        uint8_t *target = meta.targets[i];
        if (nparts && (uint8_t *)iov[nparts - 1].iov_base + iov[nparts - 1].iov_len == target)
            iov[nparts - 1].iov_len += page_size;
        else
            iov[nparts++] = (struct iovec){ target, page_size };
    }
    rc = stream_read_payload(reader, record, iov, nparts, err);
    if (rc < 0)
        return rc;
    return pages_landed(loader, counts, &meta, page_size, record->offset, err);
}

int ram_load_pages_zstd(struct stream_record *record, struct ram_loader *loader,
                        struct ram_load_counts *counts, uint32_t page_size, void *dctx,
                        uint8_t *scratch, struct gw_error *err)
{
    struct pages_meta meta;
    uint32_t meta_length;
    size_t size;
    int rc = parse_pages_meta(record, loader, record->length, &meta, err);

    if (rc < 0)
        return rc;
    meta_length = 8 + 12 * meta.count + (meta.count % 2) * 4;
    size = ZSTD_decompressDCtx(dctx, scratch, (size_t)meta.count * page_size,
                               record->body + meta_length, record->length - meta_length);
    if (ZSTD_isError(size) || size != (size_t)meta.count * page_size)
        return gw_error_set(err, -EPROTO, "PAGES_ZSTD record at stream offset %" PRIu64 " does "
                            "not decompress to its %u pages: %s", record->offset, meta.count,
                            ZSTD_isError(size) ? ZSTD_getErrorName(size) : "wrong size");
    for (uint32_t i = 0; i < meta.count; i++)
        memcpy(meta.targets[i], scratch + (size_t)i * page_size, page_size);
    return pages_landed(loader, counts, &meta, page_size, record->offset, err);
}

void ram_loader_forget_torn(struct ram_loader *loader, uint32_t block, uint64_t first,
                            uint64_t pages)
{
    for (uint64_t page = first; page < first + pages && atomic_load(&loader->torn.pages); page++)
        page_arrived_whole(loader, block, page);
}

int ram_check_torn(struct ram_loader *loader, struct gw_error *err)
{
    if (atomic_load(&loader->torn.pages) == 0)
        return 0;
    return gw_error_set(err, -EBADMSG,
                        "%" PRIu64 " page(s) arrived with a bad checksum (the last in the PAGES "
                        "record at stream offset %" PRIu64 ") and were not sent again: the "
                        "stream is corrupt", atomic_load(&loader->torn.pages),
                        loader->torn.offset);
}

int ram_load_zero_pages(struct ram_loader *loader, struct ram_load_counts *counts,
                        uint32_t page_size, const uint8_t *body, uint32_t length,
                        struct gw_error *err)
{
    const struct page_landing *landing = &loader->landing;
    uint32_t block, count;
    uint64_t block_pages;
    int rc;

    if (length < 8)
        return gw_error_set(err, -EPROTO, "ZERO_PAGES record is too short");
    memcpy(&block, body, 4);
    memcpy(&count, body + 4, 4);
    if ((rc = check_block(loader->nr_blocks, block, "ZERO_PAGES", err)) < 0)
        return rc;
    if (count == 0 || count > STREAM_ZERO_RUNS_PER_RECORD || length != 8 + (uint64_t)count * 16)
        return gw_error_set(err, -EPROTO, "ZERO_PAGES record of %u bytes cannot hold %u runs",
                            length, count);
    block_pages = loader->blocks[block].size / page_size;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t first, run;
        memcpy(&first, body + 8 + (size_t)i * 16, 8);
        memcpy(&run, body + 16 + (size_t)i * 16, 8);
        if (run == 0 || first >= block_pages || run > block_pages - first)
            return gw_error_set(err, -EPROTO,
                                "ZERO_PAGES record names pages [%" PRIu64 ", +%" PRIu64
                                ") of block '%s', which has %" PRIu64 " pages",
                                first, run, loader->blocks[block].name, block_pages);
        for (uint64_t page = first; page < first + run; page++) {
            page_arrived_whole(loader, block, page);
            if ((rc = landing->ops->zero(landing->opaque, block, page, err)) < 0)
                return rc;
        }
        counts->zero_pages += run;
    }
    return 0;
}
