/* The RDMA transport's private data and control messages; see
 * rdma_control.h and docs/rdma.md. Little-endian on the wire, as the
 * stream. */
#include "rdma/rdma_control.h"

#include <errno.h>
#include <string.h>

static const char *const msg_names[] = {
    [RDMA_MSG_DATA] = "DATA",
    [RDMA_MSG_EOF] = "EOF",
    [RDMA_MSG_CREDIT] = "CREDIT",
    [RDMA_MSG_REGISTER_REQUEST] = "REGISTER_REQUEST",
    [RDMA_MSG_REGISTER_RESULT] = "REGISTER_RESULT",
    [RDMA_MSG_ZERO] = "ZERO",
    [RDMA_MSG_REGISTER_FINISHED] = "REGISTER_FINISHED",
    [RDMA_MSG_FINISHED_ACK] = "FINISHED_ACK",
    [RDMA_MSG_ERROR] = "ERROR",
};

const char *rdma_msg_name(uint32_t type)
{
    return type >= 1 && type <= RDMA_MSG_TYPE_MAX ? msg_names[type] : "unknown";
}

static void put32(uint8_t *out, uint32_t v)
{
    memcpy(out, &v, 4);
}

static void put64(uint8_t *out, uint64_t v)
{
    memcpy(out, &v, 8);
}

static uint32_t get32(const uint8_t *in)
{
    uint32_t v;

    memcpy(&v, in, 4);
    return v;
}

static uint64_t get64(const uint8_t *in)
{
    uint64_t v;

    memcpy(&v, in, 8);
    return v;
}

void rdma_hello_encode(const struct rdma_hello *hello, struct rdma_private_data *out)
{
    uint8_t *at = out->bytes;

    memset(out, 0, sizeof(*out));
    put32(at, RDMA_PROTO_MAGIC);
    memcpy(at + 4, &hello->version, 2);
    memcpy(at + 6, &hello->reason, 2);
    put32(at + 8, hello->caps);
    put32(at + 12, hello->credits);
    put64(at + 16, hello->chunk_size);
    put32(at + 24, hello->message_size);
    out->len = RDMA_HELLO_SIZE;
}

/* Only the framing is checked here: what the values mean for this side
 * (version, chunk size, caps) is the caller's to judge, with both values
 * in the sentence. */
int rdma_hello_decode(const struct rdma_private_data *in, struct rdma_hello *hello,
                      struct gw_error *err)
{
    if (in->len < RDMA_HELLO_SIZE || in->len > RDMA_PRIVATE_DATA_MAX)
        return gw_error_set(err, -EPROTO, "the peer's RDMA private data has %u bytes, not "
                            "at least %d: it is not a godwit RDMA migration", in->len,
                            RDMA_HELLO_SIZE);
    if (get32(in->bytes) != RDMA_PROTO_MAGIC)
        return gw_error_set(err, -EPROTO, "the peer's RDMA private data does not start with "
                            "godwit's magic: it is not a godwit RDMA migration");
    memcpy(&hello->version, in->bytes + 4, 2);
    memcpy(&hello->reason, in->bytes + 6, 2);
    hello->caps = get32(in->bytes + 8);
    hello->credits = get32(in->bytes + 12);
    hello->chunk_size = get64(in->bytes + 16);
    hello->message_size = get32(in->bytes + 24);
    return 0;
}

void rdma_msg_header_encode(uint8_t *out, uint32_t type, uint32_t length, uint32_t credits)
{
    put32(out, type);
    put32(out + 4, length);
    put32(out + 8, credits);
    put32(out + 12, 0);
}

/* The payload each type must have: exactly, at least (entries), or any. */
static int check_payload(const struct rdma_msg *msg, struct gw_error *err)
{
    const char *name = rdma_msg_name(msg->type);
    uint32_t count;

    switch (msg->type) {
    case RDMA_MSG_DATA:
    case RDMA_MSG_ERROR:
        return msg->length ? 0 : gw_error_set(err, -EPROTO, "an RDMA %s message is empty",
                                              name);
    case RDMA_MSG_EOF:
    case RDMA_MSG_CREDIT:
        return msg->length ? gw_error_set(err, -EPROTO, "an RDMA %s message carries %u "
                                          "bytes; it has none", name, msg->length) : 0;
    case RDMA_MSG_REGISTER_REQUEST:
    case RDMA_MSG_REGISTER_RESULT:
    case RDMA_MSG_ZERO:
        if (msg->length < 4)
            return gw_error_set(err, -EPROTO, "an RDMA %s message of %u bytes has no entry "
                                "count", name, msg->length);
        count = get32(msg->payload);
        if (count == 0 || count > RDMA_ENTRIES_MAX ||
            msg->length != 4 + (uint64_t)count * RDMA_ENTRY_SIZE)
            return gw_error_set(err, -EPROTO, "an RDMA %s message says %u entries in %u "
                                "bytes; 1 to %u entries of %d bytes after the count", name,
                                count, msg->length, (unsigned)RDMA_ENTRIES_MAX,
                                RDMA_ENTRY_SIZE);
        return 0;
    case RDMA_MSG_REGISTER_FINISHED:
    case RDMA_MSG_FINISHED_ACK:
        if (msg->length != (msg->type == RDMA_MSG_FINISHED_ACK ? 8u : RDMA_FINISHED_SIZE))
            return gw_error_set(err, -EPROTO, "an RDMA %s message has %u bytes, not %d", name,
                                msg->length,
                                msg->type == RDMA_MSG_FINISHED_ACK ? 8 : RDMA_FINISHED_SIZE);
        return 0;
    }
    return gw_error_set(err, -EPROTO, "an RDMA control message has type %u; types are 1 to %d",
                        msg->type, RDMA_MSG_TYPE_MAX);
}

int rdma_msg_decode(const uint8_t *buf, size_t len, struct rdma_msg *msg, struct gw_error *err)
{
    if (len < RDMA_MSG_HEADER || len > RDMA_MSG_SIZE)
        return gw_error_set(err, -EPROTO, "an RDMA control message of %zu bytes; they have "
                            "%d to %u", len, RDMA_MSG_HEADER, RDMA_MSG_SIZE);
    msg->type = get32(buf);
    msg->length = get32(buf + 4);
    msg->credits = get32(buf + 8);
    msg->payload = buf + RDMA_MSG_HEADER;
    if (get32(buf + 12) != 0)
        return gw_error_set(err, -EPROTO, "an RDMA control message's reserved field is %u, "
                            "not 0", get32(buf + 12));
    if (msg->length != len - RDMA_MSG_HEADER)
        return gw_error_set(err, -EPROTO, "an RDMA control message says %u bytes of payload, "
                            "but %zu came", msg->length, len - RDMA_MSG_HEADER);
    if (msg->credits > RDMA_RECV_QUEUE_DEPTH)
        return gw_error_set(err, -EPROTO, "an RDMA control message gives back %u credits; "
                            "a side has at most %d", msg->credits, RDMA_RECV_QUEUE_DEPTH);
    return check_payload(msg, err);
}

uint32_t rdma_msg_entry_count(const struct rdma_msg *msg)
{
    return get32(msg->payload);
}

static const uint8_t *entry_at(const struct rdma_msg *msg, uint32_t i)
{
    return msg->payload + 4 + (size_t)i * RDMA_ENTRY_SIZE;
}

void rdma_msg_reg_entry(const struct rdma_msg *msg, uint32_t i, struct rdma_reg_entry *entry)
{
    const uint8_t *at = entry_at(msg, i);

    entry->block = get32(at);
    entry->flags = get32(at + 4);
    entry->chunk = get64(at + 8);
}

void rdma_msg_reg_result(const struct rdma_msg *msg, uint32_t i, struct rdma_reg_result *result)
{
    const uint8_t *at = entry_at(msg, i);

    result->addr = get64(at);
    result->rkey = get32(at + 8);
    result->reserved = get32(at + 12);
}

void rdma_msg_zero_entry(const struct rdma_msg *msg, uint32_t i, struct rdma_zero_entry *entry)
{
    const uint8_t *at = entry_at(msg, i);

    entry->block = get32(at);
    entry->count = get32(at + 4);
    entry->first = get64(at + 8);
}

void rdma_msg_finished(const struct rdma_msg *msg, struct rdma_finished *finished)
{
    finished->pass = get64(msg->payload);
    if (msg->type == RDMA_MSG_FINISHED_ACK) {
        finished->pages_written = finished->pages_zeroed = 0;
        return;
    }
    finished->pages_written = get64(msg->payload + 8);
    finished->pages_zeroed = get64(msg->payload + 16);
}

void rdma_encode_entry(uint8_t *out, uint32_t a, uint32_t b, uint64_t c)
{
    put32(out, a);
    put32(out + 4, b);
    put64(out + 8, c);
}

void rdma_encode_result(uint8_t *out, uint64_t addr, uint32_t rkey)
{
    put64(out, addr);
    put32(out + 8, rkey);
    put32(out + 12, 0);
}

void rdma_encode_finished(uint8_t *out, const struct rdma_finished *finished)
{
    put64(out, finished->pass);
    put64(out + 8, finished->pages_written);
    put64(out + 16, finished->pages_zeroed);
}
