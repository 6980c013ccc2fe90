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

struct migration_params {
    uint64_t downtime_limit_ms;          /* default 300 */
    uint64_t max_bandwidth;              /* bytes/s, 0 = unlimited */
    uint64_t avail_switchover_bandwidth; /* bytes/s, 0 = measured */
};

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
};

struct migration {
    struct migration_host host;
    struct qmp_server *qmp;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    enum migration_status status;
    char error[GW_ERROR_MSG_MAX];
    struct migration_params params;
    bool cap_events;
    bool incoming_expected;          /* started with --incoming defer */
    bool is_destination;
    pthread_t thread;
    bool thread_running;
    atomic_bool cancel_requested;
    struct channel channel;          /* fd shut down by cancel, under lock */
    struct channel_listener listener;  /* destination: made by migrate-incoming */
    int cancel_pipe[2];              /* wakes a destination waiting in accept */
    struct uri uri;

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
struct ram_sender *ram_sender_new(struct migration *migration, struct stream_writer *writer,
                                  uint32_t page_size);
/* Sends every page whose bit is set in the bitmaps, clearing bits as it
 * goes; clear_tracker re-arms tracking for a chunk before reading it. */
int ram_sender_send_dirty(struct ram_sender *sender, bool clear_tracker, bool vm_stopped,
                          struct gw_error *err);
void ram_sender_free(struct ram_sender *sender);
uint64_t ram_count_dirty(struct migration *migration);
bool ram_page_is_zero(const uint8_t *page, size_t len);

/* Page loading (ram_load.c): every index is checked before use. */
int ram_check_blocks(const struct ram_block *blocks, unsigned nr_blocks, uint32_t page_size,
                     const uint8_t *body, uint32_t length, struct gw_error *err);
/* The RAM_BLOCKS record body for the source's blocks; returns its length. */
uint32_t ram_blocks_record(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *body);

/* The whole destination load loop, also used by the stream fuzzer. */
struct load_state {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    struct device_registry *devices;
    /* NULL, or a bitmap per block of the pages a PAGES record wrote: RAM was
     * zero at the start, so only those need clearing for a zero page. */
    uint64_t **written;
    /* Pages whose data failed their CRC (a guest write during the send):
     * each must arrive whole again before END. Allocated when needed. */
    uint64_t *torn[STREAM_BLOCKS_MAX];
    uint64_t torn_pages, torn_offset;
    uint64_t normal_pages, zero_pages, devices_loaded;
    bool device_seen[DEVICE_MAX];
    /* A device's stop-copy state, put together from its buffers in order. */
    struct gw_buffer device_parts[DEVICE_MAX];
    uint32_t next_buffer[DEVICE_MAX], next_precopy[DEVICE_MAX];
};

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



void migration_request_cancel(struct migration *migration);
/* migrate_cancel: moves an outgoing migration in progress to cancelling and
 * stops it; returns false when there was nothing to cancel. */
bool migration_begin_cancel(struct migration *migration);
void migration_join(struct migration *migration);
int migration_launch(struct migration *migration, const struct uri *uri, bool destination,
                     struct gw_error *err);
#endif
