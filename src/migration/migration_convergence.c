/* Whether a migration will end: the source thread measures after every
 * pass (the dirty rate, the link's rate, what is left and what no pass can
 * remove) and draws the verdict; query-migrate reads it and works out what
 * is left at this moment. It never decides when to switch over: that stays
 * the precopy loop's rule, which the verdict only predicts. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <godwit/size.h>

#include "util/capped_us.h"

/* The dirty-rate sample: how long it watches the guest, and how often. A
 * pass's own count cannot give the rate: a guest that rewrites the same
 * 39 MiB ten times a second shows 39 MiB dirty after a one-second pass,
 * which reads as 39 MiB/s, whatever the link moves. A window resolves rates
 * up to the working set per window: one that finds (nearly) the whole
 * working set dirty has run out, and the next is half as long, down to
 * 5 ms; one that finds under a quarter of it, twice as long, up to 50 ms.
 * The first is 10 ms: a guest fast enough to fill it is the one whose
 * verdict matters most at once.
 * The link waits for it at most once every two seconds (2.5%), and only
 * after a pass of 500 ms or more. */
#define SAMPLE_WINDOW_MAX_US 50000
#define SAMPLE_WINDOW_MIN_US 5000
#define SAMPLE_WINDOW_FIRST_US 10000
#define SAMPLE_EVERY_US 2000000
#define SAMPLE_MIN_PASS_US (10 * SAMPLE_WINDOW_MAX_US)
#define SAMPLE_FULL_PERCENT 90
/* The trend the ETA assumes is capped here: a pass that keeps more than
 * CONVERGENCE_SHRINK_PERCENT of what was left does not count as shrinking,
 * and the verdict then says so. */
#define TREND_MAX_PERCENT CONVERGENCE_SHRINK_PERCENT

static uint64_t page_size(struct migration *migration)
{
    return migration->host.blocks[0].page_size;
}

static uint64_t ram_total(struct migration *migration)
{
    uint64_t total = 0;

    for (unsigned i = 0; i < migration->host.nr_blocks; i++)
        total += migration->host.blocks[i].size;
    return total;
}

static uint64_t pages_counted(struct migration *migration)
{
    return atomic_load(&migration->stats.normal_pages) + atomic_load(&migration->stats.zero_pages);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* bytes * 10^6 / us, with no overflow below 2^64 bytes/s. */
static uint64_t per_second(uint64_t bytes, uint64_t us)
{
    return us ? (uint64_t)((double)bytes * 1e6 / (double)us) : 0;
}

/* The pass figures query-migrate combines (pass_pages, the base it counts
 * sent pages from, the clock of the estimate) change together: a seqlock
 * keeps a reader from pairing one pass's count with another's base. */
void convergence_pass_begin(struct migration *migration, uint64_t pages, bool synced)
{
    struct convergence *c = &migration->stats.convergence;

    atomic_fetch_add(&c->seq, 1);
    atomic_store(&c->pass_pages, pages);
    atomic_store(&c->pass_sent_base, pages_counted(migration));
    atomic_store(&c->synced_us, synced ? migration_now_us() : 0);
    atomic_fetch_add(&c->seq, 1);
}

/* --- the dirty-rate sample (source thread) --- */

static bool sample_due(struct migration *migration, const struct dirty_sampler *sampler,
                       uint64_t pass_us)
{
    uint64_t now = migration_now_us();

    return pass_us >= SAMPLE_MIN_PASS_US &&
           (!sampler->sampled_us || now - sampler->sampled_us >= SAMPLE_EVERY_US) &&
           !migration_cancelled(migration) && !atomic_load(&migration->switchover_requested);
}

static bool scratch_ready(struct migration *migration, struct dirty_sampler *sampler)
{
    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        if (!sampler->scratch[b])
            sampler->scratch[b] = malloc(words * sizeof(uint64_t));
        if (!sampler->scratch[b])
            return false;
        memset(sampler->scratch[b], 0, words * sizeof(uint64_t));
    }
    return true;
}

static void sleep_until(uint64_t until_us)
{
    uint64_t now = migration_now_us();

    if (now < until_us) {
        struct timespec pause = { (time_t)((until_us - now) / 1000000),
                                  (long)((until_us - now) % 1000000) * 1000 };
        nanosleep(&pause, NULL);
    }
}

/* The next window: shorter after one the working set filled. */
static void adapt_window(struct dirty_sampler *sampler, uint64_t pages, uint64_t working_set)
{
    if (pages * 100 >= working_set * SAMPLE_FULL_PERCENT)
        sampler->window_us = sampler->window_us / 2 > SAMPLE_WINDOW_MIN_US
                             ? sampler->window_us / 2 : SAMPLE_WINDOW_MIN_US;
    else if (pages * 4 < working_set)
        sampler->window_us = sampler->window_us * 2 < SAMPLE_WINDOW_MAX_US
                             ? sampler->window_us * 2 : SAMPLE_WINDOW_MAX_US;
}

/* The pages the guest dirties in a short window. The sync has just put
 * everything dirty into the bitmaps; re-arming those pages makes the next
 * read show only what the guest writes from now on. Nothing is lost: the
 * pages stay set in the bitmaps, and the sample's own finds are added to
 * them, so the next pass sends both (a dirty tracker may re-arm a page any
 * time before it is read: dirty.h). */
int convergence_sample(struct migration *migration, struct dirty_sampler *sampler,
                       uint64_t pass_us, uint64_t dirty_pages, struct gw_error *err)
{
    const struct dirty_tracker_ops *dirty = migration->host.dirty;
    struct dirty_sync_times times = { 0 };   /* the sample's own: not a sync's */
    uint64_t pages = 0, started, rate;
    int rc;

    if (!sample_due(migration, sampler, pass_us) || !scratch_ready(migration, sampler))
        return 0;   /* no memory for the scratch: the pass's own count will do */
    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        rc = dirty->clear(migration->host.dirty_opaque, b, 0, migration->bitmaps[b],
                          (unsigned)words, err);
        if (rc < 0)
            return rc;
    }
    if (!sampler->window_us)
        sampler->window_us = SAMPLE_WINDOW_FIRST_US;
    started = migration_now_us();
    sleep_until(started + sampler->window_us);
    for (unsigned b = 0; b < migration->host.nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&migration->host.blocks[b]);
        rc = dirty->sync(migration->host.dirty_opaque, b, sampler->scratch[b], &times, err);
        if (rc < 0)
            return rc;
        for (uint64_t w = 0; w < words; w++) {
            pages += (uint64_t)__builtin_popcountll(sampler->scratch[b][w]);
            migration->bitmaps[b][w] |= sampler->scratch[b][w];
        }
    }
    sampler->sampled_us = migration_now_us();
    rate = per_second(pages * page_size(migration), sampler->sampled_us - started);
    /* The larger of the last two samples: a vCPU the host did not run for
     * the few ms of one sample does not make the guest look idle. */
    atomic_store(&migration->stats.convergence.sampled_rate,
                 rate > sampler->last_rate ? rate : sampler->last_rate);
    sampler->last_rate = rate;
    uint64_t working_set = atomic_load(&migration->stats.convergence.working_set) /
                           page_size(migration);
    working_set = working_set > dirty_pages ? working_set : dirty_pages;
    /* A window the working set filled tells only that the guest dirties
     * at least this fast. */
    atomic_store(&migration->stats.convergence.rate_at_least,
                 pages * 100 >= working_set * SAMPLE_FULL_PERCENT);
    adapt_window(sampler, pages, working_set);
    return 0;
}

void dirty_sampler_free(struct dirty_sampler *sampler)
{
    for (unsigned b = 0; b < STREAM_BLOCKS_MAX; b++) {
        free(sampler->scratch[b]);
        sampler->scratch[b] = NULL;
    }
}

/* --- the verdict (source thread) --- */

/* Device state no pass can send while the guest runs: its stop-copy size
 * beyond what it still has for precopy. */
static uint64_t device_floor(struct migration *migration)
{
    uint64_t stopcopy = atomic_load(&migration->stats.device_stopcopy_pending);
    uint64_t precopy = atomic_load(&migration->stats.device_precopy_pending);

    return stopcopy > precopy ? stopcopy - precopy : 0;
}

static uint64_t downtime_us(uint64_t bytes, uint64_t bandwidth)
{
    return capped_us((double)bytes * 1e6 / (double)(bandwidth ? bandwidth : 1));
}

/* A guest that dirties pages faster than the link sends them keeps what it
 * dirties (its working set) dirty after every pass: that part never goes.
 * Slower, each pass leaves a smaller part behind, down to nothing. */
static enum convergence_reason judge(const struct pass_figures *pass, uint64_t rate,
                                     uint64_t link, uint64_t floor, uint64_t previous_left)
{
    if (pass->expected_downtime_us <= pass->limit_us)
        return REASON_FITS;
    if (downtime_us(floor, pass->switchover_bandwidth) > pass->limit_us)
        return REASON_FLOOR;
    /* The precopy loop's own test: a pass that does not take 10% off what
     * is left brings the switchover no closer. */
    if (previous_left && pass->left_bytes * 100 >= previous_left * CONVERGENCE_SHRINK_PERCENT)
        return REASON_NO_SHRINK;
    return rate >= link ? REASON_SMALL_SET : REASON_SHRINKS;
}

void convergence_after_pass(struct migration *migration, const struct pass_figures *pass)
{
    struct convergence *c = &migration->stats.convergence;
    uint64_t dirty_bytes = pass->dirty_pages * page_size(migration);
    uint64_t link = atomic_load(&migration->stats.bandwidth);
    uint64_t rate = per_second(dirty_bytes, pass->time_us);
    uint64_t previous_left = atomic_load(&c->passes) ? atomic_load(&c->left) : 0;
    /* What is left after this pass per 100 bytes left before it; before the
     * first pass, what was left is what it sent. */
    uint64_t before = previous_left ? previous_left : pass->sent_bytes;
    uint64_t trend = before ? (uint64_t)((double)pass->left_bytes * 100 / (double)before) : 100;
    uint64_t floor;
    enum convergence_reason reason;

    /* The sample sees the rate; a pass only a lower bound of it. */
    if (atomic_load(&c->sampled_rate) > rate)
        rate = atomic_load(&c->sampled_rate);
    if (!link)
        link = per_second(pass->sent_bytes, pass->time_us);
    floor = device_floor(migration) + (rate >= link ? dirty_bytes : 0);
    reason = judge(pass, rate, link, floor, previous_left);
    if (dirty_bytes > atomic_load(&c->working_set))
        atomic_store(&c->working_set, dirty_bytes);
    atomic_store(&c->dirty_rate, rate);
    atomic_store(&c->bandwidth, link);
    atomic_store(&c->pass_rate, per_second(pass->sent_bytes, pass->time_us));
    atomic_store(&c->left, pass->left_bytes);
    atomic_store(&c->left_before, previous_left);
    atomic_store(&c->floor, floor);
    atomic_store(&c->floor_ms, (downtime_us(floor, pass->switchover_bandwidth) + 999) / 1000);
    atomic_store(&c->trend_percent, trend);
    atomic_store(&c->limit_ms, pass->limit_us / 1000);
    atomic_store(&c->expected_ms, (pass->expected_downtime_us + 999) / 1000);
    atomic_store(&c->reason, reason);
    atomic_store(&c->state, reason == REASON_FLOOR || reason == REASON_NO_SHRINK
                                ? CONVERGENCE_NOT_CONVERGING : CONVERGENCE_CONVERGING);
    atomic_fetch_add(&c->passes, 1);
}

/* --- query-migrate (monitor thread) --- */

/* What a pass leaves to send if it ended now: its pages not written yet,
 * and an estimate of the pages the guest has dirtied since the last sync,
 * which only the next sync will count. The estimate is the dirty rate times
 * the time since that sync, and never more than the guest's working set
 * (the most any sync found dirty), nor more than the pages it can have
 * dirtied again: those this pass already sent, and what of the working set
 * lies outside this pass. Before the first sync nothing is measured, and
 * the figure is the pages not sent yet, as QEMU's. */
struct ram_left {
    uint64_t unsent;    /* bytes of the pass not written yet */
    uint64_t estimate;  /* bytes dirtied since the last sync, estimated */
};

static struct ram_left ram_left_now(struct migration *migration, bool vm_running)
{
    struct convergence *c = &migration->stats.convergence;
    uint64_t page = page_size(migration), pass_pages, base, synced, seq, sent, estimate;

    do {
        seq = atomic_load(&c->seq);
        pass_pages = atomic_load(&c->pass_pages);
        base = atomic_load(&c->pass_sent_base);
        synced = atomic_load(&c->synced_us);
    } while ((seq & 1) || seq != atomic_load(&c->seq));
    sent = pages_counted(migration);
    sent = min_u64(sent > base ? sent - base : 0, pass_pages);
    if (!vm_running || !synced)
        return (struct ram_left){ (pass_pages - sent) * page, 0 };
    uint64_t working_set = atomic_load(&c->working_set);
    uint64_t outside = working_set > pass_pages * page ? working_set - pass_pages * page : 0;
    double since = (double)(migration_now_us() - synced) / 1e6;
    estimate = (uint64_t)((double)atomic_load(&c->dirty_rate) * since);
    estimate = min_u64(min_u64(estimate, working_set), sent * page + outside);
    estimate = min_u64(estimate, ram_total(migration) - (pass_pages - sent) * page);
    return (struct ram_left){ (pass_pages - sent) * page, estimate };
}

uint64_t convergence_ram_remaining(struct migration *migration, bool vm_running)
{
    struct ram_left left = ram_left_now(migration, vm_running);

    return left.unsent + left.estimate;
}

/* The throttles acting on the guest now. The verdict reads them here
 * alone, so a throttle the engine gains (auto-converge's
 * cpu-throttle-percentage, dirty-limit's time per round) is wired in one
 * place. Auto-converge's is (migration_throttle.c); dirty-limit's is the
 * host's figure while the limit holds the guest: 0 until a vCPU has had
 * to sleep. */
struct throttle_view {
    uint64_t cpu_percent;         /* auto-converge: share of each vCPU's time taken */
    uint64_t dirty_limit_us;      /* dirty-limit: throttle time per round */
};

static void throttle_now(struct migration *migration, struct throttle_view *view)
{
    uint64_t ring_full_us;

    *view = (struct throttle_view){
        .cpu_percent = atomic_load(&migration->stats.cpu_throttle_percentage),
    };
    if (atomic_load(&migration->stats.dirty_limit_on) && migration->host.dirty_limit_stats)
        migration->host.dirty_limit_stats(migration->host.opaque, &view->dirty_limit_us,
                                          &ring_full_us);
}

static const char *rate_text(uint64_t bytes_per_second, char *buf, size_t len)
{
    double mb = (double)bytes_per_second / 1e6;

    snprintf(buf, len, mb >= 100 || mb == 0 ? "%.0f MB/s" : "%.1f MB/s", mb);
    return buf;
}

#define FIXES "raise max-bandwidth or downtime-limit, or turn on auto-converge or dirty-limit"

/* The verdict in one sentence, from the same figures query-migrate shows. */
static void reason_text(struct migration *migration, char *buf, size_t len)
{
    struct convergence *c = &migration->stats.convergence;
    uint64_t link = atomic_load(&c->bandwidth), floor = atomic_load(&c->floor);
    uint64_t limit = atomic_load(&c->limit_ms), left = atomic_load(&c->left);
    uint64_t expected = atomic_load(&c->expected_ms);
    char dirty[48], moves[32], a[32], b[32];

    rate_text(atomic_load(&c->dirty_rate), a, sizeof(a));
    snprintf(dirty, sizeof(dirty), "%s%s", atomic_load(&c->rate_at_least) ? "at least " : "", a);
    rate_text(link, moves, sizeof(moves));
    switch ((enum convergence_reason)atomic_load(&c->reason)) {
    case REASON_FITS:
        snprintf(buf, len, "converging: what is left (%s) would take %" PRIu64 " ms stopped, "
                 "within downtime-limit %" PRIu64 " ms", size_format(left, a, sizeof(a)),
                 expected, limit);
        return;
    case REASON_SHRINKS:
        if (atomic_load(&c->passes) > 1)
            snprintf(buf, len, "converging: the guest dirties %s, the link moves %s; the last "
                     "pass left %" PRIu64 "%% of what was left before it", dirty, moves,
                     atomic_load(&c->trend_percent));
        else
            snprintf(buf, len, "converging: the guest dirties %s, the link moves %s; the first "
                     "pass left %" PRIu64 "%% of what it sent to send again", dirty, moves,
                     atomic_load(&c->trend_percent));
        return;
    case REASON_SMALL_SET:
        snprintf(buf, len, "converging: the guest dirties %s, more than the link moves (%s), "
                 "but only %s of it, which fits downtime-limit %" PRIu64 " ms", dirty, moves,
                 size_format(floor, a, sizeof(a)), limit);
        return;
    case REASON_FLOOR:
        if (floor <= device_floor(migration))
            snprintf(buf, len, "not converging: the devices' stop-copy state alone (%s) "
                     "would take more than downtime-limit %" PRIu64 " ms at %s; raise "
                     "downtime-limit or avail-switchover-bandwidth",
                     size_format(floor, a, sizeof(a)), limit, moves);
        else
            snprintf(buf, len, "not converging: the guest dirties %s, the link moves %s: the "
                     "%s it keeps dirty would take %" PRIu64 " ms stopped, above "
                     "downtime-limit %" PRIu64 " ms; " FIXES, dirty, moves,
                     size_format(floor, a, sizeof(a)), atomic_load(&c->floor_ms), limit);
        return;
    case REASON_NO_SHRINK:
        snprintf(buf, len, "not converging: the last pass left %s to send, no less than the "
                 "pass before (%s); the guest dirties %s, the link moves %s; " FIXES,
                 size_format(left, a, sizeof(a)),
                 size_format(atomic_load(&c->left_before), b, sizeof(b)), dirty, moves);
        return;
    }
    snprintf(buf, len, "no verdict");
}

/* How long until completion, in ms, from the trend of what is left per
 * pass: the pass running now sends its unsent pages and the devices'
 * precopy data; each pass after it leaves the trend's share t of what the
 * one before left (L), so all of them together send L t / (1 - t) (more
 * passes than the loop will run: an ETA that errs long); then the guest
 * stops for at most the downtime expected. t is at least the dirty rate
 * over the link's when the guest dirties slower than the link sends. Passes go at the rate the last
 * one kept up, its sync included. A migration that fits downtime-limit
 * and no longer shrinks switches over after the pass running now. */
static json_int_t eta_ms(struct migration *migration)
{
    struct convergence *c = &migration->stats.convergence;
    struct ram_left now = ram_left_now(migration, true);
    double rate = (double)atomic_load(&c->pass_rate), left = (double)atomic_load(&c->left);
    double trend = (double)atomic_load(&c->trend_percent) / 100;
    double trend_max = (double)TREND_MAX_PERCENT / 100;
    double dirty = (double)atomic_load(&c->dirty_rate), link = (double)atomic_load(&c->bandwidth);
    uint64_t expected = atomic_load(&c->expected_ms), limit = atomic_load(&c->limit_ms);
    bool last_pass = expected <= limit && trend >= trend_max;
    double ms;

    if (rate <= 0)
        return -1;
    ms = (double)(now.unsent + atomic_load(&migration->stats.device_precopy_pending)) * 1e3 /
         rate;
    if (!last_pass) {
        /* A guest dirtying slower than the link sends leaves about that
         * share of each pass to the next, whatever one pass showed. */
        if (dirty < link && dirty / link > trend)
            trend = dirty / link;
        trend = trend < trend_max ? trend : trend_max;
        ms += left * trend / (1 - trend) * 1e3 / rate;
    }
    ms += (double)(expected < limit ? expected : limit);
    return ms >= 0x1p62 ? (json_int_t)1 << 62 : (json_int_t)ms;
}

json_t *convergence_info(struct migration *migration, bool in_progress)
{
    struct convergence *c = &migration->stats.convergence;
    enum convergence_state state = atomic_load(&c->state);
    struct throttle_view throttle;
    char reason[512], prefixed[600];
    const char *text = reason;
    json_t *info;

    if (state == CONVERGENCE_UNKNOWN)
        return NULL;
    throttle_now(migration, &throttle);
    reason_text(migration, reason, sizeof(reason));
    info = json_pack("{s:s,s:I,s:b,s:I,s:I,s:I}",
                     "state", state == CONVERGENCE_CONVERGING ? "converging" : "not-converging",
                     "dirty-rate", (json_int_t)atomic_load(&c->dirty_rate),
                     "dirty-rate-at-least", (int)atomic_load(&c->rate_at_least),
                     "bandwidth", (json_int_t)atomic_load(&c->bandwidth),
                     "trend-percentage", (json_int_t)atomic_load(&c->trend_percent),
                     "working-set", (json_int_t)atomic_load(&c->working_set));
    if (throttle.cpu_percent || throttle.dirty_limit_us) {
        json_object_set_new(info, "state", json_string("throttled"));
        if (throttle.cpu_percent) {
            json_object_set_new(info, "throttle-percentage",
                                json_integer((json_int_t)throttle.cpu_percent));
            snprintf(prefixed, sizeof(prefixed), "throttled %" PRIu64 "%% (auto-converge); %s",
                     throttle.cpu_percent, reason);
        } else {
            snprintf(prefixed, sizeof(prefixed), "throttled (dirty-limit, %" PRIu64 " us per "
                     "round); %s", throttle.dirty_limit_us, reason);
        }
        text = prefixed;
    }
    json_object_set_new(info, "reason", json_string(text));
    if (in_progress && state == CONVERGENCE_CONVERGING && eta_ms(migration) >= 0)
        json_object_set_new(info, "eta", json_integer(eta_ms(migration)));
    return info;
}
