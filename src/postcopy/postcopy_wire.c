/* Postcopy's records: the destination's page requests (decoded on the
 * source, which trusts nothing that comes back on the return path) and
 * the source's discard runs (decoded on the destination). Every field is
 * checked against the block list before anything is used. */
#include "postcopy.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "ram/ram_internal.h"

static bool ram_page_is_zero_at(const struct ram_block *ram, uint64_t page)
{
    return ram_page_is_zero(ram->host + page * ram->page_size, ram->page_size);
}

void postcopy_request_encode(const struct postcopy_request *request, uint8_t *body)
{
    memcpy(body, &request->block, 4);
    memcpy(body + 4, &request->pages, 4);
    memcpy(body + 8, &request->first, 8);
}

int postcopy_request_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                            unsigned nr_blocks, struct postcopy_request *request,
                            struct gw_error *err)
{
    struct postcopy_request got;
    uint64_t block_pages;

    if (length != POSTCOPY_REQUEST_SIZE)
        return gw_error_set(err, -EPROTO, "RP_REQ_PAGES record has %u bytes, not %d", length,
                            POSTCOPY_REQUEST_SIZE);
    memcpy(&got.block, body, 4);
    memcpy(&got.pages, body + 4, 4);
    memcpy(&got.first, body + 8, 8);
    if (got.block >= nr_blocks)
        return gw_error_set(err, -EPROTO, "RP_REQ_PAGES names RAM block %u; there are %u",
                            got.block, nr_blocks);
    block_pages = ram_block_pages(&blocks[got.block]);
    if (got.pages == 0 || got.pages > POSTCOPY_REQUEST_PAGES_MAX)
        return gw_error_set(err, -EPROTO, "RP_REQ_PAGES asks for %u pages; a request is 1 to %d",
                            got.pages, POSTCOPY_REQUEST_PAGES_MAX);
    if (got.first >= block_pages || got.pages > block_pages - got.first)
        return gw_error_set(err, -EPROTO, "RP_REQ_PAGES asks for pages [%" PRIu64 ", +%u) of "
                            "block '%s', which has %" PRIu64 " pages", got.first, got.pages,
                            blocks[got.block].name, block_pages);
    *request = got;
    return 0;
}

int postcopy_bitmap_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                           unsigned nr_blocks, struct postcopy_bitmap_part *out,
                           struct gw_error *err)
{
    struct postcopy_bitmap_part got;
    uint64_t block_words;

    if (length < 16)
        return gw_error_set(err, -EPROTO, "RP_RECV_BITMAP record is too short");
    memcpy(&got.block, body, 4);
    memcpy(&got.words, body + 4, 4);
    memcpy(&got.first_word, body + 8, 8);
    if (got.block >= nr_blocks)
        return gw_error_set(err, -EPROTO, "RP_RECV_BITMAP names RAM block %u; there are %u",
                            got.block, nr_blocks);
    if (got.words == 0 || got.words > POSTCOPY_BITMAP_WORDS_MAX ||
        length != 16 + (uint64_t)got.words * 8)
        return gw_error_set(err, -EPROTO, "RP_RECV_BITMAP of %u bytes cannot hold %u words "
                            "(1 to %d)", length, got.words, POSTCOPY_BITMAP_WORDS_MAX);
    block_words = ram_block_bitmap_words(&blocks[got.block]);
    if (got.first_word >= block_words || got.words > block_words - got.first_word)
        return gw_error_set(err, -EPROTO, "RP_RECV_BITMAP covers words [%" PRIu64 ", +%u) of "
                            "block '%s', whose bitmap has %" PRIu64 " words", got.first_word,
                            got.words, blocks[got.block].name, block_words);
    got.bits = body + 16;
    *out = got;
    return 0;
}

int postcopy_discard_decode(const uint8_t *body, uint32_t length, const struct ram_block *blocks,
                            unsigned nr_blocks,
                            int (*discard)(void *opaque, uint32_t block, uint64_t first,
                                           uint64_t pages, struct gw_error *err),
                            void *opaque, struct gw_error *err)
{
    uint32_t block, count;
    uint64_t block_pages;
    int rc;

    if (length < 8)
        return gw_error_set(err, -EPROTO, "POSTCOPY_DISCARD record is too short");
    memcpy(&block, body, 4);
    memcpy(&count, body + 4, 4);
    if (block >= nr_blocks)
        return gw_error_set(err, -EPROTO, "POSTCOPY_DISCARD names RAM block %u; there are %u",
                            block, nr_blocks);
    if (count == 0 || count > POSTCOPY_DISCARD_RUNS_MAX || length != 8 + (uint64_t)count * 16)
        return gw_error_set(err, -EPROTO, "POSTCOPY_DISCARD record of %u bytes cannot hold %u "
                            "runs (1 to %d)", length, count, POSTCOPY_DISCARD_RUNS_MAX);
    block_pages = ram_block_pages(&blocks[block]);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t first, pages;
        memcpy(&first, body + 8 + (size_t)i * 16, 8);
        memcpy(&pages, body + 16 + (size_t)i * 16, 8);
        if (pages == 0 || first >= block_pages || pages > block_pages - first)
            return gw_error_set(err, -EPROTO, "POSTCOPY_DISCARD names pages [%" PRIu64 ", +%"
                                PRIu64 ") of block '%s', which has %" PRIu64 " pages",
                                first, pages, blocks[block].name, block_pages);
    }
    for (uint32_t i = 0; i < count; i++) {
        uint64_t first, pages;
        memcpy(&first, body + 8 + (size_t)i * 16, 8);
        memcpy(&pages, body + 16 + (size_t)i * 16, 8);
        if ((rc = discard(opaque, block, first, pages, err)) < 0)
            return rc;
    }
    return 0;
}

static int write_data_pages(struct stream_writer *writer, const struct ram_block *ram,
                            uint32_t block, uint64_t first, uint32_t count, struct gw_error *err)
{
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
    return stream_write_record_partial_crc(writer, REC_PAGES, parts, 2, meta_length, err);
}

static int write_zero_pages(struct stream_writer *writer, uint32_t block, uint64_t first,
                            uint64_t count, struct gw_error *err)
{
    uint32_t head[2] = { block, 1 };
    uint64_t run[2] = { first, count };
    struct iovec parts[2] = { { head, sizeof(head) }, { run, sizeof(run) } };

    return stream_write_record(writer, REC_ZERO_PAGES, parts, 2, err);
}

int postcopy_write_pages(struct stream_writer *writer, const struct ram_block *ram,
                         uint32_t block, uint64_t first, uint64_t count, uint64_t *bytes,
                         uint64_t *normal, uint64_t *zero, struct gw_error *err)
{
    uint64_t end = first + count, before = writer->offset;
    int rc = 0;

    for (uint64_t page = first; page < end && rc == 0;) {
        bool is_zero = ram_page_is_zero_at(ram, page);
        uint64_t run = 1;
        while (page + run < end && run < STREAM_PAGES_PER_RECORD &&
               ram_page_is_zero_at(ram, page + run) == is_zero)
            run++;
        if (is_zero) {
            rc = write_zero_pages(writer, block, page, run, err);
            *zero += run;
        } else {
            rc = write_data_pages(writer, ram, block, page, (uint32_t)run, err);
            *normal += run;
        }
        page += run;
    }
    *bytes += writer->offset - before;
    return rc;
}
