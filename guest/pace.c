/* The schedule behind rate=: after each chunk of pages the guest owes the
 * chunk's share of a second and waits, spinning on the TSC, until that much
 * time has passed since the schedule began. A guest that falls far behind
 * (stopped for a migration's downtime, paused, or asked for more than it can
 * do) starts the schedule again from now instead of bursting to catch up. */
#include "guest.h"

#define MAX_CHUNK_PAGES 1024u       /* 4 MiB: a couple of ms at the guest's full speed */

void pace_init(struct pace *pace, uint64_t tsc_hz, uint32_t rate)
{
    uint32_t pages_per_ms = rate / 4;   /* rate * 256 / 1000, near enough */

    /* A page is 1/256 MiB, so at rate MiB/s it takes tsc_hz / (rate * 256)
     * ticks: tsc_hz / rate in 1/256 ticks. */
    pace->page_cost = divide_64_by_32(tsc_hz, rate);
    /* About a millisecond of pages, in whole blocks of 8 (the fast loop). */
    pace->chunk_pages = pages_per_ms & ~7u;
    if (pace->chunk_pages < 8)
        pace->chunk_pages = 8;
    if (pace->chunk_pages > MAX_CHUNK_PAGES)
        pace->chunk_pages = MAX_CHUNK_PAGES;
    pace->lag_limit = tsc_hz >> 6;  /* 15.6 ms */
    pace_restart(pace);
}

void pace_restart(struct pace *pace)
{
    pace->base = tsc_read();
    pace->owed = 0;
}

/* Rebasing after every chunk keeps owed below one chunk's cost, so nothing
 * overflows however long the guest runs; a TSC that jumps (a migration to
 * another host) looks like a long lag either way and restarts the schedule. */
void pace_after(struct pace *pace, uint32_t pages)
{
    uint64_t due, elapsed;

    pace->owed += pages * pace->page_cost;
    due = pace->owed >> 8;
    elapsed = tsc_read() - pace->base;
    if (elapsed > due + pace->lag_limit) {
        pace_restart(pace);
        return;
    }
    while (elapsed < due)
        elapsed = tsc_read() - pace->base;
    pace->base += due;
    pace->owed -= due << 8;
}
