/* One RDMA migration connection as the transport's parts share it: the
 * service thread that polls every completion, the credits that keep a SEND
 * from ever being posted before the peer's RECV, the stream bytes that came
 * by SEND, and the requests and replies of chunk registration
 * (docs/rdma.md). Private to src/rdma. */
#ifndef GODWIT_RDMA_LINK_H
#define GODWIT_RDMA_LINK_H

#include "rdma/rdma_control.h"
#include "rdma/rdma_transport.h"
#include "rdma/rdma_verbs.h"

struct rdma_link;
struct rdma_dest;

struct rdma_link *rdma_link_of(const struct channel *channel);
struct rdma_conn *rdma_link_conn(struct rdma_link *link);
const struct rdma_options *rdma_link_options(struct rdma_link *link);

/* Sends a control message from a thread other than the service thread,
 * waiting for a credit and a send buffer. */
int rdma_link_send(struct rdma_link *link, uint32_t type, const void *payload, uint32_t len,
                   struct gw_error *err);
/* Source: sends a request and waits for its reply (REGISTER_RESULT for
 * REGISTER_REQUEST, FINISHED_ACK for REGISTER_FINISHED); an ERROR reply
 * becomes the error. reply gets at most RDMA_MSG_PAYLOAD_MAX bytes. */
int rdma_link_request(struct rdma_link *link, uint32_t type, const void *payload, uint32_t len,
                      uint32_t reply_type, uint8_t *reply, uint32_t *reply_len,
                      struct gw_error *err);
/* Posts a WRITE; *seq is its place in the send queue. A post that would
 * pass the send queue's depth first waits for the oldest signalled one. */
int rdma_link_post_write(struct rdma_link *link, struct rdma_write *write, uint64_t *seq,
                         struct gw_error *err);
/* Waits until every send-queue request up to seq has completed. */
int rdma_link_wait_retired(struct rdma_link *link, uint64_t seq, struct gw_error *err);
/* Registers memory on the connection and counts it. */
int rdma_link_register(struct rdma_link *link, void *addr, size_t len, unsigned access,
                       struct rdma_mr **mr, struct gw_error *err);

/* Destination (rdma_dest.c), called by the service thread with the link's
 * lock held: does what a REGISTER_REQUEST, ZERO or REGISTER_FINISHED asks
 * and fills the reply (type and payload; type 0: none). */
struct rdma_dest *rdma_dest_new(const struct ram_block *blocks, unsigned nr_blocks,
                                const struct page_landing *landing,
                                struct ram_load_counts *counts, uint64_t chunk_size,
                                struct rdma_stats *stats, struct gw_error *err);
/* conn: where chunks are registered (NULL for what needs none). */
int rdma_dest_handle(struct rdma_dest *dest, struct rdma_conn *conn, const struct rdma_msg *msg,
                     uint32_t *reply_type, uint8_t *reply, uint32_t *reply_len,
                     struct gw_error *err);
/* Frees its tables; closing the connection deregisters its regions. */
void rdma_dest_free(struct rdma_dest *dest);

#endif
