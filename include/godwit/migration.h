/* The migration engine: precopy live migration of RAM and device state, as
 * a source or a destination, driven through QMP. The VMM describes itself in
 * a migration_host and never calls into the engine's threads otherwise.
 *
 * Threads: the monitor thread (the VMM's event loop) runs QMP commands; one
 * migration thread per side runs the migration; on the source a return-path
 * thread reads the destination's answers. */
#ifndef GODWIT_MIGRATION_H
#define GODWIT_MIGRATION_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/device.h>
#include <godwit/dirty.h>
#include <godwit/error.h>
#include <godwit/qmp.h>
#include <godwit/ram.h>
#include <godwit/uri.h>

/* What the VMM gives the engine. The callbacks may be called from the
 * migration thread. */
struct migration_host {
    void *opaque;
    const struct ram_block *blocks;
    unsigned nr_blocks;
    const struct dirty_tracker_ops *dirty;
    void *dirty_opaque;
    struct device_registry *devices;
    /* Destination: guest RAM is all zero before the migration (fresh
     * memory, nothing loaded), so zero pages never written need no work. */
    bool ram_zero_at_start;
    /* Destination: guest RAM is the source's own memory, mapped from the
     * descriptors its cpr channel passed (a local update, cpr.h): the
     * stream must be in mode cpr-transfer and carry no page. */
    bool ram_from_source;

    /* Source: stops every vCPU for the switchover (run state
     * "finish-migrate", whatever the state was); returns when none runs.
     * Returns whether the guest was running: the destination is told
     * (RUN_STATE) and runs it only if it ran here, as QEMU does. */
    bool (*stop_for_switchover)(void *opaque);
    /* Source, optional: how long stop_for_switchover takes to stop a
     * running guest, in us, timed now (the VMM may stop its vCPUs and start
     * them again at once: the guest loses that long and sees nothing else;
     * no STOP or RESUME event); and in *start_us how long starting them
     * took until they all ran again, this host's stand-in for the
     * destination's start. 0 when it cannot tell. Asked once, at setup:
     * the downtime estimate includes both. */
    uint64_t (*time_stop)(void *opaque, uint64_t *start_us);
    /* Source, optional (the auto-converge capability needs it): slow every
     * vCPU down so that it runs only (100 - percent) % of the time, as
     * QEMU's cpu throttle (each vCPU sleeps percent % of every period);
     * 0 ends it. Called from the migration thread at each step up, and with
     * 0 once the migration has ended, whether completed, failed or
     * cancelled. */
    void (*set_cpu_throttle)(void *opaque, unsigned percent);
    /* Source: the migration completed; the VM stays stopped ("postmigrate"). */
    void (*source_completed)(void *opaque);
    /* Source, a local update (mode cpr-transfer), after source_completed:
     * the new process owns the guest's memory; the VMM unmaps it and never
     * touches it again. */
    void (*release_ram)(void *opaque);
    /* Source: a failure or cancel after stop_for_switchover: put the VM back
     * in the run state it had before it (a guest that ran runs again; a
     * paused one stays paused, and takes "cont" again). */
    void (*rollback)(void *opaque);
    /* Destination: everything is loaded and the source said GO: the guest
     * is this side's. source_running: it ran on the source at switchover (a
     * stream without RUN_STATE counts as running). The VMM runs it, or keeps
     * it paused if it did not run there or if it was told to wait for "cont"
     * (QEMU's -S, how libvirt drives every migration). */
    void (*incoming_completed)(void *opaque, bool source_running);
    /* Destination, optional: after incoming_completed, when the guest ran
     * again (CLOCK_MONOTONIC, us: every vCPU back in the guest), 0 when it
     * stayed paused or the VMM cannot tell. The source's downtime then ends
     * there, not when a busy host let the migration thread answer. */
    uint64_t (*incoming_resumed_us)(void *opaque);
    /* Destination: the incoming migration failed; the VMM must not run the
     * guest and should end with an error. */
    void (*incoming_failed)(void *opaque, const char *message);
    /* Source, QEMU's dirty-limit capability: limits every vCPU's dirty page
     * rate to mb_per_s MB/s (QEMU's unit, MiB/s), measured over period_ms,
     * by making a vCPU that dirties faster sleep; a vCPU that does not
     * dirty is not slowed. Called again, it changes the rate or period.
     * NULL where the VMM cannot (godwit-vm without a dirty ring): the
     * engine then refuses the capability. */
    int (*dirty_limit_start)(void *opaque, uint64_t mb_per_s, uint64_t period_ms,
                             struct gw_error *err);
    /* Ends the limit: the migration completed, failed or was cancelled. */
    void (*dirty_limit_stop)(void *opaque);
    /* QEMU's query-migrate figures while the limit is on, in us: the longest
     * sleep per ring-full of a limited vCPU, and how long a vCPU takes to
     * fill its dirty ring when it does not sleep. */
    void (*dirty_limit_stats)(void *opaque, uint64_t *throttle_us_per_round,
                              uint64_t *ring_full_us);
    /* Destination: how long to wait for the source's GO after READY, in ms;
     * 0 means MIGRATION_GO_TIMEOUT_MS. A source that says nothing in that
     * time has stalled or vanished: the destination fails and never runs
     * the guest (docs/stream.md). */
    unsigned go_timeout_ms;
    /* Destination, optional: the kernel thread ids of the vCPU threads
     * (tids[i] for vCPU i), at most max; returns how many. Postcopy then
     * tells which of the threads waiting for pages are vCPUs
     * (postcopy-vcpu-blocktime, and postcopy-blocktime as QEMU counts it:
     * the time every vCPU waited at once). */
    unsigned (*vcpu_threads)(void *opaque, int *tids, unsigned max);
};

#define MIGRATION_GO_TIMEOUT_MS 10000

/* QEMU's MigrationStatus names. */
enum migration_status {
    MIGRATION_NONE,
    MIGRATION_SETUP,
    MIGRATION_ACTIVE,
    MIGRATION_DEVICE,      /* stop-and-copy: VM stopped, last pages and devices */
    MIGRATION_CANCELLING,
    MIGRATION_CANCELLED,
    MIGRATION_FAILED,
    MIGRATION_COMPLETED,
    /* pause-before-switchover: the guest is stopped and nothing of the
     * stop-copy phase is sent until migrate-continue. */
    MIGRATION_PRE_SWITCHOVER,
    /* postcopy: the guest runs on the destination, which pulls the pages
     * it still lacks; the source sends them and answers its requests. */
    MIGRATION_POSTCOPY_ACTIVE,
    /* postcopy's link broke: both sides wait, the guest's missing pages
     * with them, for migrate-recover (destination) and migrate with
     * resume (source); then the new connection is set up, the sides
     * exchange what the destination has, and postcopy goes on. */
    MIGRATION_POSTCOPY_PAUSED,
    MIGRATION_POSTCOPY_RECOVER_SETUP,
    MIGRATION_POSTCOPY_RECOVER,
};

const char *migration_status_name(enum migration_status status);

struct migration;

struct migration *migration_new(const struct migration_host *host, struct qmp_server *qmp,
                                struct gw_error *err);
/* Registers migrate, migrate-incoming, migrate_cancel, the parameter and
 * capability commands, query-migrate and the HMP commands. */
int migration_register_monitor(struct migration *migration, struct gw_error *err);
/* Makes an object from godwit-vm's --object TYPE,id=ID,... text (the TLS
 * credentials and authz-simple, include/godwit/objects.h), as object-add. */
int migration_object_add(struct migration *migration, const char *text, struct gw_error *err);
/* Starts waiting for an incoming migration (--incoming URI). */
int migration_incoming(struct migration *migration, const char *uri, struct gw_error *err);
/* Marks this side as a destination waiting for migrate-incoming (--incoming defer). */
void migration_expect_incoming(struct migration *migration);
/* Cancels whatever runs, joins the threads, frees. */
void migration_free(struct migration *migration);

enum migration_status migration_status(struct migration *migration);

#endif
