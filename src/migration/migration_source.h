/* The source's migration thread's state, shared by its two files: the
 * precopy loop and switchover (migration_source.c) and the postcopy phase
 * (migration_postcopy.c). Private to the migration thread. */
#ifndef GODWIT_MIGRATION_SOURCE_H
#define GODWIT_MIGRATION_SOURCE_H

#include "migration_internal.h"
#include "migration_throttle.h"

#include "vmstate/vmstate_internal.h"

struct source {
    struct migration *migration;
    struct stream_writer writer;
    struct ram_walker walker;
    struct multifd_sender *sender;
    struct rdma_sink *rdma_sink;   /* an rdma: channel's, instead of the stream's */
    struct page_sink sink;
    struct vmstate_saver *saver;
    /* The host's tracker, or for a local update none (migration_local.c). */
    const struct dirty_tracker_ops *dirty;
    void *dirty_opaque;
    uint32_t page_size;
    bool tracking;
    bool vm_stopped;           /* by us, so ours to put back on failure */
    bool postcopy;             /* migrate-start-postcopy: the switchover goes to postcopy */
    bool preempt;              /* postcopy-preempt, as the migration started */
    uint64_t postcopy_cursor[STREAM_BLOCKS_MAX];   /* the background's next page per block */
    uint32_t postcopy_block;                       /* the block the background is in */
    uint64_t *postcopy_needed[STREAM_BLOCKS_MAX];  /* dirty at the switch: for recovery */
    uint64_t stop_us;          /* when the guest stopped; 0 while it runs */
    uint64_t expected_downtime_us;
    struct downtime_estimate estimate;   /* the last pass's, and its parts */
    uint64_t pass;             /* the dirty pass being sent, from 1 */
    struct device_pending devices;   /* what the devices held at the last sync */
    unsigned cores;            /* the CPUs the switchover's stages share */
    uint64_t stop_cost_us;     /* the VMM's time to stop the guest, timed at setup */
    uint64_t start_cost_us;    /* and to start it again, timed with it */
    struct dirty_sampler sampler;
    struct throttle_trigger trigger;   /* auto-converge's and dirty-limit's */
    struct dirty_limit_control dirty_limit;   /* dirty-limit's, fired by the same trigger */
    uint64_t pace_start_us, pace_bytes;       /* the rdma sink's max-bandwidth window */
};

/* Writes a record on the main channel and counts its bytes. */
int source_write_record(struct source *source, uint32_t type, const struct iovec *parts,
                        int nparts, struct gw_error *err);
/* END: the counts of pages, zero pages and devices sent. */
int source_send_end(struct source *source, struct gw_error *err);

/* Postcopy (migration_postcopy.c). At setup: POSTCOPY_ADVISE when the
 * capability is on. At the switch, guest stopped, device state sent:
 * POSTCOPY_LISTEN, the discard runs, POSTCOPY_RUN. After RP_RUNNING: the
 * pages still dirty, requested ones first, END, and the destination's
 * RP_POSTCOPY_DONE. */
int postcopy_advise(struct source *source, struct gw_error *err);
int postcopy_send_switch(struct source *source, struct gw_error *err);
int postcopy_send_rest(struct source *source, struct gw_error *err);

/* Recovery (migration_recover.c). Source: keep what the switch left dirty;
 * after a broken link, pause until migrate with resume, reconnect, take
 * the destination's bitmap and counts, and go on (0), pausing again at
 * each failure; < 0 only when the migration is being freed. */
int postcopy_keep_needed(struct source *source, struct gw_error *err);
void postcopy_free_needed(struct source *source);
int postcopy_source_recover(struct source *source, const struct gw_error *failure,
                            struct gw_error *err);
#endif
