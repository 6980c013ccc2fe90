// SPDX-License-Identifier: GPL-2.0
/*
 * godwit's in-kernel workload for the Linux guest (issue 14). Built into the
 * kernel as init/godwit.c by scripts/build-linux-guest: user space cannot run
 * on this machine's KVM, so the work that migration must not disturb lives in
 * a late initcall that never returns.
 *
 * It dirties `godwit.rate` pages a second over `godwit.mib` MiB and prints one
 * line every `godwit.interval_ms` of its own clock:
 *   godwit-workload: seq=N uptime_ms=T verify=ok|MISMATCH dirtied=D
 * Every page holds its generation (a global write counter) and a hash of its
 * index and that generation: a page from another place or a torn copy fails
 * the hash, a stale page (an older generation) fails the running sum of
 * generations. Each write touches two words only: the guest's code is
 * emulated at about 2 M instructions a second here, so per-page work is kept
 * tiny, yet every write dirties a whole page for the migration.
 */
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
#include <linux/sched.h>

/* The command line names these godwit.mib, godwit.rate, godwit.interval_ms. */
static unsigned int mib = 16;
module_param(mib, uint, 0444);
MODULE_PARM_DESC(mib, "MiB of memory the workload owns and dirties (1-1024)");
static unsigned int rate = 2560;
module_param(rate, uint, 0444);
MODULE_PARM_DESC(rate, "pages dirtied per second of guest time (0: none)");
static unsigned int interval_ms = 1000;
module_param(interval_ms, uint, 0444);
MODULE_PARM_DESC(interval_ms, "milliseconds between two verify lines (10-60000)");

#define CHUNK_ORDER 10            /* 4 MiB: the buddy allocator's largest block here */
#define CHUNK_PAGES (1UL << CHUNK_ORDER)
#define MAX_CHUNKS 256            /* 1 GiB */

static void *chunks[MAX_CHUNKS];
static unsigned long nr_pages;
static u64 generation;            /* writes done; page words hold one of these */
static u64 generation_sum;        /* what the pages' generations must add up to */
static unsigned long cursor;      /* next page to write */

static u64 *page_words(unsigned long page)
{
	return (u64 *)((char *)chunks[page / CHUNK_PAGES] + (page % CHUNK_PAGES) * PAGE_SIZE);
}

static u64 page_hash(unsigned long page, u64 gen)
{
	u64 x = (u64)page * 0x9e3779b97f4a7c15ULL ^ gen;

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 32);
}

static void write_page(unsigned long page)
{
	u64 *words = page_words(page);

	generation++;
	generation_sum += generation - words[0];
	words[0] = generation;
	words[1] = page_hash(page, generation);
}

/* Re-reads every page: each hash must match, the generations must add up. */
static bool verify_pages(void)
{
	u64 sum = 0;
	bool ok = true;
	unsigned long page;

	for (page = 0; page < nr_pages; page++) {
		u64 *words = page_words(page);

		if (words[1] != page_hash(page, words[0]))
			ok = false;
		sum += words[0];
	}
	return ok && sum == generation_sum;
}

static int __init allocate_pages(void)
{
	unsigned long left = nr_pages;
	unsigned int i;

	for (i = 0; left; i++) {
		unsigned long take = min(left, CHUNK_PAGES);
		struct page *pages = alloc_pages(GFP_KERNEL, get_order(take * PAGE_SIZE));

		if (!pages)
			return -ENOMEM;
		chunks[i] = page_address(pages);
		left -= take;
	}
	/* Generation 0 everywhere, so the sum starts at 0. */
	for (i = 0; i < nr_pages; i++) {
		page_words(i)[0] = 0;
		page_words(i)[1] = page_hash(i, 0);
	}
	return 0;
}

static void dirty_due(u64 start_ns, u64 now_ns, u64 *written)
{
	u64 due = (now_ns - start_ns) / 1000 * rate / 1000000;

	/* After a long stop (a paused guest), do not catch up more than one
	 * interval of writes at once: the lines must keep their period. */
	if (due > *written + (u64)rate * interval_ms / 1000)
		*written = due - (u64)rate * interval_ms / 1000;
	while (*written < due) {
		write_page(cursor);
		cursor = cursor + 1 == nr_pages ? 0 : cursor + 1;
		(*written)++;
	}
}

static int __init godwit_workload(void)
{
	u64 start_ns, next_ns, interval_ns, written = 0, seq = 0;

	if (mib < 1 || mib > MAX_CHUNKS * 4 || interval_ms < 10 || interval_ms > 60000) {
		pr_err("godwit-workload: mib=%u interval_ms=%u out of range (mib 1-%u, interval_ms 10-60000)\n",
		       mib, interval_ms, MAX_CHUNKS * 4);
		return -EINVAL;
	}
	nr_pages = (unsigned long)mib << (20 - PAGE_SHIFT);
	if (allocate_pages()) {
		pr_err("godwit-workload: cannot allocate %u MiB\n", mib);
		return -ENOMEM;
	}
	interval_ns = (u64)interval_ms * NSEC_PER_MSEC;
	start_ns = ktime_get_ns();
	next_ns = start_ns + interval_ns;
	pr_info("godwit-workload: start mib=%u rate=%u interval_ms=%u pages=%lu\n",
		mib, rate, interval_ms, nr_pages);
	for (;;) {
		u64 now_ns = ktime_get_ns();

		dirty_due(start_ns, now_ns, &written);
		if (now_ns >= next_ns) {
			bool ok = verify_pages();

			pr_info("godwit-workload: seq=%llu uptime_ms=%llu verify=%s dirtied=%llu\n",
				seq++, now_ns / NSEC_PER_MSEC, ok ? "ok" : "MISMATCH", generation);
			next_ns += interval_ns;
			/* Too slow to keep up (emulated code): start the next
			 * period from now instead of printing a burst. */
			if (next_ns <= now_ns)
				next_ns = now_ns + interval_ns;
		}
		schedule_timeout_interruptible(1);
	}
	return 0;
}
late_initcall(godwit_workload);
