/* Encoding and decoding of the software provider's hello and message
 * headers. The decoder is the peer's only way in: it refuses unknown
 * kinds, flags and nonzero reserved bytes, and lengths over the limits,
 * naming the field; it never reads past the fixed size it is given. */
#include "rdma/rdma_soft_wire.h"

#include <errno.h>
#include <string.h>

static const uint8_t hello_magic[8] = { 'G', 'W', 'S', 'O', 'F', 'T', 'R', 'D' };

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Hello: magic[8] version u32 kind u8 len u8 reserved u16 data[56]. */
void soft_hello_encode(const struct soft_hello *hello, uint8_t out[SOFT_HELLO_SIZE])
{
    memset(out, 0, SOFT_HELLO_SIZE);
    memcpy(out, hello_magic, sizeof(hello_magic));
    put_le32(out + 8, SOFT_WIRE_VERSION);
    out[12] = (uint8_t)hello->kind;
    out[13] = hello->data.len;
    memcpy(out + 16, hello->data.bytes, hello->data.len);
}

int soft_hello_decode(const uint8_t in[SOFT_HELLO_SIZE], bool at_server,
                      struct soft_hello *hello, struct gw_error *err)
{
    uint32_t version = get_le32(in + 8);
    uint8_t kind = in[12], len = in[13];

    if (memcmp(in, hello_magic, sizeof(hello_magic)))
        return gw_error_set(err, -EPROTO, "the peer is not godwit's software RDMA provider "
                            "(bad hello magic)");
    if (version != SOFT_WIRE_VERSION)
        return gw_error_set(err, -EPROTO, "software RDMA hello version %u: this godwit speaks "
                            "version %u", version, SOFT_WIRE_VERSION);
    if (at_server ? kind != SOFT_HELLO_CONNECT
                  : kind != SOFT_HELLO_ACCEPT && kind != SOFT_HELLO_REJECT)
        return gw_error_set(err, -EPROTO, "software RDMA hello kind %u: a %s expects %s", kind,
                            at_server ? "server" : "client",
                            at_server ? "1 (connect)" : "2 (accept) or 3 (reject)");
    if (len > RDMA_PRIVATE_DATA_MAX)
        return gw_error_set(err, -EPROTO, "software RDMA hello carries %u bytes of private "
                            "data: at most %d are allowed", len, RDMA_PRIVATE_DATA_MAX);
    if (in[14] || in[15])
        return gw_error_set(err, -EPROTO, "software RDMA hello: reserved bytes 14-15 not zero");
    for (int i = 16 + len; i < SOFT_HELLO_SIZE; i++)
        if (in[i])
            return gw_error_set(err, -EPROTO, "software RDMA hello: byte %d past the %u bytes "
                                "of private data is not zero", i, len);
    hello->kind = (enum soft_hello_kind)kind;
    hello->data.len = len;
    memcpy(hello->data.bytes, in + 16, len);
    return 0;
}

/* Header: op u8 flags u8 reserved u16 key u32 seq u64 addr u64 len u32 status u32. */
void soft_header_encode(const struct soft_header *header, uint8_t out[SOFT_HEADER_SIZE])
{
    memset(out, 0, SOFT_HEADER_SIZE);
    out[0] = (uint8_t)header->op;
    out[1] = header->flags;
    put_le32(out + 4, header->key);
    put_le64(out + 8, header->seq);
    put_le64(out + 16, header->addr);
    put_le32(out + 24, header->len);
    put_le32(out + 28, header->status);
}

/* Which fields each op may carry (the rest must be zero). */
static int check_fields(const struct soft_header *h, struct gw_error *err)
{
    bool request = h->op == SOFT_OP_WRITE || h->op == SOFT_OP_SEND;
    bool with_key = h->op == SOFT_OP_WRITE;

    if (h->flags & ~SOFT_FLAG_SIGNALED || (h->flags && !request))
        return gw_error_set(err, -EPROTO, "software RDMA op %u with flags 0x%x", h->op, h->flags);
    if ((!with_key && (h->key || h->addr)) || (!request && h->len))
        return gw_error_set(err, -EPROTO, "software RDMA op %u carries a key, an address or a "
                            "length it has no use for", h->op);
    if (h->len > RDMA_MESSAGE_MAX)
        return gw_error_set(err, -EPROTO, "software RDMA op %u of %u bytes: at most %u are "
                            "allowed", h->op, h->len, RDMA_MESSAGE_MAX);
    if (h->op == SOFT_OP_BYE ? h->seq != 0 : h->seq == 0)
        return gw_error_set(err, -EPROTO, "software RDMA op %u with sequence number %llu",
                            h->op, (unsigned long long)h->seq);
    if (h->op == SOFT_OP_NAK ? h->status == RDMA_WC_SUCCESS || h->status > RDMA_WC_OTHER
                             : h->status != 0)
        return gw_error_set(err, -EPROTO, "software RDMA op %u with status %u", h->op, h->status);
    return 0;
}

int soft_header_decode(const uint8_t in[SOFT_HEADER_SIZE], struct soft_header *header,
                       struct gw_error *err)
{
    uint8_t op = in[0];

    if (op < SOFT_OP_WRITE || op > SOFT_OP_BYE)
        return gw_error_set(err, -EPROTO, "software RDMA message type %u: allowed are 1 to 5",
                            op);
    if (in[2] || in[3])
        return gw_error_set(err, -EPROTO, "software RDMA message: reserved bytes 2-3 not zero");
    *header = (struct soft_header){
        .op = (enum soft_op)op, .flags = in[1], .key = get_le32(in + 4),
        .seq = get_le64(in + 8), .addr = get_le64(in + 16), .len = get_le32(in + 24),
        .status = get_le32(in + 28),
    };
    return check_fields(header, err);
}
