/* The RDMA transport's wire formats (docs/rdma.md): the private data of the
 * connect request, its accept and its reject, and the control messages
 * carried by SEND. Decoding checks every field and every length before
 * anything is used; it is what the fuzz target feeds. Private to
 * src/rdma. */
#ifndef GODWIT_RDMA_CONTROL_H
#define GODWIT_RDMA_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>

#include "rdma/rdma_verbs.h"

#define RDMA_PROTO_MAGIC 0x44525747u   /* "GWRD" little-endian */
#define RDMA_PROTO_VERSION 1
#define RDMA_CAP_PIN_ALL 1u
#define RDMA_CAPS_KNOWN RDMA_CAP_PIN_ALL

/* Why a destination refuses a connect request. */
enum rdma_refusal {
    RDMA_REFUSE_NONE,
    RDMA_REFUSE_VERSION,
    RDMA_REFUSE_CHUNK_SIZE,
    RDMA_REFUSE_CAPS,
    RDMA_REFUSE_BUSY,
};

/* magic u32, version u16, reason u16 (a reply's), caps u32, credits u32,
 * chunk size u64, message size u32: 28 bytes. */
struct rdma_hello {
    uint16_t version;
    uint16_t reason;        /* enum rdma_refusal; 0 in an offer or an accept */
    uint32_t caps;
    uint32_t credits;       /* RECVs posted for the peer before the connection */
    uint64_t chunk_size;
    uint32_t message_size;  /* the largest control message it takes */
};
#define RDMA_HELLO_SIZE 28

void rdma_hello_encode(const struct rdma_hello *hello, struct rdma_private_data *out);
int rdma_hello_decode(const struct rdma_private_data *in, struct rdma_hello *hello,
                      struct gw_error *err);

/* Control messages: a 16-byte header (type u32, length u32 of the payload,
 * credits u32 given back, reserved u32 zero), then the payload. */
enum rdma_msg_type {
    RDMA_MSG_DATA = 1,          /* stream bytes */
    RDMA_MSG_EOF,               /* no more stream bytes from this side */
    RDMA_MSG_CREDIT,            /* credits only */
    RDMA_MSG_REGISTER_REQUEST,
    RDMA_MSG_REGISTER_RESULT,
    RDMA_MSG_ZERO,              /* pages to zap */
    RDMA_MSG_REGISTER_FINISHED, /* end of a pass's RAM: the barrier */
    RDMA_MSG_FINISHED_ACK,
    RDMA_MSG_ERROR,             /* the destination could not do what was asked */
    RDMA_MSG_TYPE_MAX = RDMA_MSG_ERROR,
};

#define RDMA_MSG_HEADER 16
/* The largest message either side sends or receives, header included. */
#define RDMA_MSG_SIZE (64u << 10)
#define RDMA_MSG_PAYLOAD_MAX (RDMA_MSG_SIZE - RDMA_MSG_HEADER)

struct rdma_msg {
    uint32_t type, length, credits;
    const uint8_t *payload;
};

/* A REGISTER_REQUEST entry: a chunk of a block, or (RDMA_REG_WHOLE_BLOCK,
 * rdma-pin-all) the whole block. */
#define RDMA_REG_WHOLE_BLOCK 1u
struct rdma_reg_entry {
    uint32_t block, flags;
    uint64_t chunk;
};
/* A REGISTER_RESULT entry: where the chunk (or block) starts in the
 * destination's memory, and its rkey. */
struct rdma_reg_result {
    uint64_t addr;
    uint32_t rkey, reserved;
};
/* A ZERO entry: count pages from first in block. */
struct rdma_zero_entry {
    uint32_t block, count;
    uint64_t first;
};
/* REGISTER_FINISHED: the pass, and the pages it wrote and zeroed. */
struct rdma_finished {
    uint64_t pass, pages_written, pages_zeroed;
};

#define RDMA_ENTRY_SIZE 16
#define RDMA_ENTRIES_MAX ((RDMA_MSG_PAYLOAD_MAX - 4) / RDMA_ENTRY_SIZE)
#define RDMA_FINISHED_SIZE 24

void rdma_msg_header_encode(uint8_t *out, uint32_t type, uint32_t length, uint32_t credits);
/* Checks the header against the bytes received (len) and the payload's
 * size against its type. */
int rdma_msg_decode(const uint8_t *buf, size_t len, struct rdma_msg *msg, struct gw_error *err);
/* Entries of REGISTER_REQUEST, REGISTER_RESULT and ZERO: a count u32,
 * then count entries of 16 bytes; entry i of the message. */
uint32_t rdma_msg_entry_count(const struct rdma_msg *msg);
void rdma_msg_reg_entry(const struct rdma_msg *msg, uint32_t i, struct rdma_reg_entry *entry);
void rdma_msg_reg_result(const struct rdma_msg *msg, uint32_t i, struct rdma_reg_result *result);
void rdma_msg_zero_entry(const struct rdma_msg *msg, uint32_t i, struct rdma_zero_entry *entry);
void rdma_msg_finished(const struct rdma_msg *msg, struct rdma_finished *finished);
/* Encoders for the same, into out (room for RDMA_ENTRY_SIZE per entry). */
void rdma_encode_entry(uint8_t *out, uint32_t a, uint32_t b, uint64_t c);
void rdma_encode_result(uint8_t *out, uint64_t addr, uint32_t rkey);
void rdma_encode_finished(uint8_t *out, const struct rdma_finished *finished);

const char *rdma_msg_name(uint32_t type);

#endif
