/* The destination's record loop over the main channel: the order the
 * stream must follow (RAM_BLOCKS, CONFIG, then pages and devices, END
 * last) and the checks at END that nothing was lost on the way. Used by
 * the incoming thread and the stream fuzzer alike. */
#ifndef GODWIT_MIGRATION_LOAD_H
#define GODWIT_MIGRATION_LOAD_H

#include "migration_internal.h"
#include "vmstate/vmstate_internal.h"

struct multifd_recv;

struct load_state {
    struct ram_loader ram;          /* shared by pointer with the multifd receivers */
    struct ram_load_counts counts;  /* the main channel's; the receivers' added at END */
    struct device_loader *devices;
    /* RUN_STATE: none yet (an older source: the guest ran), or what it said. */
    bool run_state_seen, source_paused;
    /* The settings CONFIG must match (the fuzzer's: all defaults), and the
     * multifd channels' side, started by after_config once CONFIG is read. */
    struct migration_config config;
    int (*after_config)(void *opaque, struct load_state *state, struct gw_error *err);
    void *after_config_opaque;
    struct multifd_recv *multifd;
    /* Postcopy: the destination's RAM when it has the capability (NULL: a
     * source that advises postcopy is refused); where the stream is in the
     * switch; the devices loaded at POSTCOPY_RUN, for END's check. */
    struct postcopy_ram *postcopy;
    bool postcopy_advised, postcopy_listening;
    uint64_t devices_loaded;
    /* postcopy-preempt: this destination's capability; the source's use of
     * it (ADVISE). The incoming side's part at LISTEN (the channels) and,
     * the preempt channel's end before END's counts (after_config_opaque). */
    bool postcopy_preempt, preempt_advised;
    int vcpu_tids[POSTCOPY_VCPUS_MAX];   /* the VMM's vCPU threads, for their waits */
    unsigned nr_vcpus;
    int (*postcopy_listen)(void *opaque, struct load_state *state, struct gw_error *err);
    int (*preempt_finish)(void *opaque, struct load_state *state, struct gw_error *err);
};

/* on_failure: see device_loader_new. */
int load_state_init(struct load_state *state, const struct ram_block *blocks,
                    unsigned nr_blocks, const struct page_landing *landing,
                    struct device_registry *devices,
                    void (*on_failure)(void *opaque, const struct gw_error *err),
                    void *opaque, struct gw_error *err);
void load_state_free(struct load_state *state);
/* Reads records until END; returns 0 when END arrived and every count and
 * device checks out, or 1 at POSTCOPY_RUN: every device is loaded and the
 * guest may run here once the source says GO, while
 * migration_load_postcopy reads the rest of its pages up to END. */
#define LOAD_POSTCOPY_RUN 1
int migration_load_stream(struct stream_reader *reader, struct load_state *state,
                          struct gw_error *err);
int migration_load_postcopy(struct stream_reader *reader, struct load_state *state,
                            struct gw_error *err);

/* Postcopy recovery (migration_recover.c). Whether a failure is the
 * link's (pause) rather than a protocol error (fail); the destination's
 * pause, until migrate-recover and a new connection from the source, then
 * its half of the handshake: 0 when postcopy can go on with *reader on the
 * new channel, < 0 only when the VM is ending. */
bool postcopy_link_broke(int rc);
int postcopy_dest_recover(struct migration *migration, struct stream_reader *reader,
                          struct load_state *state, const struct gw_error *failure,
                          struct gw_error *err);

#endif
