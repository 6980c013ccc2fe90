/* The destination's side of RDMA's RAM (docs/rdma.md): chunks of guest RAM
 * registered for the source's WRITEs when it asks (or every block at once
 * with rdma-pin-all), zero pages zapped through the landing, and the pages
 * the source says each pass wrote counted for END. Its WRITEs themselves it
 * never sees: they land in guest RAM, whose vCPUs are stopped (precopy). */
#include "rdma/rdma_link.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct dest_block {
    struct rdma_mr **chunks;    /* per chunk, once registered */
    struct rdma_mr *whole;      /* rdma-pin-all */
    uint64_t nr_chunks;
};

struct rdma_dest {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    struct page_landing landing;
    struct ram_load_counts *counts;
    uint64_t chunk_size;
    struct rdma_stats *stats;
    uint64_t zeroed_this_pass;
    struct dest_block *state;
};

void rdma_dest_free(struct rdma_dest *dest)
{
    if (!dest)
        return;
    for (unsigned b = 0; dest->state && b < dest->nr_blocks; b++)
        free(dest->state[b].chunks);
    free(dest->state);
    free(dest);
}

struct rdma_dest *rdma_dest_new(const struct ram_block *blocks, unsigned nr_blocks,
                                const struct page_landing *landing,
                                struct ram_load_counts *counts, uint64_t chunk_size,
                                struct rdma_stats *stats, struct gw_error *err)
{
    struct rdma_dest *dest = calloc(1, sizeof(*dest));

    if (dest) {
        *dest = (struct rdma_dest){ .blocks = blocks, .nr_blocks = nr_blocks,
                                    .landing = *landing, .counts = counts,
                                    .chunk_size = chunk_size, .stats = stats };
        dest->state = calloc(nr_blocks ? nr_blocks : 1, sizeof(*dest->state));
    }
    if (!dest || !dest->state) {
        rdma_dest_free(dest);
        gw_error_set(err, -ENOMEM, "out of memory for the RDMA destination's chunks");
        return NULL;
    }
    return dest;
}

/* The landing's address for pages [first, first + count), which must be
 * contiguous: WRITEs land there. Asking for each page also tells the
 * landing that the page may now hold something (a later zap clears it). */
static int landing_range(struct rdma_dest *dest, uint32_t block, uint64_t first,
                         uint64_t count, uint8_t **addr, struct gw_error *err)
{
    const struct ram_block *ram = &dest->blocks[block];
    uint8_t *base = dest->landing.ops->target(dest->landing.opaque, block, first);

    for (uint64_t i = 1; i < count; i++) {
        uint8_t *page = dest->landing.ops->target(dest->landing.opaque, block, first + i);
        if (page != base + i * ram->page_size)
            return gw_error_set(err, -ENOTSUP, "RAM block '%s' does not land contiguously at "
                                "page %" PRIu64 ": RDMA WRITE needs the guest's pages in "
                                "place (precopy)", ram->name, first + i);
    }
    *addr = base;
    return 0;
}

static int check_block(const struct rdma_dest *dest, uint32_t block, struct gw_error *err)
{
    if (block >= dest->nr_blocks)
        return gw_error_set(err, -EPROTO, "the source names RAM block %u; this VM has %u",
                            block, dest->nr_blocks);
    return 0;
}

static int register_range(struct rdma_dest *dest, struct rdma_conn *conn, uint32_t block,
                          uint64_t offset, uint64_t len, struct rdma_mr **mr,
                          struct gw_error *err)
{
    uint64_t page_size = dest->blocks[block].page_size;
    uint8_t *addr = NULL;
    int rc = landing_range(dest, block, offset / page_size, len / page_size, &addr, err);

    if (rc == 0 && !conn)
        rc = gw_error_set(err, -ENOTCONN, "no RDMA connection to register chunks on");
    if (rc == 0)
        rc = rdma_mr_register(conn, addr, len,
                              RDMA_ACCESS_LOCAL_WRITE | RDMA_ACCESS_REMOTE_WRITE, mr, err);
    if (rc == 0 && dest->stats)
        atomic_fetch_add(&dest->stats->registrations, 1);
    return rc;
}

static int register_entry(struct rdma_dest *dest, struct rdma_conn *conn,
                          const struct rdma_reg_entry *entry, uint8_t *result,
                          struct gw_error *err)
{
    uint64_t chunk_size = dest->chunk_size, size, offset;
    struct rdma_stats *stats = dest->stats;
    struct dest_block *state;
    struct rdma_mr **slot;
    int rc = check_block(dest, entry->block, err);

    if (rc < 0)
        return rc;
    state = &dest->state[entry->block];
    size = dest->blocks[entry->block].size;
    if (entry->flags & ~RDMA_REG_WHOLE_BLOCK)
        return gw_error_set(err, -EPROTO, "a REGISTER_REQUEST entry has flags 0x%x; only 0x%x "
                            "is known", entry->flags, RDMA_REG_WHOLE_BLOCK);
    if (entry->flags & RDMA_REG_WHOLE_BLOCK) {
        slot = &state->whole;
        offset = 0;
    } else {
        if (!state->chunks) {
            state->nr_chunks = (size + chunk_size - 1) / chunk_size;
            state->chunks = calloc(state->nr_chunks, sizeof(*state->chunks));
            if (!state->chunks)
                return gw_error_set(err, -ENOMEM, "out of memory for the RDMA chunk table");
        }
        if (entry->chunk >= state->nr_chunks)
            return gw_error_set(err, -EPROTO, "the source asks for chunk %" PRIu64 " of RAM "
                                "block '%s', which has %" PRIu64 " chunks of %" PRIu64 " bytes",
                                entry->chunk, dest->blocks[entry->block].name,
                                state->nr_chunks, chunk_size);
        slot = &state->chunks[entry->chunk];
        offset = entry->chunk * chunk_size;
        size = size - offset < chunk_size ? size - offset : chunk_size;
    }
    if (!*slot) {
        rc = register_range(dest, conn, entry->block, offset, size, slot, err);
        if (rc < 0)
            return rc;
        /* A whole block counts as the chunks it is made of. */
        if (stats)
            atomic_fetch_add(&stats->chunks_registered,
                             (entry->flags & RDMA_REG_WHOLE_BLOCK)
                                 ? (size + chunk_size - 1) / chunk_size : 1);
    }
    rdma_encode_result(result, (uint64_t)(uintptr_t)(*slot)->addr, (*slot)->rkey);
    return 0;
}

static int zero_entry(struct rdma_dest *dest, const struct rdma_zero_entry *entry,
                      struct gw_error *err)
{
    int rc = check_block(dest, entry->block, err);
    uint64_t pages;

    if (rc < 0)
        return rc;
    pages = dest->blocks[entry->block].size / dest->blocks[entry->block].page_size;
    if (entry->first >= pages || entry->count > pages - entry->first)
        return gw_error_set(err, -EPROTO, "the source zeroes pages %" PRIu64 " to %" PRIu64
                            " of RAM block '%s', which has %" PRIu64 " pages", entry->first,
                            entry->first + entry->count, dest->blocks[entry->block].name, pages);
    for (uint64_t i = 0; i < entry->count; i++) {
        rc = dest->landing.ops->zero(dest->landing.opaque, entry->block, entry->first + i, err);
        if (rc < 0)
            return rc;
    }
    dest->counts->zero_pages += entry->count;
    dest->zeroed_this_pass += entry->count;
    return 0;
}

static int finished(struct rdma_dest *dest, const struct rdma_msg *msg, uint8_t *reply,
                    uint32_t *reply_len, struct gw_error *err)
{
    struct rdma_finished done;

    rdma_msg_finished(msg, &done);
    if (done.pages_zeroed != dest->zeroed_this_pass)
        return gw_error_set(err, -EPROTO, "the source zeroed %" PRIu64 " pages in pass %" PRIu64
                            " but %" PRIu64 " were zapped here: ZERO messages were lost",
                            done.pages_zeroed, done.pass, dest->zeroed_this_pass);
    dest->zeroed_this_pass = 0;
    dest->counts->normal_pages += done.pages_written;
    memcpy(reply, &done.pass, 8);
    *reply_len = 8;
    return 0;
}

int rdma_dest_handle(struct rdma_dest *dest, struct rdma_conn *conn, const struct rdma_msg *msg,
                     uint32_t *reply_type, uint8_t *reply, uint32_t *reply_len,
                     struct gw_error *err)
{
    uint32_t count = rdma_msg_entry_count(msg);
    int rc = 0;

    switch (msg->type) {
    case RDMA_MSG_REGISTER_REQUEST:
        memcpy(reply, &count, 4);
        for (uint32_t i = 0; rc == 0 && i < count; i++) {
            struct rdma_reg_entry entry;
            rdma_msg_reg_entry(msg, i, &entry);
            rc = register_entry(dest, conn, &entry, reply + 4 + i * RDMA_ENTRY_SIZE, err);
        }
        *reply_type = RDMA_MSG_REGISTER_RESULT;
        *reply_len = 4 + count * RDMA_ENTRY_SIZE;
        return rc;
    case RDMA_MSG_ZERO:
        for (uint32_t i = 0; rc == 0 && i < count; i++) {
            struct rdma_zero_entry entry;
            rdma_msg_zero_entry(msg, i, &entry);
            rc = zero_entry(dest, &entry, err);
        }
        *reply_type = 0;
        return rc;
    case RDMA_MSG_REGISTER_FINISHED:
        *reply_type = RDMA_MSG_FINISHED_ACK;
        return finished(dest, msg, reply, reply_len, err);
    }
    return gw_error_set(err, -EPROTO, "the destination cannot handle %s",
                        rdma_msg_name(msg->type));
}
