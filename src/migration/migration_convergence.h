/* Whether a migration will end, as query-migrate tells it (ours,
 * docs/qmp.md): what is left to send at every moment, the guest's dirty
 * rate beside the link's bandwidth, and a verdict drawn from them and
 * downtime-limit. The migration thread measures and decides after every
 * pass; query-migrate only reads the atomics and does the arithmetic of
 * "now". Private to libgodwit. */
#ifndef GODWIT_MIGRATION_CONVERGENCE_H
#define GODWIT_MIGRATION_CONVERGENCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <godwit/error.h>
#include <godwit/stream.h>

struct migration;

/* The precopy loop's rules, which the verdict predicts. Below
 * CONVERGENCE_SMALL_DOWNTIME_US, what is left to send while stopped counts
 * as "small": stop now, whatever the limit, since more passes cannot make
 * it much smaller. A pass must shrink what is left (dirty RAM and device
 * state) to CONVERGENCE_SHRINK_PERCENT of what it was to be worth another. */
#define CONVERGENCE_SMALL_DOWNTIME_US 2000
#define CONVERGENCE_SHRINK_PERCENT 90

enum convergence_state {
    CONVERGENCE_UNKNOWN,        /* the first pass has not ended: nothing measured */
    CONVERGENCE_CONVERGING,
    CONVERGENCE_NOT_CONVERGING,
};

/* Why the verdict is what it is; query-migrate words it. */
enum convergence_reason {
    REASON_FITS,            /* what is left fits downtime-limit now */
    REASON_SHRINKS,         /* the guest dirties slower than the link sends */
    REASON_SMALL_SET,       /* it dirties faster, but a set small enough to fit */
    REASON_FLOOR,           /* what stays dirty, however many passes, does not fit */
    REASON_NO_SHRINK,       /* the last pass did not shrink what is left by 10% */
};

/* In struct migration_stats, so a new migration starts from zero. Written
 * by the migration thread, read by query-migrate. */
struct convergence {
    _Atomic uint64_t seq;              /* odd while the three below change */
    _Atomic uint64_t pass_pages;       /* pages the pass running now set out to send */
    _Atomic uint64_t pass_sent_base;   /* normal + zero pages counted when it began */
    _Atomic uint64_t synced_us;        /* when the last sync ended; 0 before the first */
    _Atomic uint64_t sampled_rate;     /* bytes/s the last sample saw the guest dirty */
    atomic_bool rate_at_least;         /* the last sample's window filled: a lower bound */
    _Atomic uint64_t dirty_rate;       /* bytes/s: the sample's, or the pass's if more */
    _Atomic uint64_t bandwidth;        /* bytes/s the link moved in the last pass */
    _Atomic uint64_t pass_rate;        /* bytes/s over the last pass, its sync included */
    _Atomic uint64_t working_set;      /* bytes: the most RAM a sync has found dirty */
    _Atomic uint64_t left, left_before;  /* stop-copy bytes after the last two passes */
    _Atomic uint64_t floor;            /* stop-copy bytes that more passes cannot remove */
    _Atomic uint64_t floor_ms;         /* ... and the downtime they alone would cost */
    _Atomic uint64_t trend_percent;    /* left after the last pass per 100 left before */
    _Atomic uint64_t limit_ms, expected_ms;  /* downtime-limit and the estimate, then */
    _Atomic uint32_t state, reason;
    _Atomic uint64_t passes;           /* passes the verdict has seen */
};

/* The source thread's own: scratch bitmaps for the dirty-rate sample. */
struct dirty_sampler {
    uint64_t *scratch[STREAM_BLOCKS_MAX];
    uint64_t sampled_us;    /* when the last sample ended; 0: never */
    uint64_t last_rate;     /* bytes/s the last sample saw */
    uint64_t window_us;     /* the next sample's window; 0: not chosen yet */
};

/* What one pass did, for the verdict. */
struct pass_figures {
    uint64_t dirty_pages;       /* found dirty at its sync */
    uint64_t sent_bytes;        /* written during it */
    uint64_t time_us;           /* from its start to the end of its sync */
    uint64_t left_bytes;        /* stop-copy bytes after it: dirty RAM and device state */
    uint64_t expected_downtime_us;
    uint64_t limit_us;          /* downtime-limit */
    uint64_t switchover_bandwidth;  /* bytes/s the estimate divides by */
};

/* A pass begins with pages in the bitmaps (the source thread); synced:
 * a sync has just counted them (every pass but the first), which starts
 * the clock of the estimate of what the guest dirties meanwhile. */
void convergence_pass_begin(struct migration *migration, uint64_t pages, bool synced);

/* Right after a pass's sync: when due, measures how fast the guest dirties
 * pages over a short window (the bitmaps get what it dirtied meanwhile).
 * pass_us is how long the pass took, dirty_pages what its sync found. */
int convergence_sample(struct migration *migration, struct dirty_sampler *sampler,
                       uint64_t pass_us, uint64_t dirty_pages, struct gw_error *err);
void dirty_sampler_free(struct dirty_sampler *sampler);

/* After a pass's sync (and sample): the verdict. */
void convergence_after_pass(struct migration *migration, const struct pass_figures *pass);

/* query-migrate: RAM still to send if the pass ended now, in bytes. */
uint64_t convergence_ram_remaining(struct migration *migration, bool vm_running);
/* query-migrate's "convergence" object, or NULL before the first verdict;
 * the ETA only while in_progress. */
json_t *convergence_info(struct migration *migration, bool in_progress);

#endif
