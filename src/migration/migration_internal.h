/* The engine's shared state; private to src/migration.
 *
 * Ownership: `lock` guards status, error, params, caps, the thread handles
 * and channel fds that cancel may shut down. The counters in `stats` are
 * atomics written by the migration thread and read by query-migrate. The
 * bitmaps and batches belong to the migration thread alone. */
#ifndef GODWIT_MIGRATION_INTERNAL_H
#define GODWIT_MIGRATION_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <godwit/channel.h>
#include <godwit/hmp.h>
#include <godwit/migration.h>
#include <godwit/stream.h>

#define DOWNTIME_LIMIT_MAX_MS 2000000ULL

/* DEVICE record: id[32], instance, version, buffer index, flags; then data. */
#define DEVICE_RECORD_HEADER 48
#define DEVICE_LAST 0x1u      /* the last buffer of a device's stop-copy state */
#define DEVICE_PRECOPY 0x2u   /* a precopy buffer, for load_precopy */
#define BANDWIDTH_MAX (1ULL << 53)

enum multifd_compression { COMPRESSION_NONE, COMPRESSION_ZSTD };
enum zero_page_detection { ZERO_DETECT_NONE, ZERO_DETECT_LEGACY, ZERO_DETECT_MULTIFD };
#define MULTIFD_CHANNELS_MAX 255
#define ZSTD_LEVEL_MAX 20

struct migration_params {
    uint64_t downtime_limit_ms;          /* default 300 */
    uint64_t max_bandwidth;              /* bytes/s, 0 = unlimited */
    uint64_t avail_switchover_bandwidth; /* bytes/s, 0 = measured */
    uint64_t multifd_channels;           /* default 2 */
    uint64_t multifd_zstd_level;         /* default 1 */
    uint64_t device_channels;            /* x-multifd-channels-device-state, default 0 */
    uint64_t packet_pages;               /* x-multifd-packet-pages, default 256 */
    uint64_t multifd_compression;        /* enum multifd_compression */
    uint64_t zero_page_detection;        /* enum zero_page_detection, default multifd */
};

/* How a migration runs: the CONFIG record (docs/stream.md). Taken from the
 * parameters and capabilities when a migration starts, on both sides. */
struct migration_config {
    uint32_t multifd, channels, compression, zero_detection, channel_header, device_channels;
    uint8_t id[16];
};
#define CONFIG_RECORD_SIZE 40

/* Channel headers (docs/stream.md, "Channel header"). */
enum channel_type { CHANNEL_MAIN = 1, CHANNEL_RAM = 2, CHANNEL_DEVICE = 3 };
#define CHANNEL_MAGIC "GODWITCH"
#define CHANNEL_HEADER_SIZE 48
void channel_header_encode(uint8_t *out, uint32_t type, uint32_t index, const uint8_t *id);
int channel_header_decode(const uint8_t *in, uint32_t *type, uint32_t *index, uint8_t *id,
                          struct gw_error *err);
void config_encode(const struct migration_config *config, uint8_t *out);
/* Compares the source's CONFIG body with ours; fills *theirs. */
int config_check(const struct migration_config *ours, const uint8_t *body, uint32_t length,
                 struct migration_config *theirs, struct gw_error *err);
/* The settings a new migration runs with, under the migration lock. */
void migration_snapshot_config(struct migration *migration, struct migration_config *config);

struct migration_stats {
    _Atomic uint64_t start_ms, setup_ms, total_ms, downtime_ms, expected_downtime_ms;
    _Atomic uint64_t expected_downtime_at_switchover_ms;
    _Atomic uint64_t transferred, precopy_bytes, downtime_bytes;
    _Atomic uint64_t normal_pages, zero_pages, remaining_bytes, dirty_sync_count;
    _Atomic uint64_t dirty_sync_time_us, dirty_pages_rate, pages_per_second;
    _Atomic uint64_t bandwidth;          /* bytes/s over transfer time, last pass */
    _Atomic uint64_t transfer_time_us;   /* total of finished passes, sync time excluded */
    _Atomic uint64_t pass_started_us;    /* 0 outside a pass: for live figures */
    _Atomic uint64_t device_transferred; /* bytes of DEVICE records */
    _Atomic uint64_t device_precopy_pending, device_stopcopy_pending;  /* last asked */
    _Atomic uint64_t multifd_bytes;      /* of transferred, on multifd channels */
};

struct migration {
    struct migration_host host;
    struct qmp_server *qmp;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    enum migration_status status;
    char error[GW_ERROR_MSG_MAX];
    struct migration_params params;
    bool cap_events, cap_multifd, cap_channel_header;
    struct migration_config config;  /* of the migration in progress: its thread's */
    bool incoming_expected;          /* started with --incoming defer */
    bool is_destination;
    pthread_t thread;
    bool thread_running;
    atomic_bool cancel_requested;
    struct channel channel;          /* fd shut down by cancel, under lock */
    struct channel_listener listener;  /* destination: made by migrate-incoming */
    /* Multifd channels, RAM then device state: fds shut down by cancel, under lock. */
    struct channel *multifd_channels;
    unsigned nr_multifd_channels;
    int cancel_pipe[2];              /* wakes a destination waiting in accept */
    struct uri uri;

    /* Destination: RP_ERROR goes out once, from whichever thread fails first. */
    pthread_mutex_t rp_write_lock;
    bool rp_error_sent;

    /* Return path (source): written by the return-path thread under lock. */
    pthread_t rp_thread;
    bool rp_running;
    bool rp_ready, rp_running_seen, rp_closed;
    char rp_error[GW_ERROR_MSG_MAX];

    struct migration_stats stats;
    uint64_t *bitmaps[STREAM_BLOCKS_MAX];
    struct qmp_command *qmp_commands;  /* registered with the server: outlive it */
    struct hmp_command *hmp_commands;
};

uint64_t migration_now_us(void);

/* One bitmap per RAM block in migration->bitmaps: every page set (the
 * source's dirty bitmaps before the first pass) or none (the destination's
 * written-page bitmaps). */
int migration_alloc_bitmaps(struct migration *migration, bool all_set, struct gw_error *err);

/* Every byte written to the channel goes through here: transferred, and
 * precopy-bytes or downtime-bytes by whether the guest was stopped. */
void migration_count_sent(struct migration *migration, uint64_t bytes, bool vm_stopped);

/* Status changes go through here: event, wake-ups. Takes the lock. */
void migration_set_status(struct migration *migration, enum migration_status status);
/* Records the first error and moves to failed (or cancelled if cancelling). */
void migration_fail(struct migration *migration, const struct gw_error *err);
bool migration_cancelled(struct migration *migration);
void migration_emit(struct migration *migration, const char *event, json_t *data);

void *migration_source_thread(void *opaque);
void *migration_destination_thread(void *opaque);

/* Page sending (ram_send.c). */
struct ram_sender;
/* Without multifd, one sending thread writes to main_writer; with it, one
 * per multifd channel (migration->multifd_channels, already connected and
 * past their headers). */
struct ram_sender *ram_sender_new(struct migration *migration, struct stream_writer *main_writer,
                                  uint32_t page_size, struct gw_error *err);
/* Sends every page whose bit is set in the bitmaps, clearing bits as it
 * goes; clear_tracker re-arms tracking for a chunk before reading it. With
 * multifd, ends the pass with SYNC(pass) on every RAM channel. Returns
 * once all of it is written. */
int ram_sender_send_dirty(struct ram_sender *sender, bool clear_tracker, bool vm_stopped,
                          uint64_t pass, struct gw_error *err);
/* Queues one DEVICE record (header, then len bytes at data) on a multifd
 * channel: a device-state one if there are any, else a RAM one. data must
 * stay valid until *sent turns true (sent may be NULL: until
 * ram_sender_finish). */
int ram_sender_queue_device(struct ram_sender *sender, const uint8_t *header, const uint8_t *data,
                            size_t len, atomic_bool *sent, struct gw_error *err);
/* Waits until *sent is true, or a send failed. */
int ram_sender_wait_sent(struct ram_sender *sender, atomic_bool *sent, struct gw_error *err);
/* Multifd: CHANNEL_END on every channel; returns once all is written. */
int ram_sender_finish(struct ram_sender *sender, struct gw_error *err);
void ram_sender_free(struct ram_sender *sender);
uint64_t ram_count_dirty(struct migration *migration);
bool ram_page_is_zero(const uint8_t *page, size_t len);

/* Page loading (ram_load.c): every index is checked before use. */
int ram_check_blocks(const struct ram_block *blocks, unsigned nr_blocks, uint32_t page_size,
                     const uint8_t *body, uint32_t length, struct gw_error *err);
/* The RAM_BLOCKS record body for the source's blocks; returns its length. */
uint32_t ram_blocks_record(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *body);

/* Pages whose data failed their CRC (a guest write during the send): each
 * must arrive whole again before END. Shared by the multifd receivers:
 * `lock` guards the bitmaps (allocated when needed) and offset. */
struct torn_pages {
    pthread_mutex_t lock;
    uint64_t *bitmaps[STREAM_BLOCKS_MAX];
    _Atomic uint64_t pages;
    uint64_t offset;
};

struct multifd_recv;

/* The whole destination load loop, also used by the stream fuzzer. One per
 * receiving thread; the multifd receivers' copies share blocks, written,
 * torn and devices with the main one and keep their own counts. */
struct load_state {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    struct device_registry *devices;
    /* NULL, or a bitmap per block of the pages a PAGES record wrote: RAM was
     * zero at the start, so only those need clearing for a zero page.
     * Receivers set and clear bits with atomic operations. */
    uint64_t **written;
    struct torn_pages *torn;     /* &own_torn, or the main state's */
    struct torn_pages own_torn;
    uint64_t normal_pages, zero_pages, devices_loaded;
    bool device_seen[DEVICE_MAX];
    /* A device's stop-copy state, put together from its buffers in order,
     * or for a device that loads pieces, the bytes it has loaded. */
    struct gw_buffer device_parts[DEVICE_MAX];
    uint64_t piece_bytes[DEVICE_MAX];
    uint32_t next_buffer[DEVICE_MAX], next_precopy[DEVICE_MAX];
    /* The settings CONFIG must match (the fuzzer's: all defaults), and the
     * multifd channels' side, started by after_config once CONFIG is read. */
    struct migration_config config;
    int (*after_config)(void *opaque, struct load_state *state, struct gw_error *err);
    void *after_config_opaque;
    struct multifd_recv *multifd;
};

void load_state_init(struct load_state *state, const struct ram_block *blocks, unsigned nr_blocks,
                     struct device_registry *devices);
/* A zstd-compressed PAGES record (multifd channels): scratch holds
 * STREAM_PAGES_PER_RECORD pages. */
int ram_load_pages_zstd(struct stream_record *record, struct load_state *state, uint32_t page_size,
                        void *dctx, uint8_t *scratch, struct gw_error *err);
/* Multifd receivers (multifd_recv.c): one thread per channel of
 * migration->multifd_channels, and a device load thread. */
int multifd_recv_start(struct migration *migration, struct load_state *main_state,
                       uint32_t page_size, struct gw_error *err);
/* A DEVICE record off a multifd channel (also the fuzzer's way in). */
int multifd_recv_device(struct multifd_recv *recv, struct stream_reader *reader,
                        const struct stream_record *record, struct gw_error *err);
/* The main channel read its first stop-copy DEVICE record: from now on
 * the load thread may load states that came on multifd channels. */
void multifd_recv_precopy_done(struct multifd_recv *recv);
/* At END: waits for every channel's CHANNEL_END and every device load,
 * then adds their counts to the main state. */
int multifd_recv_finish(struct multifd_recv *recv, struct load_state *main_state,
                        struct gw_error *err);
/* True, with the error in err, if a receiver or a device load failed: the
 * cause to report rather than the main channel's read error it led to. */
bool multifd_recv_error(struct multifd_recv *recv, struct gw_error *err);
uint64_t multifd_recv_bytes(const struct multifd_recv *recv);
void multifd_recv_free(struct multifd_recv *recv);

/* The 48-byte head of a DEVICE record (docs/stream.md), read from a body
 * that was checked to be long enough. */
struct device_record_head {
    char id[DEVICE_ID_MAX + 1];
    uint32_t instance, version, index, flags;
};
int device_record_head(const struct stream_record *record, struct device_record_head *head,
                       struct gw_error *err);

/* Loads a PAGES record: metadata checked, data read into guest RAM, each
 * page's CRC checked (a mismatch marks it torn). */
int ram_load_pages(struct stream_reader *reader, struct stream_record *record,
                   struct load_state *state, struct gw_error *err);
int ram_load_zero_pages(struct load_state *state, uint32_t page_size, const uint8_t *body,
                        uint32_t length, struct gw_error *err);
/* At END: no page may still be torn. */
int ram_check_torn(const struct load_state *state, struct gw_error *err);
void load_state_free(struct load_state *state);
/* Reads records until END; returns 0 when END arrived and every count and
 * device checks out. */
int migration_load_stream(struct stream_reader *reader, struct load_state *state,
                          struct gw_error *err);



/* Connections (channels.c). Source: a fresh migration id; the multifd
 * channels connected, headers written, published in migration->multifd_channels. */
int channels_new_id(struct migration_config *config, struct gw_error *err);
int channels_connect_multifd(struct migration *migration, uint32_t page_size,
                             struct gw_error *err);
void channels_shutdown_multifd(struct migration *migration);   /* under lock */
void channels_close_multifd(struct migration *migration);
/* Destination: the main channel (into migration->channel), then, once its
 * CONFIG is read into migration->config, the multifd channels. */
struct pending;
int channels_accept_main(struct migration *migration, struct channel_listener *listener,
                         struct pending **pending, struct gw_error *err);
int channels_accept_multifd(struct migration *migration, struct channel_listener *listener,
                            struct pending *pending, struct gw_error *err);
void channels_free_pending(struct pending *pending);
/* An RP_ERROR record with the failure's sentence, best effort. */
void channels_send_error(struct channel *channel, const struct gw_error *failure);
/* Destination: the same on the main channel, once per migration, from any
 * thread (a multifd receiver's failure or the main thread's). */
void channels_send_error_once(struct migration *migration, const struct gw_error *failure);

/* What the capabilities and parameters ask of a URI: multifd needs tcp: or
 * unix:, device-state channels need multifd and x-channel-header. */
int migration_check_uri(struct migration *migration, const struct uri *uri, struct gw_error *err);

void migration_request_cancel(struct migration *migration);
/* migrate_cancel: moves an outgoing migration in progress to cancelling and
 * stops it; returns false when there was nothing to cancel. */
bool migration_begin_cancel(struct migration *migration);
void migration_join(struct migration *migration);
int migration_launch(struct migration *migration, const struct uri *uri, bool destination,
                     struct gw_error *err);
#endif
