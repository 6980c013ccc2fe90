/* The cpr channel's two messages (docs/stream.md, "The cpr channel"): the
 * source's description of its RAM blocks, whose descriptors travel beside it,
 * and the destination's answer. The decoders trust nothing: every count,
 * length, name and size is checked before use, and they never touch a
 * descriptor. Both ends are on one host, so fields are in its byte order
 * (little-endian on x86-64). */
#include <godwit/cpr.h>
#include <godwit/stream.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

static const char memory_magic[8] = { 'G', 'W', 'C', 'P', 'R', 'M', 'E', 'M' };
static const char answer_magic[8] = { 'G', 'W', 'C', 'P', 'R', 'A', 'N', 'S' };
#define CPR_VERSION 1

int cpr_blocks_shareable(const struct ram_block *blocks, unsigned nr_blocks,
                         struct gw_error *err)
{
    if (nr_blocks > CPR_BLOCKS_MAX)
        return gw_error_set(err, -EINVAL, "a local update passes at most %d RAM blocks; "
                            "this VM has %u", CPR_BLOCKS_MAX, nr_blocks);
    for (unsigned i = 0; i < nr_blocks; i++)
        if (blocks[i].fd < 0)
            return gw_error_set(err, -EINVAL, "mode cpr-transfer passes guest RAM to the new "
                                "process, but RAM block '%s' is private anonymous memory, "
                                "which no other process can map: start godwit-vm with "
                                "--memfd, or --mem-path on /dev/shm or hugetlbfs",
                                blocks[i].name);
    return 0;
}

static void put_u64(uint8_t *at, uint64_t value)
{
    memcpy(at, &value, sizeof(value));
}

static uint64_t get_u64(const uint8_t *at)
{
    uint64_t value;

    memcpy(&value, at, sizeof(value));
    return value;
}

static uint32_t get_u32(const uint8_t *at)
{
    uint32_t value;

    memcpy(&value, at, sizeof(value));
    return value;
}

size_t cpr_memory_encode(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *out)
{
    uint32_t version = CPR_VERSION, count = nr_blocks, crc;
    size_t len = CPR_HEADER_SIZE;

    memcpy(out, memory_magic, 8);
    memcpy(out + 8, &version, 4);
    memcpy(out + 12, &count, 4);
    for (unsigned i = 0; i < nr_blocks; i++, len += CPR_BLOCK_SIZE) {
        uint8_t *at = out + len;
        memset(at, 0, RAM_BLOCK_NAME_MAX);
        strncpy((char *)at, blocks[i].name, RAM_BLOCK_NAME_MAX - 1);
        put_u64(at + 32, blocks[i].size);
        put_u64(at + 40, blocks[i].page_size);
        put_u64(at + 48, blocks[i].gpa);
        put_u64(at + 56, blocks[i].fd_offset);
    }
    crc = stream_crc32c(0, out, len);
    memcpy(out + len, &crc, 4);
    return len + 4;
}

static int decode_block(const uint8_t *at, unsigned index, struct cpr_block *block,
                        struct gw_error *err)
{
    if (!memchr(at, 0, RAM_BLOCK_NAME_MAX) || !at[0])
        return gw_error_set(err, -EINVAL, "cpr channel: block %u has no name, or one without "
                            "its terminating NUL in %d bytes", index, RAM_BLOCK_NAME_MAX);
    memcpy(block->name, at, RAM_BLOCK_NAME_MAX);
    block->size = get_u64(at + 32);
    block->page_size = get_u64(at + 40);
    block->gpa = get_u64(at + 48);
    block->fd_offset = get_u64(at + 56);
    if (block->page_size < 4096 || block->page_size > (1ULL << 30) ||
        (block->page_size & (block->page_size - 1)))
        return gw_error_set(err, -EINVAL, "cpr channel: block '%s' has a page size of %" PRIu64
                            " bytes; a power of two from 4 KiB to 1 GiB is allowed",
                            block->name, block->page_size);
    if (!block->size || block->size % block->page_size || block->fd_offset % block->page_size ||
        block->fd_offset > UINT64_MAX - block->size || block->gpa > UINT64_MAX - block->size)
        return gw_error_set(err, -EINVAL, "cpr channel: block '%s' (%" PRIu64 " bytes at file "
                            "offset %" PRIu64 ") is empty, not a whole number of its pages, or "
                            "wraps around", block->name, block->size, block->fd_offset);
    return 0;
}

int cpr_memory_decode(const uint8_t *msg, size_t len, const int *fds, unsigned nfds,
                      struct cpr_memory *out, struct gw_error *err)
{
    uint32_t count, crc;
    int rc;

    memset(out, 0, sizeof(*out));
    if (len < CPR_HEADER_SIZE + 4 || memcmp(msg, memory_magic, 8))
        return gw_error_set(err, -EPROTO, "cpr channel: the %zu bytes received are not a godwit "
                            "memory message (magic GWCPRMEM)", len);
    if (get_u32(msg + 8) != CPR_VERSION)
        return gw_error_set(err, -EPROTO, "cpr channel: version %" PRIu32 " is not known; "
                            "this godwit reads version %d", get_u32(msg + 8), CPR_VERSION);
    count = get_u32(msg + 12);
    if (count == 0 || count > CPR_BLOCKS_MAX)
        return gw_error_set(err, -EPROTO, "cpr channel: %" PRIu32 " blocks; 1 to %d are "
                            "allowed", count, CPR_BLOCKS_MAX);
    if (len != CPR_HEADER_SIZE + (size_t)count * CPR_BLOCK_SIZE + 4)
        return gw_error_set(err, -EPROTO, "cpr channel: %zu bytes for %" PRIu32 " blocks; "
                            "expected %zu", len, count,
                            CPR_HEADER_SIZE + (size_t)count * CPR_BLOCK_SIZE + 4);
    crc = get_u32(msg + len - 4);
    if (crc != stream_crc32c(0, msg, len - 4))
        return gw_error_set(err, -EPROTO, "cpr channel: the memory message's CRC32C does not "
                            "match its bytes");
    if (nfds != count)
        return gw_error_set(err, -EPROTO, "cpr channel: %u descriptors came with %" PRIu32
                            " blocks; one per block is expected", nfds, count);
    for (uint32_t i = 0; i < count; i++) {
        rc = decode_block(msg + CPR_HEADER_SIZE + i * CPR_BLOCK_SIZE, i, &out->blocks[i], err);
        if (rc < 0)
            return rc;
        out->blocks[i].fd = fds[i];
    }
    out->nr_blocks = count;
    return 0;
}

void cpr_memory_close(struct cpr_memory *memory)
{
    for (unsigned i = 0; i < memory->nr_blocks; i++) {
        if (memory->blocks[i].fd >= 0)
            close(memory->blocks[i].fd);
        memory->blocks[i].fd = -1;
    }
}

size_t cpr_answer_encode(int code, const char *message, uint8_t *out)
{
    size_t text = message ? strnlen(message, CPR_ANSWER_TEXT_MAX) : 0;
    int32_t code32 = code;
    uint32_t len32 = (uint32_t)text;

    memcpy(out, answer_magic, 8);
    memcpy(out + 8, &code32, 4);
    memcpy(out + 12, &len32, 4);
    if (text)
        memcpy(out + CPR_ANSWER_HEADER, message, text);
    return CPR_ANSWER_HEADER + text;
}

int cpr_answer_decode(const uint8_t *buf, size_t len, struct gw_error *err)
{
    int32_t code;
    uint32_t text;

    if (len < CPR_ANSWER_HEADER || memcmp(buf, answer_magic, 8))
        return gw_error_set(err, -EPROTO, "cpr channel: the destination's %zu-byte answer is "
                            "not a godwit cpr answer (magic GWCPRANS)", len);
    memcpy(&code, buf + 8, 4);
    text = get_u32(buf + 12);
    if (text > CPR_ANSWER_TEXT_MAX || len != CPR_ANSWER_HEADER + text || code > 0 ||
        code < -4095)
        return gw_error_set(err, -EPROTO, "cpr channel: the destination's answer has code %"
                            PRId32 " and %" PRIu32 " bytes of text in %zu bytes; a code from "
                            "-4095 to 0 and at most %d bytes are allowed", code, text, len,
                            CPR_ANSWER_TEXT_MAX);
    if (code == 0)
        return 0;
    return gw_error_set(err, code, "the destination refused the local update: %.*s",
                        (int)text, (const char *)buf + CPR_ANSWER_HEADER);
}
