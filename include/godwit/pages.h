/* The two seams of guest RAM in a migration: where pages leave the source
 * (a page sink) and where they land on the destination (a page landing).
 *
 * The engine's RAM walker finds the pages to send (dirty bits, zero pages
 * known without reading them) and hands each to a page sink; how the bytes
 * cross is the sink's business. The engine's page loader checks every
 * page's block and index and CRC, and asks a landing where the bytes go and
 * how they become the guest's. Implementations today: the stream (main
 * channel and multifd channels, src/multifd/multifd_send.c) and the direct
 * landing into guest RAM (src/ram/ram_landing.c). A second implementation
 * (RDMA WRITE into registered chunks, postcopy's requested pages placed
 * with UFFDIO_COPY) provides the same operations with the same promises,
 * and nothing else in the engine changes. */
#ifndef GODWIT_PAGES_H
#define GODWIT_PAGES_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>

/* Source. Calls come from the migration thread only, in this order per
 * pass: begin_pass, any number of page/zero_page, then end_pass, or
 * abort_pass after an error or a cancel. Pages of one pass come in
 * ascending order per block.
 *
 * A sink must:
 * - send a page's bytes as they are in guest memory when it sends them,
 *   never earlier: `data` points into guest RAM and stays mapped for the
 *   whole migration, but the guest may still write it. A write after the
 *   dirty bit was cleared dirties the page again, so a later pass carries
 *   it; the destination must never take a torn page for a whole one (the
 *   stream sends each page's CRC, and the loader insists that a torn page
 *   come again before END).
 * - keep invariant 3 (DESIGN.md): when end_pass returns, no page of this
 *   pass may land on the destination after a page of the next pass.
 * - count what it sends in the migration's statistics (transferred,
 *   normal-pages, zero-pages), and keep to max-bandwidth while the guest
 *   runs (never while it is stopped: that is downtime).
 * - return errors as a negative errno with a sentence; after an error,
 *   abort_pass must still return only once nothing it was given is in
 *   flight. */
struct page_sink_ops {
    int (*begin_pass)(void *opaque, uint64_t pass, bool vm_stopped, struct gw_error *err);
    int (*page)(void *opaque, uint32_t block, uint64_t page, const uint8_t *data,
                struct gw_error *err);
    /* The walker knows the page is zero without sending its bytes. */
    int (*zero_page)(void *opaque, uint32_t block, uint64_t page, struct gw_error *err);
    int (*end_pass)(void *opaque, uint64_t pass, struct gw_error *err);
    void (*abort_pass)(void *opaque);
};

struct page_sink {
    const struct page_sink_ops *ops;
    void *opaque;
};

/* Destination. The loader has checked block and page against the block
 * list before any call; calls may come from several receiving threads at
 * once, never for the same page at once (a page is in one record per pass,
 * and receivers meet at every pass boundary).
 *
 * A landing must:
 * - give in target() the address the page's bytes are read into. The
 *   direct landing gives the page in guest RAM; one whose guest may run
 *   during the migration (postcopy) gives a staging buffer, since the
 *   guest must never see half a page.
 * - make the bytes at target the guest's page in commit() (NULL when
 *   target is the guest's page already), atomically where the guest runs.
 *   commit is called only for a page whose CRC matched; a page whose bytes
 *   tore on the way is not committed and must come again.
 * - make a page zero in zero() at the least cost it can (never touching a
 *   page known to be zero already). */
struct page_landing_ops {
    uint8_t *(*target)(void *opaque, uint32_t block, uint64_t page);
    int (*commit)(void *opaque, uint32_t block, uint64_t page, struct gw_error *err);
    int (*zero)(void *opaque, uint32_t block, uint64_t page, struct gw_error *err);
};

struct page_landing {
    const struct page_landing_ops *ops;
    void *opaque;
};

#endif
