/* Record framing of the migration stream. Nothing here knows what a page or a
 * device's state means; it guarantees that a record handed up has a known
 * type, a body within that type's bound (stream.h), and a matching CRC32C. */
#include <godwit/stream.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>
#include <zstd.h>


static const uint8_t zero_padding[8];

uint32_t stream_crc32c(uint32_t crc, const void *data, size_t len)
{
    /* isa-l's crc32_iscsi is CRC32C without the final inversion. */
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        crc = ~crc32_iscsi((unsigned char *)data, chunk, ~crc);
        data = (const uint8_t *)data + chunk;
        len -= (size_t)chunk;
    }
    return crc;
}

const char *stream_record_name(uint32_t type)
{
    switch (type) {
    case REC_RAM_BLOCKS: return "RAM_BLOCKS";
    case REC_PAGES: return "PAGES";
    case REC_ZERO_PAGES: return "ZERO_PAGES";
    case REC_DEVICE: return "DEVICE";
    case REC_END: return "END";
    case REC_GO: return "GO";
    case REC_PASS_END: return "PASS_END";
    case REC_CONFIG: return "CONFIG";
    case REC_PAGES_ZSTD: return "PAGES_ZSTD";
    case REC_SYNC: return "SYNC";
    case REC_CHANNEL_END: return "CHANNEL_END";
    case REC_SWITCHOVER: return "SWITCHOVER";
    case REC_RUN_STATE: return "RUN_STATE";
    case REC_POSTCOPY_ADVISE: return "POSTCOPY_ADVISE";
    case REC_POSTCOPY_LISTEN: return "POSTCOPY_LISTEN";
    case REC_POSTCOPY_DISCARD: return "POSTCOPY_DISCARD";
    case REC_POSTCOPY_RUN: return "POSTCOPY_RUN";
    case REC_POSTCOPY_RESUME: return "POSTCOPY_RESUME";
    case REC_RP_READY: return "RP_READY";
    case REC_RP_RUNNING: return "RP_RUNNING";
    case REC_RP_ERROR: return "RP_ERROR";
    case REC_RP_REQ_PAGES: return "RP_REQ_PAGES";
    case REC_RP_POSTCOPY_DONE: return "RP_POSTCOPY_DONE";
    case REC_RP_RECV_BITMAP: return "RP_RECV_BITMAP";
    case REC_RP_RESUME_ACK: return "RP_RESUME_ACK";
    default: return "unknown";
    }
}

bool stream_record_known(uint32_t type)
{
    return strcmp(stream_record_name(type), "unknown") != 0;
}

uint32_t stream_record_max(uint32_t type, uint32_t page_size)
{
    switch (type) {
    case REC_RAM_BLOCKS: return 8 + STREAM_BLOCKS_MAX * 48;
    case REC_PAGES: return 8 + STREAM_PAGES_PER_RECORD * (12 + page_size);
    case REC_ZERO_PAGES: return 8 + STREAM_ZERO_RUNS_PER_RECORD * 16;
    case REC_DEVICE: return STREAM_DEVICE_BODY_MAX;
    case REC_END: return 24;
    case REC_GO: return 0;
    case REC_PASS_END: return 8;
    case REC_CONFIG: return 44;   /* 40 before mode (docs/stream.md) */
    case REC_PAGES_ZSTD:
        return 8 + STREAM_PAGES_PER_RECORD * 12 +
               (uint32_t)ZSTD_COMPRESSBOUND(STREAM_PAGES_PER_RECORD * (size_t)page_size);
    case REC_SYNC: return 8;
    case REC_CHANNEL_END: return 0;
    case REC_SWITCHOVER: return 0;
    case REC_RUN_STATE: return 8;
    case REC_POSTCOPY_ADVISE: return 8;
    case REC_POSTCOPY_LISTEN: return 0;
    case REC_POSTCOPY_DISCARD: return 8 + STREAM_ZERO_RUNS_PER_RECORD * 16;
    case REC_POSTCOPY_RUN: return 0;
    case REC_POSTCOPY_RESUME: return 16;
    case REC_RP_READY: return 0;
    case REC_RP_RUNNING: return 8;
    case REC_RP_ERROR: return 4 + STREAM_ERROR_TEXT_MAX;
    case REC_RP_REQ_PAGES: return 16;
    case REC_RP_POSTCOPY_DONE: return 0;
    case REC_RP_RECV_BITMAP: return 16 + 8 * 8192;
    case REC_RP_RESUME_ACK: return 16;
    default: return 0;
    }
}

static void put_u32(uint8_t *at, uint32_t value)
{
    memcpy(at, &value, 4);   /* little-endian hosts only: x86-64 */
}

static uint32_t get_u32(const uint8_t *at)
{
    uint32_t value;

    memcpy(&value, at, 4);
    return value;
}

int stream_write_header(struct stream_writer *writer, uint32_t page_size,
                        struct gw_error *err)
{
    uint8_t header[STREAM_HEADER_SIZE] = { 0 };
    struct iovec iov = { header, sizeof(header) };
    int rc;

    memcpy(header, STREAM_MAGIC, 8);
    put_u32(header + 8, STREAM_VERSION);
    put_u32(header + 12, page_size);
    put_u32(header + 20, stream_crc32c(0, header, 20));
    rc = writer->io.writev(writer->io.opaque, &iov, 1, err);
    if (rc == 0)
        writer->offset += sizeof(header);
    return rc;
}

int stream_write_record_partial_crc(struct stream_writer *writer, uint32_t type,
                                    const struct iovec *parts, int nparts,
                                    uint32_t crc_length, struct gw_error *err)
{
    struct iovec iov[STREAM_PARTS_MAX + 2];
    uint8_t header[STREAM_RECORD_HEADER_SIZE] = { 0 };
    uint64_t length = 0, covered = 0;
    uint32_t crc;
    int rc;

    if (nparts > STREAM_PARTS_MAX)
        return gw_error_set(err, -EINVAL, "a record has at most %d parts", STREAM_PARTS_MAX);
    for (int i = 0; i < nparts; i++)
        length += parts[i].iov_len;
    if (length > STREAM_BODY_MAX || crc_length > length)
        return gw_error_set(err, -EMSGSIZE, "%s record of %llu bytes is over the limit",
                            stream_record_name(type), (unsigned long long)length);
    put_u32(header, type);
    put_u32(header + 4, (uint32_t)length);
    put_u32(header + 12, crc_length);
    crc = stream_crc32c(0, header, 8);
    for (int i = 0; i < nparts && covered < crc_length; i++) {
        size_t take = parts[i].iov_len < crc_length - covered ? parts[i].iov_len
                                                              : crc_length - covered;
        crc = stream_crc32c(crc, parts[i].iov_base, take);
        covered += take;
    }
    put_u32(header + 8, crc);
    iov[0] = (struct iovec){ header, sizeof(header) };
    if (nparts > 0)
        memcpy(iov + 1, parts, sizeof(*parts) * (size_t)nparts);
    iov[nparts + 1] = (struct iovec){ (void *)zero_padding, (8 - length % 8) % 8 };
    rc = writer->io.writev(writer->io.opaque, iov, nparts + 2, err);
    if (rc == 0)
        writer->offset += sizeof(header) + length + iov[nparts + 1].iov_len;
    return rc;
}

int stream_write_record(struct stream_writer *writer, uint32_t type,
                        const struct iovec *parts, int nparts, struct gw_error *err)
{
    uint64_t length = 0;

    if (nparts > 6)
        return gw_error_set(err, -EINVAL, "a record has at most 6 parts");
    for (int i = 0; i < nparts; i++)
        length += parts[i].iov_len;
    if (length > STREAM_BODY_MAX)
        return gw_error_set(err, -EMSGSIZE, "%s record of %llu bytes is over the limit",
                            stream_record_name(type), (unsigned long long)length);
    return stream_write_record_partial_crc(writer, type, parts, nparts, (uint32_t)length, err);
}

static int read_exact(struct stream_reader *reader, void *buf, size_t len, const char *what,
                      struct gw_error *err)
{
    int rc;

    if (len == 0)
        return 0;   /* an empty body: nothing to read, and maybe no buffer yet */
    rc = reader->io.read(reader->io.opaque, buf, len, err);

    if (rc == -ENODATA)
        return gw_error_set(err, -ENODATA,
                            "the stream ended at offset %llu inside %s: the sender stopped "
                            "before the end of the migration",
                            (unsigned long long)reader->offset, what);
    if (rc == 0)
        reader->offset += len;
    return rc;
}

int stream_read_header(struct stream_reader *reader, struct gw_error *err)
{
    uint8_t header[STREAM_HEADER_SIZE];
    uint32_t version, page_size;
    int rc = read_exact(reader, header, sizeof(header), "the stream header", err);

    if (rc < 0)
        return rc;
    if (memcmp(header, STREAM_MAGIC, 8))
        return gw_error_set(err, -EPROTO,
                            "this is not a godwit migration stream (wrong magic at offset 0)");
    if (get_u32(header + 20) != stream_crc32c(0, header, 20))
        return gw_error_set(err, -EBADMSG, "the stream header's CRC does not match (offset 0)");
    version = get_u32(header + 8);
    if (version != STREAM_VERSION)
        return gw_error_set(err, -EPROTO,
                            "the stream has version %u; this godwit reads version %u",
                            version, STREAM_VERSION);
    page_size = get_u32(header + 12);
    if (page_size < 512 || page_size > STREAM_PAGE_SIZE_MAX || (page_size & (page_size - 1)))
        return gw_error_set(err, -EPROTO,
                            "the stream's page size %u is not a power of two from 512 to 65536",
                            page_size);
    reader->page_size = page_size;
    return 0;
}

static int ensure_body(struct stream_reader *reader, uint32_t length, struct gw_error *err)
{
    if (length <= reader->body_cap)
        return 0;
    free(reader->body);
    reader->body = malloc(length);
    reader->body_cap = reader->body ? length : 0;
    if (!reader->body)
        return gw_error_set(err, -ENOMEM, "out of memory for a %u-byte record", length);
    return 0;
}

static int read_padding(struct stream_reader *reader, const struct stream_record *record,
                        struct gw_error *err)
{
    uint8_t padding[8];
    uint32_t len = (8 - record->length % 8) % 8;
    char what[96];
    int rc;

    snprintf(what, sizeof(what), "the padding of the %s record at offset %llu",
             stream_record_name(record->type), (unsigned long long)record->offset);
    rc = read_exact(reader, padding, len, what, err);

    if (rc == 0 && memcmp(padding, zero_padding, len))
        return gw_error_set(err, -EBADMSG, "%s record at stream offset %llu has non-zero padding",
                            stream_record_name(record->type),
                            (unsigned long long)record->offset);
    return rc;
}

/* Only PAGES may leave part of its body to its own checksums, and only the
 * page data: the loader checks crc_length against the page count. */
static int check_crc_length(const struct stream_record *record, struct gw_error *err)
{
    if (record->crc_length == record->length ||
        (record->type == REC_PAGES && record->crc_length < record->length))
        return 0;
    return gw_error_set(err, -EPROTO, "%s record at stream offset %llu has a CRC length of %u "
                        "for a %u-byte body", stream_record_name(record->type),
                        (unsigned long long)record->offset, record->crc_length,
                        record->length);
}

int stream_read_record(struct stream_reader *reader, struct stream_record *record,
                       struct gw_error *err)
{
    uint8_t header[STREAM_RECORD_HEADER_SIZE];
    uint32_t crc, max;
    bool known;
    int rc;

    for (;;) {
        record->offset = reader->offset;
        rc = read_exact(reader, header, sizeof(header), "a record header", err);
        if (rc < 0)
            return rc;
        record->type = get_u32(header);
        record->length = get_u32(header + 4);
        record->crc_length = get_u32(header + 12);
        known = stream_record_known(record->type);
        if (!known && !(record->type & STREAM_OPTIONAL))
            return gw_error_set(err, -EPROTO,
                                "unknown mandatory record type 0x%x at stream offset %llu",
                                record->type, (unsigned long long)record->offset);
        /* An unknown optional record is read, checked and skipped. */
        max = known ? stream_record_max(record->type, reader->page_size) : STREAM_BODY_MAX;
        if (record->length > max)
            return gw_error_set(err, -EPROTO,
                                "%s record at stream offset %llu is %u bytes, more than its "
                                "limit of %u", stream_record_name(record->type),
                                (unsigned long long)record->offset, record->length, max);
        char what[96];
        snprintf(what, sizeof(what), "the body of the %s record at offset %llu",
                 stream_record_name(record->type), (unsigned long long)record->offset);
        if ((rc = check_crc_length(record, err)) < 0 ||
            (rc = ensure_body(reader, record->crc_length, err)) < 0 ||
            (rc = read_exact(reader, reader->body, record->crc_length, what, err)) < 0)
            return rc;
        crc = stream_crc32c(stream_crc32c(0, header, 8), reader->body, record->crc_length);
        if (crc != get_u32(header + 8))
            return gw_error_set(err, -EBADMSG,
                                "%s record (type 0x%x) at stream offset %llu has a bad CRC "
                                "(stored 0x%08x, computed 0x%08x): the stream is corrupt",
                                stream_record_name(record->type), record->type,
                                (unsigned long long)record->offset, get_u32(header + 8), crc);
        record->body = reader->body;
        record->unread = record->length - record->crc_length;
        if (record->unread == 0 && (rc = read_padding(reader, record, err)) < 0)
            return rc;
        if (known)
            return 0;
    }
}

int stream_read_payload(struct stream_reader *reader, struct stream_record *record,
                        const struct iovec *iov, int iovcnt, struct gw_error *err)
{
    uint64_t total = 0;
    int rc;

    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total != record->unread)
        return gw_error_set(err, -EPROTO, "%s record at stream offset %llu: %llu payload "
                            "bytes expected, %u present", stream_record_name(record->type),
                            (unsigned long long)record->offset, (unsigned long long)total,
                            record->unread);
    if (reader->io.readv) {
        rc = reader->io.readv(reader->io.opaque, iov, iovcnt, err);
        if (rc == -ENODATA)
            rc = gw_error_set(err, -ENODATA, "the stream ended inside the %s record at offset "
                              "%llu: the sender stopped before the end of the migration",
                              stream_record_name(record->type),
                              (unsigned long long)record->offset);
        if (rc == 0)
            reader->offset += total;
    } else {
        char what[96];
        snprintf(what, sizeof(what), "the data of the %s record at offset %llu",
                 stream_record_name(record->type), (unsigned long long)record->offset);
        rc = 0;
        for (int i = 0; i < iovcnt && rc == 0; i++)
            rc = read_exact(reader, iov[i].iov_base, iov[i].iov_len, what, err);
    }
    if (rc < 0)
        return rc;
    record->unread = 0;
    return read_padding(reader, record, err);
}

int stream_reader_prepare(struct stream_reader *reader, uint32_t size, struct gw_error *err)
{
    int rc = ensure_body(reader, size, err);

    if (rc == 0)
        memset(reader->body, 0, reader->body_cap);
    return rc;
}

void stream_reader_free(struct stream_reader *reader)
{
    free(reader->body);
    reader->body = NULL;
    reader->body_cap = 0;
}
