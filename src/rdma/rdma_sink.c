/* The source's page sink over an rdma: channel (docs/rdma.md). Pages of a
 * pass come in ascending order per block; the sink gathers the dirty pages
 * of one chunk of x-rdma-chunk-size, then either tells the destination to
 * zap them (every one zero: the chunk is neither registered nor written) or
 * WRITEs each run of them into the destination's chunk, registered on
 * demand (or every block at once with rdma-pin-all). One WRITE in a batch
 * is signalled; end_pass waits for the last and holds the REGISTER_FINISHED
 * barrier, so no page of a pass lands after a page of the next. */
#include "rdma/rdma_link.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* WRITEs per signalled completion. */
#define WRITE_BATCH 64
/* Dirty runs of one chunk gathered before they are written. */
#define RUNS_MAX 4096

struct remote_chunk {
    uint64_t addr;
    uint32_t rkey;
    bool valid;
};

struct sink_block {
    struct remote_chunk *remote;    /* per chunk, or one for the whole block (pin-all) */
    struct rdma_mr **local;         /* per chunk, or one */
    uint64_t nr_chunks;
};

struct run {
    uint64_t first, count;
};

/* A test knob (docs/rdma.md): GODWIT_RDMA_TEST_BAD_WRITE=rkey or range
 * spoils the first WRITE, so that the tests see the destination refuse it. */
enum bad_write { BAD_NONE, BAD_RKEY, BAD_RANGE };

struct rdma_sink {
    struct rdma_link *link;
    const struct ram_block *blocks;
    unsigned nr_blocks;
    struct rdma_sink_counts counts;
    struct rdma_stats *stats;
    uint64_t chunk_size;
    bool pin_all, vm_stopped, pinned;
    enum bad_write bad_write;
    struct sink_block *state;
    /* the chunk being gathered */
    bool have_chunk, chunk_has_data;
    uint32_t block;
    uint64_t chunk;
    struct run runs[RUNS_MAX];
    unsigned nr_runs;
    uint64_t chunk_pages;
    /* this pass */
    uint64_t pass, pages_written, pages_zeroed, last_seq, last_signalled;
    unsigned since_signal;
    uint8_t zero_msg[RDMA_MSG_PAYLOAD_MAX];
    uint32_t nr_zero;
};

static uint64_t chunk_of(const struct rdma_sink *sink, uint32_t block, uint64_t page)
{
    return page * sink->blocks[block].page_size / sink->chunk_size;
}

static unsigned slots(const struct rdma_sink *sink, uint32_t block)
{
    return sink->pin_all ? 1 : (unsigned)sink->state[block].nr_chunks;
}

void rdma_sink_free(struct rdma_sink *sink)
{
    if (!sink)
        return;
    for (unsigned b = 0; sink->state && b < sink->nr_blocks; b++) {
        for (unsigned i = 0; sink->state[b].local && i < slots(sink, b); i++)
            if (sink->state[b].local[i])
                rdma_mr_deregister(rdma_link_conn(sink->link), sink->state[b].local[i], NULL);
        free(sink->state[b].local);
        free(sink->state[b].remote);
    }
    free(sink->state);
    free(sink);
}

static enum bad_write bad_write_knob(void)
{
    const char *knob = getenv("GODWIT_RDMA_TEST_BAD_WRITE");

    if (!knob)
        return BAD_NONE;
    return !strcmp(knob, "rkey") ? BAD_RKEY : !strcmp(knob, "range") ? BAD_RANGE : BAD_NONE;
}

struct rdma_sink *rdma_sink_new(struct channel *channel, const struct ram_block *blocks,
                                unsigned nr_blocks, const struct rdma_sink_counts *counts,
                                struct gw_error *err)
{
    struct rdma_sink *sink = calloc(1, sizeof(*sink));

    if (!sink || !(sink->state = calloc(nr_blocks, sizeof(*sink->state)))) {
        free(sink);
        gw_error_set(err, -ENOMEM, "out of memory for the RDMA page sink");
        return NULL;
    }
    sink->link = rdma_link_of(channel);
    sink->blocks = blocks;
    sink->nr_blocks = nr_blocks;
    sink->counts = *counts;
    sink->stats = rdma_link_options(sink->link)->stats;
    sink->chunk_size = rdma_link_options(sink->link)->chunk_size;
    sink->pin_all = rdma_link_options(sink->link)->pin_all;
    sink->bad_write = bad_write_knob();
    for (unsigned b = 0; b < nr_blocks; b++) {
        struct sink_block *state = &sink->state[b];
        state->nr_chunks = (blocks[b].size + sink->chunk_size - 1) / sink->chunk_size;
        state->remote = calloc(slots(sink, b), sizeof(*state->remote));
        state->local = calloc(slots(sink, b), sizeof(*state->local));
        if (!state->remote || !state->local) {
            rdma_sink_free(sink);
            gw_error_set(err, -ENOMEM, "out of memory for the RDMA chunk tables");
            return NULL;
        }
    }
    return sink;
}

/* ---- registration ---- */

/* rdma-pin-all: every block, here and there, before the first page. */
static int pin_all(struct rdma_sink *sink, struct gw_error *err)
{
    uint8_t request[4 + RDMA_ENTRY_SIZE], reply[RDMA_MSG_PAYLOAD_MAX];
    uint32_t one = 1, len;
    struct rdma_msg msg = { .payload = reply };
    int rc;

    for (uint32_t b = 0; b < sink->nr_blocks; b++) {
        struct rdma_reg_result result;
        rc = rdma_link_register(sink->link, sink->blocks[b].host, sink->blocks[b].size,
                                RDMA_ACCESS_LOCAL_WRITE, &sink->state[b].local[0], err);
        if (rc < 0)
            return rc;
        memcpy(request, &one, 4);
        rdma_encode_entry(request + 4, b, RDMA_REG_WHOLE_BLOCK, 0);
        rc = rdma_link_request(sink->link, RDMA_MSG_REGISTER_REQUEST, request, sizeof(request),
                               RDMA_MSG_REGISTER_RESULT, reply, &len, err);
        if (rc < 0)
            return rc;
        msg.length = len;
        if (len != sizeof(request) || rdma_msg_entry_count(&msg) != 1)
            return gw_error_set(err, -EPROTO, "the destination's REGISTER_RESULT for RAM block "
                                "%u has %u bytes, not %zu", b, len, sizeof(request));
        rdma_msg_reg_result(&msg, 0, &result);
        sink->state[b].remote[0] = (struct remote_chunk){ result.addr, result.rkey, true };
    }
    sink->pinned = true;
    return 0;
}

/* The chunk being written, registered on both sides on first use. */
static int ensure_chunk(struct rdma_sink *sink, struct gw_error *err)
{
    struct sink_block *state = &sink->state[sink->block];
    const struct ram_block *ram = &sink->blocks[sink->block];
    uint64_t offset = sink->chunk * sink->chunk_size;
    uint64_t len = ram->size - offset < sink->chunk_size ? ram->size - offset : sink->chunk_size;
    uint8_t request[4 + RDMA_ENTRY_SIZE], reply[RDMA_MSG_PAYLOAD_MAX];
    struct rdma_msg msg = { .payload = reply };
    struct rdma_reg_result result;
    uint32_t one = 1, reply_len;
    int rc;

    if (sink->pin_all)
        return 0;
    if (!state->local[sink->chunk]) {
        rc = rdma_link_register(sink->link, ram->host + offset, len, RDMA_ACCESS_LOCAL_WRITE,
                                &state->local[sink->chunk], err);
        if (rc < 0)
            return rc;
    }
    if (state->remote[sink->chunk].valid)
        return 0;
    memcpy(request, &one, 4);
    rdma_encode_entry(request + 4, sink->block, 0, sink->chunk);
    rc = rdma_link_request(sink->link, RDMA_MSG_REGISTER_REQUEST, request, sizeof(request),
                           RDMA_MSG_REGISTER_RESULT, reply, &reply_len, err);
    if (rc < 0)
        return rc;
    msg.length = reply_len;
    if (reply_len != sizeof(request) || rdma_msg_entry_count(&msg) != 1)
        return gw_error_set(err, -EPROTO, "the destination's REGISTER_RESULT has %u bytes, "
                            "not %zu", reply_len, sizeof(request));
    rdma_msg_reg_result(&msg, 0, &result);
    state->remote[sink->chunk] = (struct remote_chunk){ result.addr, result.rkey, true };
    return 0;
}

/* ---- writing ---- */

static int write_run(struct rdma_sink *sink, const struct run *run, bool last,
                     struct gw_error *err)
{
    const struct ram_block *ram = &sink->blocks[sink->block];
    struct sink_block *state = &sink->state[sink->block];
    unsigned slot = sink->pin_all ? 0 : (unsigned)sink->chunk;
    uint64_t base_page = sink->pin_all ? 0 : sink->chunk * sink->chunk_size / ram->page_size;
    struct rdma_write write = {
        .local = ram->host + run->first * ram->page_size,
        .len = (uint32_t)(run->count * ram->page_size),
        .lkey = state->local[slot]->lkey,
        .remote_addr = state->remote[slot].addr + (run->first - base_page) * ram->page_size,
        .rkey = state->remote[slot].rkey,
        .signaled = last || ++sink->since_signal >= WRITE_BATCH,
    };

    if (sink->bad_write == BAD_RKEY)
        write.rkey ^= 0x5a5a5a5au;
    else if (sink->bad_write == BAD_RANGE)
        write.remote_addr += sink->chunk_size;
    sink->bad_write = BAD_NONE;
    if (write.signaled)
        sink->since_signal = 0;
    int rc = rdma_link_post_write(sink->link, &write, &sink->last_seq, err);
    if (rc == 0 && write.signaled)
        sink->last_signalled = sink->last_seq;
    if (rc == 0 && sink->counts.sent)
        sink->counts.sent(sink->counts.opaque, write.len, sink->vm_stopped);
    if (rc == 0 && !sink->vm_stopped && sink->counts.pace)
        sink->counts.pace(sink->counts.opaque, write.len);
    return rc;
}

static int flush_zero_msg(struct rdma_sink *sink, struct gw_error *err)
{
    int rc;

    if (!sink->nr_zero)
        return 0;
    memcpy(sink->zero_msg, &sink->nr_zero, 4);
    rc = rdma_link_send(sink->link, RDMA_MSG_ZERO, sink->zero_msg,
                        4 + sink->nr_zero * RDMA_ENTRY_SIZE, err);
    sink->nr_zero = 0;
    return rc;
}

static int zero_chunk(struct rdma_sink *sink, struct gw_error *err)
{
    for (unsigned i = 0; i < sink->nr_runs; i++) {
        if (sink->nr_zero == RDMA_ENTRIES_MAX) {
            int rc = flush_zero_msg(sink, err);
            if (rc < 0)
                return rc;
        }
        rdma_encode_entry(sink->zero_msg + 4 + sink->nr_zero * RDMA_ENTRY_SIZE, sink->block,
                          (uint32_t)sink->runs[i].count, sink->runs[i].first);
        sink->nr_zero++;
    }
    sink->pages_zeroed += sink->chunk_pages;
    if (sink->stats)
        atomic_fetch_add(&sink->stats->zero_chunks_skipped, 1);
    if (sink->counts.pages)
        sink->counts.pages(sink->counts.opaque, 0, sink->chunk_pages);
    return 0;
}

/* Writes (or zaps) the chunk gathered so far; the last one of a pass has
 * its last WRITE signalled. */
static int flush_chunk(struct rdma_sink *sink, bool last, struct gw_error *err)
{
    int rc = 0;

    if (!sink->have_chunk)
        return 0;
    if (!sink->chunk_has_data) {
        rc = zero_chunk(sink, err);
    } else {
        rc = ensure_chunk(sink, err);
        for (unsigned i = 0; rc == 0 && i < sink->nr_runs; i++)
            rc = write_run(sink, &sink->runs[i], last && i + 1 == sink->nr_runs, err);
        if (rc == 0) {
            sink->pages_written += sink->chunk_pages;
            if (sink->counts.pages)
                sink->counts.pages(sink->counts.opaque, sink->chunk_pages, 0);
        }
    }
    sink->have_chunk = false;
    sink->nr_runs = 0;
    sink->chunk_pages = 0;
    return rc;
}

static int add_page(struct rdma_sink *sink, uint32_t block, uint64_t page, const uint8_t *data,
                    struct gw_error *err)
{
    uint64_t chunk = chunk_of(sink, block, page);
    struct run *last = sink->nr_runs ? &sink->runs[sink->nr_runs - 1] : NULL;
    int rc;

    if (sink->have_chunk && (block != sink->block || chunk != sink->chunk ||
                             (sink->nr_runs == RUNS_MAX && last->first + last->count != page))) {
        /* A chunk with more runs than fit is written in parts. */
        rc = flush_chunk(sink, false, err);
        if (rc < 0)
            return rc;
        last = NULL;
    }
    if (!sink->have_chunk) {
        sink->have_chunk = true;
        sink->chunk_has_data = false;
        sink->block = block;
        sink->chunk = chunk;
    }
    if (data && !sink->chunk_has_data && !ram_page_is_zero(data, sink->blocks[block].page_size))
        sink->chunk_has_data = true;
    if (last && last->first + last->count == page)
        last->count++;
    else
        sink->runs[sink->nr_runs++] = (struct run){ page, 1 };
    sink->chunk_pages++;
    return 0;
}

/* ---- the page sink's ops ---- */

static int sink_begin_pass(void *opaque, uint64_t pass, bool vm_stopped, struct gw_error *err)
{
    struct rdma_sink *sink = opaque;

    sink->pass = pass;
    sink->vm_stopped = vm_stopped;
    sink->pages_written = sink->pages_zeroed = 0;
    return sink->pin_all && !sink->pinned ? pin_all(sink, err) : 0;
}

static int sink_page(void *opaque, uint32_t block, uint64_t page, const uint8_t *data,
                     struct gw_error *err)
{
    return add_page(opaque, block, page, data, err);
}

static int sink_zero_page(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    return add_page(opaque, block, page, NULL, err);
}

static int sink_end_pass(void *opaque, uint64_t pass, struct gw_error *err)
{
    struct rdma_sink *sink = opaque;
    struct rdma_finished done = { pass, 0, 0 };
    uint8_t body[RDMA_FINISHED_SIZE], reply[RDMA_MSG_PAYLOAD_MAX];
    uint32_t reply_len;
    uint64_t acked;
    int rc = flush_chunk(sink, true, err);

    if (rc == 0)
        rc = flush_zero_msg(sink, err);
    /* A signalled completion says every WRITE before it is there. Where the
     * pass ended on a zero chunk, the last WRITE went unsignalled: the
     * REGISTER_FINISHED SEND after it retires it, and its RECV at the
     * destination comes after the WRITEs' bytes. */
    if (rc == 0 && sink->last_seq && sink->last_signalled == sink->last_seq)
        rc = rdma_link_wait_retired(sink->link, sink->last_seq, err);
    if (rc < 0)
        return rc;
    done.pages_written = sink->pages_written;
    done.pages_zeroed = sink->pages_zeroed;
    rdma_encode_finished(body, &done);
    rc = rdma_link_request(sink->link, RDMA_MSG_REGISTER_FINISHED, body, sizeof(body),
                           RDMA_MSG_FINISHED_ACK, reply, &reply_len, err);
    if (rc < 0)
        return rc;
    memcpy(&acked, reply, 8);
    if (acked != pass)
        return gw_error_set(err, -EPROTO, "the destination acknowledged pass %" PRIu64
                            " at the end of pass %" PRIu64, acked, pass);
    return 0;
}

/* Nothing stays in flight: the WRITEs posted are waited for, or the broken
 * connection has flushed them. */
static void sink_abort_pass(void *opaque)
{
    struct rdma_sink *sink = opaque;

    sink->have_chunk = false;
    sink->nr_runs = 0;
    sink->chunk_pages = 0;
    sink->nr_zero = 0;
    if (sink->last_seq)
        rdma_link_wait_retired(sink->link, sink->last_seq, NULL);
}

static const struct page_sink_ops rdma_sink_ops = {
    .begin_pass = sink_begin_pass,
    .page = sink_page,
    .zero_page = sink_zero_page,
    .end_pass = sink_end_pass,
    .abort_pass = sink_abort_pass,
};

struct page_sink rdma_sink_page_sink(struct rdma_sink *sink)
{
    return (struct page_sink){ .ops = &rdma_sink_ops, .opaque = sink };
}
