/* The RDMA migration transport as the engine sees it (docs/rdma.md): an
 * rdma: channel whose stream goes over SEND/RECV, a page sink that moves
 * RAM by RDMA WRITE into the destination's registered chunks, and the
 * destination's side of that, which the sink's control messages drive.
 * Private to libgodwit. */
#ifndef GODWIT_RDMA_TRANSPORT_H
#define GODWIT_RDMA_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/channel.h>
#include <godwit/error.h>
#include <godwit/pages.h>

#include "ram/ram_internal.h"

/* x-rdma-chunk-size: QEMU's range and default. */
#define RDMA_CHUNK_MIN (1ULL << 20)
#define RDMA_CHUNK_MAX (1ULL << 30)
#define RDMA_CHUNK_DEFAULT RDMA_CHUNK_MIN

/* query-migrate's rdma section (ours). Written by the side's threads with
 * atomics, read by query-migrate. */
struct rdma_stats {
    _Atomic uint64_t chunk_size;
    _Atomic uint64_t chunks_registered;   /* distinct destination chunks registered */
    _Atomic uint64_t registrations;       /* memory registrations made (pins) */
    _Atomic uint64_t writes_posted;       /* RDMA WRITE work requests */
    _Atomic uint64_t completions_waited;  /* signalled completions waited for */
    _Atomic uint64_t bytes_write, bytes_send;
    _Atomic uint64_t zero_chunks_skipped;
};

/* What an rdma: channel takes from the migration's settings. */
struct rdma_options {
    uint64_t chunk_size;
    bool pin_all;
    unsigned provider;            /* enum rdma_provider */
    struct rdma_stats *stats;
};

/* Checks x-rdma-chunk-size: a power of 2 from 1 MiB to 1 GiB. */
int rdma_chunk_size_check(int64_t value, struct gw_error *err);

/* Source: connects and offers the options in the private data; the
 * destination refuses a different chunk size with both values named. */
int rdma_channel_connect(const struct uri *uri, const struct rdma_options *options,
                         int cancel_fd, struct channel *channel, struct gw_error *err);
/* Destination: listens; channel_accept then takes one source, and
 * channel_listener_close closes. */
int rdma_channel_listen(const struct uri *uri, const struct rdma_options *options,
                        struct channel_listener *listener, struct gw_error *err);
bool rdma_channel_is(const struct channel *channel);

/* Source: the page sink over an rdma: channel. counts: the migration's
 * statistics, counted as the stream's sink counts them. */
struct rdma_sink_counts {
    void (*sent)(void *opaque, uint64_t bytes, bool vm_stopped);
    void (*pages)(void *opaque, uint64_t normal, uint64_t zero);
    /* Waits as max-bandwidth asks, while the guest runs. */
    void (*pace)(void *opaque, uint64_t bytes);
    void *opaque;
};
struct rdma_sink;
struct rdma_sink *rdma_sink_new(struct channel *channel, const struct ram_block *blocks,
                                unsigned nr_blocks, const struct rdma_sink_counts *counts,
                                struct gw_error *err);
struct page_sink rdma_sink_page_sink(struct rdma_sink *sink);
void rdma_sink_free(struct rdma_sink *sink);

/* Destination: where the source's chunks are (the guest's blocks through
 * the landing) and where the pages it says it wrote or zeroed are counted
 * (read by the record loop at END, after the data that follows them). */
int rdma_channel_attach_ram(struct channel *channel, const struct ram_block *blocks,
                            unsigned nr_blocks, const struct page_landing *landing,
                            struct ram_load_counts *counts, struct gw_error *err);

#endif
