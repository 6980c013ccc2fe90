/* The engine's shared state: the migration object, its parameters, its
 * statistics and the helpers every thread of a migration uses. Private to
 * libgodwit.
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
#include <godwit/objects.h>
#include <godwit/stream.h>
#include <godwit/tls.h>

#include "migration/migration_convergence.h"
#include "postcopy/postcopy.h"
#include "ram/ram_internal.h"
#include "rdma/rdma_transport.h"

#define DOWNTIME_LIMIT_MAX_MS 2000000ULL

/* QEMU takes bandwidths up to SIZE_MAX; a JSON integer here is signed 64-bit
 * (jansson), so ours end at 2^63 - 1. libvirt's "unlimited",
 * 9223372036853727232, is below. */
#define BANDWIDTH_MAX ((uint64_t)INT64_MAX)

enum multifd_compression { COMPRESSION_NONE, COMPRESSION_ZSTD };
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
    /* auto-converge (migration_throttle.h), percent; tailslow is 0 or 1 */
    uint64_t cpu_throttle_initial;       /* default 20 */
    uint64_t cpu_throttle_increment;     /* default 10 */
    uint64_t cpu_throttle_tailslow;      /* default off */
    uint64_t max_cpu_throttle;           /* default 99 */
    uint64_t throttle_trigger_threshold; /* default 50 */
    uint64_t vcpu_dirty_limit;           /* MB/s, default 1 */
    uint64_t vcpu_dirty_limit_period;    /* x-vcpu-dirty-limit-period, ms, default 1000 */
    /* TLS (QEMU's): object ids and a host name; "" is off */
    char tls_creds[TLS_ID_MAX];
    char tls_hostname[256];
    char tls_authz[TLS_ID_MAX];
    uint64_t rdma_chunk_size;            /* x-rdma-chunk-size, bytes, default 1 MiB */
    uint64_t rdma_provider;              /* x-rdma-provider (ours), enum rdma_provider */
    uint64_t max_postcopy_bandwidth;     /* bytes/s of the postcopy phase's background
                                          * pages, 0 = unlimited (QEMU's) */
    uint64_t mode;                       /* QEMU's mode, enum migration_mode */
};

/* QEMU's MigMode, the two godwit has: normal copies RAM; cpr-transfer
 * passes its file descriptors to a new process on this host (cpr.h). */
enum migration_mode { MIGRATION_MODE_NORMAL, MIGRATION_MODE_CPR_TRANSFER };

/* QEMU's limits for dirty-limit's parameters. */
#define VCPU_DIRTY_LIMIT_DEFAULT 1
#define VCPU_DIRTY_LIMIT_PERIOD_DEFAULT_MS 1000
#define VCPU_DIRTY_LIMIT_PERIOD_MAX_MS 1000

/* How a migration runs: the CONFIG record (docs/stream.md). Taken from the
 * parameters and capabilities when a migration starts, on both sides. */
struct migration_config {
    uint32_t multifd, channels, compression, zero_detection, channel_header, device_channels;
    uint8_t id[16];
    uint32_t mode;   /* enum migration_mode: cpr-transfer sends no page */
};
#define CONFIG_RECORD_SIZE 44
#define CONFIG_RECORD_SIZE_V1 40   /* before mode: a normal migration */

/* Returns the body's length: CONFIG_RECORD_SIZE_V1 in mode normal. */
size_t config_encode(const struct migration_config *config, uint8_t *out);
/* Compares the source's CONFIG body with ours; fills *theirs. */
int config_check(const struct migration_config *ours, const uint8_t *body, uint32_t length,
                 struct migration_config *theirs, struct gw_error *err);
/* The settings a new migration runs with, under the migration lock. */
void migration_snapshot_config(struct migration *migration, struct migration_config *config);
/* A fresh random migration id, for the channel headers and CONFIG. */
int migration_new_id(struct migration_config *config, struct gw_error *err);

/* The switchover's parts, in order (query-migrate's downtime-detail). */
enum downtime_part {
    DOWNTIME_STOP,     /* asking the VMM to stop until it has (and
                        * pause-before-switchover's wait for migrate-continue) */
    DOWNTIME_SYNC,     /* the final dirty sync */
    DOWNTIME_RAM,      /* the last dirty pages queued to the channels */
    DOWNTIME_DEVICE,   /* device state saved and queued */
    DOWNTIME_FLUSH,    /* the channels drained, END written */
    DOWNTIME_LOAD,     /* END to the destination's READY */
    DOWNTIME_RESUME,   /* GO to the destination's RUNNING */
    DOWNTIME_PARTS
};

/* The downtime estimate's parts (query-migrate's downtime-detail.expected). */
enum estimate_part {
    ESTIMATE_STOP,       /* the VMM's stop, timed at setup */
    ESTIMATE_SYNC,       /* the final sync, as long as the last */
    ESTIMATE_TRANSFER,   /* bytes left / switchover bandwidth */
    ESTIMATE_DEVICE,     /* the devices' own save and load time */
    ESTIMATE_READY,      /* END to READY: what the link holds, and a round trip */
    ESTIMATE_RUNNING,    /* GO to RUNNING: a round trip, and the VMM's start */
    ESTIMATE_PARTS
};

struct downtime_estimate {
    uint64_t bytes, bandwidth;        /* RAM and device state left; bytes/s expected */
    uint64_t parts[ESTIMATE_PARTS];   /* us */
    /* What the device part was reckoned from: the devices' time to save
     * their stop-copy state (us; the load is taken to cost as much), the
     * lanes their state is spread over (0 with none to send) and the CPUs
     * the stages share. */
    uint64_t device_save_us;
    unsigned device_lanes, cores;
};

struct migration_stats {
    _Atomic uint64_t start_ms, setup_ms, total_ms, downtime_ms, expected_downtime_ms;
    _Atomic uint64_t expected_downtime_at_switchover_ms;
    _Atomic uint64_t transferred, precopy_bytes, downtime_bytes;
    _Atomic uint64_t normal_pages, zero_pages, dirty_sync_count;
    _Atomic uint64_t dirty_sync_time_us, dirty_pages_rate, pages_per_second;
    /* The last sync and its parts (ours): the tracker's fetch, the merge
     * into the engine's bitmaps, the devices' pending query. */
    _Atomic uint64_t last_sync_us, last_sync_fetch_us, last_sync_merge_us, last_sync_device_us;
    _Atomic uint64_t bandwidth;          /* bytes/s over transfer time, last pass */
    /* bytes/s over the part of the last pass that max-bandwidth's pacing
     * did not hold back: what the unpaced stop-copy phase can expect. */
    _Atomic uint64_t link_bandwidth;
    _Atomic uint64_t paced_us;           /* wall time lanes slept for max-bandwidth */
    _Atomic uint64_t transfer_time_us;   /* total of finished passes, sync time excluded */
    _Atomic uint64_t pass_started_us;    /* 0 outside a pass: for live figures */
    _Atomic uint64_t device_transferred; /* bytes of DEVICE records */
    _Atomic uint64_t device_precopy_pending, device_stopcopy_pending;  /* last asked */
    _Atomic uint64_t multifd_bytes;      /* of transferred, on multifd channels */
    /* The switchover, in us (ours): the whole downtime, the estimate at
     * switchover, and the parts in the order they happen. */
    _Atomic uint64_t downtime_us, expected_downtime_at_switchover_us;
    _Atomic uint64_t downtime_parts_us[DOWNTIME_PARTS];
    struct downtime_estimate estimate_at_switchover;   /* under the migration's lock */
    struct convergence convergence;      /* what is left, the rates, the verdict */
    _Atomic uint64_t cpu_throttle_percentage;  /* what the VMM was last asked; 0 = none */
    _Atomic bool dirty_limit_on;         /* the host's dirty limit, started by this migration */
    struct rdma_stats rdma;              /* an rdma: migration's (ours) */
    /* Postcopy. Source: page requests received, bytes sent after the
     * switch. Destination: its postcopy RAM's figures, copied at the end
     * (live ones are read from postcopy_ram while it exists). */
    _Atomic uint64_t postcopy_requests, postcopy_bytes;
    _Atomic uint64_t preempt_bytes;      /* of postcopy_bytes, on the preempt channel */
    struct postcopy_stats postcopy;
};

/* postcopy-preempt's channel (migration_preempt.c). Source: the
 * return-path thread writes requested pages on it under `lock`, the
 * migration thread its CHANNEL_END. Destination: a receiver thread reads
 * it into a loader of its own (landing lane 1). `channel` is shut down by
 * cancel under the migration lock. */
struct postcopy_preempt {
    pthread_mutex_t lock;
    struct channel channel;
    struct stream_writer writer;
    bool open;                      /* source: pages may go on it */
    /* destination */
    pthread_t thread;
    bool thread_running;
    struct ram_loader loader;
    struct ram_load_counts counts;
    struct gw_error error;
    int rc;
};

/* Source, under the migration lock: the destination's page requests, read
 * by the return-path thread, served first by the migration thread. */
#define POSTCOPY_QUEUE_MAX 4096
struct postcopy_queue {
    struct postcopy_request requests[POSTCOPY_QUEUE_MAX];
    unsigned head, count;
    /* The page after the last one served, on either channel: the
     * background goes on from there (a guest that faulted on a page will
     * most likely touch the next ones soon). */
    bool follow;
    uint32_t follow_block;
    uint64_t follow_page;
};

/* Under the migration lock: request was served, the background follows. */
static inline void postcopy_queue_follow(struct postcopy_queue *queue,
                                         const struct postcopy_request *request)
{
    queue->follow = true;
    queue->follow_block = request->block;
    queue->follow_page = request->first + request->pages;
}

struct migration {
    struct migration_host host;
    struct qmp_server *qmp;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    enum migration_status status;
    char error[GW_ERROR_MSG_MAX];
    struct migration_params params;
    bool cap_events, cap_multifd, cap_channel_header;
    bool cap_pause_before_switchover;
    bool cap_auto_converge;
    bool cap_dirty_limit;
    bool cap_rdma_pin_all;
    bool cap_postcopy_ram, cap_postcopy_blocktime, cap_postcopy_preempt;
    /* migrate-start-postcopy: the precopy loop ends its pass and the
     * switchover goes to postcopy. */
    atomic_bool postcopy_requested;
    bool continue_requested;         /* migrate-continue in pre-switchover */
    struct migration_config config;  /* of the migration in progress: its thread's */
    bool incoming_expected;          /* started with --incoming defer */
    bool is_destination;
    pthread_t thread;
    bool thread_running;
    atomic_bool cancel_requested;
    atomic_bool switchover_requested;  /* x-migrate-switchover-now: finish the pass, stop */
    struct channel channel;          /* fd shut down by cancel, under lock */
    struct channel_listener listener;  /* destination: made by migrate-incoming */
    /* Multifd channels, RAM then device state: fds shut down by cancel, under lock. */
    struct channel *multifd_channels;
    unsigned nr_multifd_channels;
    int cancel_pipe[2];              /* wakes a destination waiting in accept */
    struct uri uri;
    /* mode cpr-transfer: the cpr channel the RAM's descriptors go on, set
     * with uri by migrate's channels; local: this migration is a local
     * update (the thread's copy of the mode, taken when it launched). */
    struct uri cpr_uri;
    bool local;
    /* --object and object-add's objects; the TLS settings of the migration
     * in progress, taken from them when it launched (migration_tls.c) and
     * its main channel's cipher, for query-migrate. */
    struct objects *objects;
    struct tls_config tls;
    char tls_cipher[64], tls_protocol[32];

    /* Destination: RP_ERROR goes out once, from whichever thread fails first. */
    pthread_mutex_t rp_write_lock;
    bool rp_error_sent;
    /* Destination, under lock: READY is going out, so a cancel must leave
     * the main channel open for the RP_ERROR that tells the source. */
    bool ready_sent;

    /* Return path (source): written by the return-path thread under lock. */
    pthread_t rp_thread;
    bool rp_running;
    bool rp_ready, rp_running_seen, rp_closed;
    /* The migration thread reached its end (finish()): a return path that
     * closes no longer needs to wake it. */
    bool source_finishing;
    uint64_t go_sent_us;      /* the migration thread's, when GO went out */
    uint64_t rp_running_us;   /* when the destination's guest ran (RP_RUNNING less its delay) */
    bool rp_refused;                 /* an RP_ERROR record came: it never runs the guest */
    char rp_error[GW_ERROR_MSG_MAX];
    bool rp_postcopy_done;           /* RP_POSTCOPY_DONE came */
    struct postcopy_queue *postcopy_queue;   /* NULL outside postcopy */
    /* Destination: its postcopy RAM while it exists, for query-migrate. */
    struct postcopy_ram *postcopy_ram;
    struct postcopy_preempt preempt;
    /* Postcopy recovery (migration_recover.c), under lock. Source: migrate
     * with resume sets resume_requested (and uri); the return path fills
     * recover_bitmaps from RP_RECV_BITMAP and sets rp_resume_ack with the
     * destination's page counts. Destination: migrate-recover leaves its
     * listener in recover_listener and sets recover_requested. */
    bool resume_requested, recover_requested, rp_resume_ack;
    struct channel_listener recover_listener;
    uint64_t *recover_bitmaps[STREAM_BLOCKS_MAX];
    uint64_t resume_counts[2];
    /* Destination, under rp_write_lock: paused, no main channel to write
     * page requests on (they are asked again after recovery). */
    bool rp_paused;

    struct migration_stats stats;
    uint64_t *bitmaps[STREAM_BLOCKS_MAX];
    struct qmp_command *qmp_commands;  /* registered with the server: outlive it */
    struct hmp_command *hmp_commands;
};

uint64_t migration_now_us(void);

/* Every byte written to the channel goes through here: transferred, and
 * precopy-bytes or downtime-bytes by whether the guest was stopped. */
void migration_count_sent(struct migration *migration, uint64_t bytes, bool vm_stopped);
/* An rdma: channel's settings, from the parameters and capabilities. */
void migration_rdma_options(struct migration *migration, struct rdma_options *options);

/* Status changes go through here: event, wake-ups. Takes the lock. */
void migration_set_status(struct migration *migration, enum migration_status status);
/* Records the first error and moves to failed (or cancelled if cancelling). */
void migration_fail(struct migration *migration, const struct gw_error *err);
static inline bool migration_cancelled(struct migration *migration)
{
    return atomic_load(&migration->cancel_requested);
}
void migration_emit(struct migration *migration, const char *event, json_t *data);
/* Shuts down every multifd channel, so blocked reads and writes return
 * (_locked: the caller holds the migration lock). */
void migration_shutdown_multifd(struct migration *migration);
void migration_shutdown_multifd_locked(struct migration *migration);

/* An RP_ERROR record with the failure's sentence, best effort. */
void migration_send_error(struct channel *channel, const struct gw_error *failure);
/* Destination: the same on the main channel, once per migration, from any
 * thread (a multifd receiver's failure or the main thread's). */
void migration_send_rp_error(struct migration *migration, const struct gw_error *failure);

/* postcopy-preempt (migration_preempt.c). Source: connect the channel
 * (after POSTCOPY_LISTEN: the destination accepts it then); send a
 * request's pages on it (1 sent, 0 the channel is not open: queue it); its
 * CHANNEL_END before END. Destination: accept it and start its receiver;
 * at END, wait for its CHANNEL_END and add its counts. Both: close. */
int preempt_connect(struct migration *migration, uint32_t page_size, struct gw_error *err);
int preempt_send(struct migration *migration, const struct postcopy_request *request,
                 struct gw_error *err);
int preempt_end(struct migration *migration, struct gw_error *err);
struct channel_listener;
struct pending;
int preempt_recv_start(struct migration *migration, struct channel_listener *listener,
                       struct pending *pending, struct postcopy_ram *ram, uint32_t page_size,
                       struct gw_error *err);
int preempt_recv_finish(struct migration *migration, struct ram_load_counts *counts,
                        struct gw_error *err);
void preempt_close(struct migration *migration);
/* Destination, postcopy paused: the receiver stopped and joined, what it
 * loaded added to counts, the channel closed. */
void preempt_recv_abandon(struct migration *migration, struct ram_load_counts *counts);

/* Postcopy recovery's commands (migration_recover_commands.c): migrate
 * with resume, migrate-recover, migrate-pause. */
int migration_resume(struct migration *migration, const char *uri_text, struct gw_error *err);
int migration_qmp_recover(json_t *args, json_t **ret, struct gw_error *err, void *opaque);
int migration_qmp_pause(json_t *args, json_t **ret, struct gw_error *err, void *opaque);

/* Destination: one return-path record, from any thread (in postcopy the
 * fault thread's page requests share the channel with the main thread's
 * answers), under rp_write_lock; -EPIPE while postcopy is paused. */
int migration_rp_write(struct migration *migration, uint32_t type, const void *body,
                       size_t len, struct gw_error *err);

/* Waits, holding the migration lock, for a change or 20 ms at most. */
void migration_wait_changed(struct migration *migration);

/* The source's return path (migration_return_path.c): the thread that
 * reads the destination's answers; a wait until one of them sets *flag
 * (rp_ready, rp_running_seen), fails, or timeout_us passes; and a short
 * wait for the destination's reason after a write failed. */
void *migration_return_path_thread(void *opaque);
int migration_wait_for_destination(struct migration *migration, bool *flag,
                                   uint64_t timeout_us, const char *what, struct gw_error *err);
void migration_wait_for_rp_error(struct migration *migration);

/* The source's dirty-limit (migration_dirty_limit.c), QEMU's capability:
 * when the throttle trigger fires (migration_throttle.h) it asks the host
 * to limit every vCPU to vcpu-dirty-limit, follows changes of the
 * parameters, and ends the limit with the migration, whatever its end.
 * Runs on the migration thread. */
struct dirty_limit_control {
    bool enabled;                    /* the capability, as the migration started */
    bool active;                     /* the host's limit is on */
    uint64_t rate, period_ms;        /* as last asked of the host */
};
void migration_dirty_limit_begin(struct migration *migration, struct dirty_limit_control *control);
int migration_dirty_limit_after_sync(struct migration *migration,
                                     struct dirty_limit_control *control, bool fired,
                                     struct gw_error *err);
void migration_dirty_limit_end(struct migration *migration, struct dirty_limit_control *control);

/* The two sides' threads (migration_source.c, migration_destination.c). */
void *migration_source_thread(void *opaque);
void *migration_destination_thread(void *opaque);

/* query-migrate's object, and "info migrate" made from it
 * (migration_info.c). */
json_t *migration_info(struct migration *migration);
int migration_hmp_info(const char *args, struct hmp_output *out, struct gw_error *err,
                       void *opaque);

/* The parameter commands (migration_params.c): migrate-set-parameters,
 * query-migrate-parameters, info migrate_parameters and
 * migrate_set_parameter; opaque is the migration. */
int migration_qmp_set_parameters(json_t *args, json_t **ret, struct gw_error *err, void *opaque);
int migration_qmp_query_parameters(json_t *args, json_t **ret, struct gw_error *err,
                                   void *opaque);
int migration_hmp_info_parameters(const char *args, struct hmp_output *out, struct gw_error *err,
                                  void *opaque);
int migration_hmp_set_parameter(const char *args, struct hmp_output *out, struct gw_error *err,
                                void *opaque);

/* After postcopy's switch: active, paused or recovering. */
bool migration_in_postcopy(enum migration_status status);
/* SETUP, ACTIVE, PRE_SWITCHOVER, DEVICE, CANCELLING or in postcopy: a
 * migration runs. */
bool migration_in_progress(enum migration_status status);

/* The life cycle (migration_control.c). A URI parsed and checked against
 * what the capabilities and parameters ask of it. */
int migration_parse_uri(struct migration *migration, const char *text, struct uri *uri,
                        struct gw_error *err);
int migration_check_uri(struct migration *migration, const struct uri *uri,
                        struct gw_error *err);

/* The local update, mode cpr-transfer (migration_local.c). check: what the
 * mode asks of migrate's channels and of the RAM (cpr is the cpr channel or
 * NULL); says in *local whether the migration would be a local update (the
 * caller sets migration->local once nothing runs).
 * hand_over: the source's first step, the RAM's descriptors sent on the cpr
 * channel and the destination's answer. The tracker of a local update: RAM
 * stays where it is, so nothing is ever dirty and nothing is tracked. */
int migration_local_check(struct migration *migration, const struct uri *main_uri,
                          const struct uri *cpr, bool *local, struct gw_error *err);
int migration_local_hand_over(struct migration *migration, struct gw_error *err);
extern const struct dirty_tracker_ops migration_local_untracked;
/* -EBUSY with a sentence while a migration is in progress. */
int migration_check_idle(struct migration *migration, struct gw_error *err);

/* fd:NAME: takes the descriptor a QMP client passed with getfd into
 * uri->fd; the caller owns it from then on. Other URIs: nothing to do. */
int migration_take_named_fd(struct migration *migration, struct uri *uri, struct gw_error *err);

/* migrate_cancel: moves an outgoing migration in progress to cancelling and
 * stops it; returns false when there was nothing to cancel. */
bool migration_begin_cancel(struct migration *migration);
int migration_launch(struct migration *migration, const struct uri *uri, bool destination,
                     struct gw_error *err);

/* TLS (migration_tls.c): what tls-creds, tls-hostname and tls-authz ask
 * of a URI (file: and rdma: refused with TLS); the settings a migration
 * launching now takes (references to the objects, in migration->tls); TLS
 * on a channel just connected or accepted, when the migration uses it;
 * the "tls" object of query-migrate; object-add and object-del. */
int migration_tls_check_uri(struct migration *migration, const struct uri *uri,
                            struct gw_error *err);
int migration_tls_prepare(struct migration *migration, const struct uri *uri, bool destination,
                          struct gw_error *err);
void migration_tls_release(struct migration *migration);
int migration_tls_start(struct migration *migration, struct channel *channel, bool destination,
                        struct gw_error *err);
void migration_tls_info(struct migration *migration, json_t *info);
int migration_qmp_object_add(json_t *args, json_t **ret, struct gw_error *err, void *opaque);
int migration_qmp_object_del(json_t *args, json_t **ret, struct gw_error *err, void *opaque);
#endif
