/* The software provider's wire format over TCP (docs/rdma-verbs.md, "The
 * software provider"): a fixed hello each way at connect time, then
 * 32-byte message headers, each followed by its payload (WRITE, SEND).
 * Little-endian.
 * Decoding checks every field a peer controls before anyone acts on it. */
#ifndef GODWIT_RDMA_SOFT_WIRE_H
#define GODWIT_RDMA_SOFT_WIRE_H

#include "rdma/rdma_verbs.h"

#define SOFT_HELLO_SIZE 72
#define SOFT_HEADER_SIZE 32
#define SOFT_WIRE_VERSION 1

enum soft_hello_kind {
    SOFT_HELLO_CONNECT = 1,     /* client -> server: the offer */
    SOFT_HELLO_ACCEPT = 2,      /* server -> client */
    SOFT_HELLO_REJECT = 3,      /* server -> client, then the server closes */
};

struct soft_hello {
    enum soft_hello_kind kind;
    struct rdma_private_data data;
};

enum soft_op {
    SOFT_OP_WRITE = 1,          /* requester: key, addr, len, payload */
    SOFT_OP_SEND = 2,           /* requester: len, payload */
    SOFT_OP_ACK = 3,            /* responder: request seq (signalled) is done */
    SOFT_OP_NAK = 4,            /* responder: request seq failed with status */
    SOFT_OP_BYE = 5,            /* either: disconnecting, nothing more follows */
};

#define SOFT_FLAG_SIGNALED 1u

struct soft_header {
    enum soft_op op;
    uint8_t flags;
    uint32_t key;
    uint64_t seq;
    uint64_t addr;
    uint32_t len;
    uint32_t status;            /* NAK: an enum rdma_wc_status */
};

void soft_hello_encode(const struct soft_hello *hello, uint8_t out[SOFT_HELLO_SIZE]);
/* A server accepts only CONNECT, a client only ACCEPT or REJECT. */
int soft_hello_decode(const uint8_t in[SOFT_HELLO_SIZE], bool at_server,
                      struct soft_hello *hello, struct gw_error *err);

void soft_header_encode(const struct soft_header *header, uint8_t out[SOFT_HEADER_SIZE]);
int soft_header_decode(const uint8_t in[SOFT_HEADER_SIZE], struct soft_header *header,
                       struct gw_error *err);

#endif
