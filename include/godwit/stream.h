/* The migration stream (docs/stream.md): a fixed header, then records
 * {type, length, crc32c, crc_length, body, zero padding to 8}; the CRC
 * covers the first 8 header bytes and the first crc_length body bytes. The
 * reader
 * checks magic, version, every length against its bound and every CRC
 * before a byte of a body is used, and names the record type and stream
 * offset in every error. */
#ifndef GODWIT_STREAM_H
#define GODWIT_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <godwit/error.h>

#define STREAM_MAGIC "GODWITMS"
#define STREAM_VERSION 1
#define STREAM_HEADER_SIZE 24
#define STREAM_RECORD_HEADER_SIZE 16

/* Bit 31 of a type marks a record a reader may skip if it does not know it. */
#define STREAM_OPTIONAL 0x80000000u

enum stream_record_type {
    /* source -> destination */
    REC_RAM_BLOCKS = 1,    /* the source's RAM blocks: first record */
    REC_PAGES = 2,         /* pages with data */
    REC_ZERO_PAGES = 3,    /* runs of zero pages, no data */
    REC_DEVICE = 4,        /* one device's state */
    REC_END = 5,           /* everything is sent; counts to check */
    REC_GO = 6,            /* the source has stopped for good: the guest is yours */
    REC_PASS_END = 7 | STREAM_OPTIONAL,   /* a dirty pass ended (informational) */
    REC_CONFIG = 8,        /* how the source migrates: second record, main channel */
    REC_PAGES_ZSTD = 9,    /* pages compressed with zstd (multifd channels) */
    REC_SYNC = 10,         /* a multifd RAM channel reached the end of a pass */
    REC_CHANNEL_END = 11,  /* a multifd channel is done */
    REC_SWITCHOVER = 12,   /* the source stopped the guest: stop-copy data follows */
    REC_RUN_STATE = 13,    /* whether the guest ran on the source at switchover */
    /* postcopy (docs/stream.md, "Postcopy") */
    REC_POSTCOPY_ADVISE = 14,  /* after CONFIG: the source may switch to postcopy */
    REC_POSTCOPY_LISTEN = 15,  /* devices sent, multifd ended: register RAM for faults */
    REC_POSTCOPY_DISCARD = 16, /* runs of pages sent before but dirty since */
    REC_POSTCOPY_RUN = 17,     /* the switch is whole: answer READY, then run on GO */
    REC_POSTCOPY_RESUME = 18,  /* recovery: first record of the new main channel */
    /* destination -> source, on the return path */
    REC_RP_READY = 0x101,  /* all loaded and checked */
    REC_RP_RUNNING = 0x102,/* the destination took the guest over (running or paused) */
    REC_RP_ERROR = 0x103,  /* the load failed: errno and a sentence */
    REC_RP_REQ_PAGES = 0x104,      /* postcopy: the guest waits for these pages */
    REC_RP_POSTCOPY_DONE = 0x105,  /* postcopy: END checked, every page placed */
    REC_RP_RECV_BITMAP = 0x106,    /* recovery: pages the destination has */
    REC_RP_RESUME_ACK = 0x107,     /* recovery: bitmap sent, with the page counts */
};

/* Bounds, checked before anything is read into memory. */
#define STREAM_BLOCKS_MAX 64
#define STREAM_PAGES_PER_RECORD 256
#define STREAM_ZERO_RUNS_PER_RECORD 4096
#define STREAM_PAGE_SIZE_MAX 65536
#define STREAM_ERROR_TEXT_MAX 1024
#define STREAM_BODY_MAX (64u << 20)
/* A DEVICE record: a 48-byte head and at most one 16 MiB buffer. */
#define STREAM_DEVICE_BODY_MAX (48u + (16u << 20))   /* the largest record of any type (device state) */

const char *stream_record_name(uint32_t type);
bool stream_record_known(uint32_t type);
/* The largest body a record of a known type may have. */
uint32_t stream_record_max(uint32_t type, uint32_t page_size);

/* I/O is through callbacks so a stream can come from a socket, a file or a
 * fuzzer's buffer. Both return 0 or a negative errno with err filled; read
 * returns -ENODATA at a clean end of input before any byte of len. */
struct stream_io {
    int (*read)(void *opaque, void *buf, size_t len, struct gw_error *err);
    /* Optional: fills every iovec completely; NULL means read them one by one. */
    int (*readv)(void *opaque, const struct iovec *iov, int iovcnt, struct gw_error *err);
    int (*writev)(void *opaque, const struct iovec *iov, int iovcnt, struct gw_error *err);
    void *opaque;
};

struct stream_writer {
    struct stream_io io;
    uint64_t offset;        /* bytes written so far */
};

int stream_write_header(struct stream_writer *writer, uint32_t page_size,
                        struct gw_error *err);
/* Writes one record whose body is the concatenation of parts (at most 6). */
int stream_write_record(struct stream_writer *writer, uint32_t type,
                        const struct iovec *parts, int nparts, struct gw_error *err);
/* The same with any number of parts (at most STREAM_PARTS_MAX), of which the
 * record CRC covers only the first crc_length body bytes: the rest carries
 * checksums of its own (PAGES: one per page). */
#define STREAM_PARTS_MAX 512
int stream_write_record_partial_crc(struct stream_writer *writer, uint32_t type,
                                    const struct iovec *parts, int nparts,
                                    uint32_t crc_length, struct gw_error *err);

struct stream_reader {
    struct stream_io io;
    uint64_t offset;        /* bytes consumed so far */
    uint32_t page_size;     /* from the header */
    uint8_t *body;          /* the current record's body (owned) */
    uint32_t body_cap;
};

struct stream_record {
    uint32_t type;
    uint32_t length;
    const uint8_t *body;    /* the CRC-covered part, valid until the next read */
    uint32_t crc_length;    /* bytes of body read and checked */
    uint32_t unread;        /* body bytes after those (PAGES data): the caller reads
                             * them with stream_read_payload */
    uint64_t offset;        /* where the record started in the stream */
};

int stream_read_header(struct stream_reader *reader, struct gw_error *err);
/* Reads the next record, checked: length within its type's bound, CRC right.
 * Unknown optional records are skipped; an unknown mandatory record is an
 * error. */
int stream_read_record(struct stream_reader *reader, struct stream_record *record,
                       struct gw_error *err);
/* Reads the rest of a record's body into iov (which must add up to
 * record->unread bytes), then its padding. */
int stream_read_payload(struct stream_reader *reader, struct stream_record *record,
                        const struct iovec *iov, int iovcnt, struct gw_error *err);
void stream_reader_free(struct stream_reader *reader);
/* Gives the reader room for bodies of up to size bytes, touched now (see
 * gw_buffer_prepare). */
int stream_reader_prepare(struct stream_reader *reader, uint32_t size, struct gw_error *err);

uint32_t stream_crc32c(uint32_t crc, const void *data, size_t len);

#endif
