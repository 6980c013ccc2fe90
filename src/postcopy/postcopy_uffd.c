/* The destination's guest RAM in postcopy. After POSTCOPY_LISTEN the guest
 * may run here before its pages have all arrived: every block is
 * registered with userfaultfd in missing mode, so a thread (a vCPU in
 * KVM, or the VMM itself) that touches a page not here yet sleeps in the
 * kernel while the fault thread asks the source for it. Pages are read
 * into a staging buffer and placed with UFFDIO_COPY (UFFDIO_ZEROPAGE for
 * zero pages), which maps the whole page at once and wakes its waiters:
 * the guest never sees half a page. A page that arrives twice (asked for
 * while the background stream was already bringing it) is placed once;
 * the kernel refuses the second with EEXIST.
 *
 * Threads: the fault thread owns the uffd's reads and the request bitmap;
 * the loading thread (one at a time) owns the staging buffer; the
 * received bitmap and the request times are atomics, the stall count is
 * under wait_lock. */
#include "postcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FAULTS_PER_READ 64

struct staged {
    uint32_t block;
    uint64_t page;
};

/* One loading thread's staging: the main channel's, and with
 * postcopy-preempt the preempt channel's. */
struct lane {
    struct postcopy_ram *ram;
    uint8_t *staging;                        /* STREAM_PAGES_PER_RECORD pages */
    struct staged slots[STREAM_PAGES_PER_RECORD];
    unsigned next_slot;
};

struct postcopy_ram {
    const struct ram_block *blocks;
    unsigned nr_blocks;
    uint64_t page_size;
    int uffd;
    int stop_pipe[2];
    pthread_t thread;
    bool thread_running;
    bool registered[STREAM_BLOCKS_MAX];
    int (*request)(void *opaque, const struct postcopy_request *request, struct gw_error *err);
    void *opaque;
    uint64_t *received[STREAM_BLOCKS_MAX];   /* placed here, or found here (EEXIST) */
    uint64_t *requested[STREAM_BLOCKS_MAX];  /* the fault thread's */
    _Atomic uint64_t *asked_us[STREAM_BLOCKS_MAX];   /* when a request went out; 0: none waits */
    struct lane lanes[POSTCOPY_LANES];
    pthread_mutex_t wait_lock;
    unsigned waiting;                        /* requests not answered yet */
    uint64_t waiting_since_us;
    /* The vCPU threads (postcopy-vcpu-blocktime), under wait_lock but the
     * ids, set before the fault thread starts. */
    int vcpu_tids[POSTCOPY_VCPUS_MAX];
    struct vcpu_wait {
        bool blocked;
        uint32_t block;
        uint64_t page, since_us;
    } vcpu_waits[POSTCOPY_VCPUS_MAX];
    unsigned vcpus_blocked;
    uint64_t all_blocked_since_us;
    atomic_uint vcpus_blocked_hint;          /* vcpus_blocked, read without the lock */
    struct postcopy_stats stats;
};

static uint64_t now_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

/* Sequentially consistent: a placing sets the page's bit, then looks for
 * a request time or a blocked vCPU; the fault thread stores those, then
 * looks at the bit. Each side must see the other's store (handle_fault,
 * vcpu_blocked, page_here); on x86 this costs nothing more. */
static bool test_bit(const uint64_t *bitmap, uint64_t page)
{
    return __atomic_load_n(&bitmap[page / 64], __ATOMIC_SEQ_CST) >> (page % 64) & 1;
}

static bool test_and_set_bit(uint64_t *bitmap, uint64_t page)
{
    uint64_t mask = 1ULL << (page % 64);

    return __atomic_fetch_or(&bitmap[page / 64], mask, __ATOMIC_SEQ_CST) & mask;
}

/* The kernel's own syscall, or, where it is kept from processes without
 * CAP_SYS_PTRACE, /dev/userfaultfd. Faults from inside the kernel (KVM's
 * accesses for a vCPU) need a descriptor without UFFD_USER_MODE_ONLY. */
static int open_uffd(struct gw_error *err)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

    if (fd >= 0)
        return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        close(dev);
        if (fd >= 0)
            return fd;
    }
    return gw_error_set(err, -errno, "postcopy needs userfaultfd, which this host refuses "
                        "(%s): run as root or give access to /dev/userfaultfd",
                        strerror(errno));
}

/* Missing-page faults on shared file memory (--mem-path in /dev/shm) need
 * UFFD_FEATURE_MISSING_SHMEM; anonymous memory needs nothing more. */
static int uffd_handshake(int fd, const struct ram_block *blocks, unsigned nr_blocks,
                          bool thread_id, struct gw_error *err)
{
    struct uffdio_api api = { .api = UFFD_API };

    /* Which thread faulted: to tell the vCPUs' waits. */
    if (thread_id)
        api.features |= UFFD_FEATURE_THREAD_ID;

    for (unsigned i = 0; i < nr_blocks; i++)
        if (blocks[i].fd >= 0)
            api.features |= UFFD_FEATURE_MISSING_SHMEM;
    if (ioctl(fd, UFFDIO_API, &api) < 0)
        return gw_error_set(err, -errno, "this kernel's userfaultfd lacks what postcopy needs "
                            "for this VM's memory (missing faults%s): %s",
                            api.features ? " on shared memory" : "", strerror(errno));
    return 0;
}

int postcopy_ram_supported(const struct ram_block *blocks, unsigned nr_blocks,
                           struct gw_error *err)
{
    int fd = open_uffd(err), rc;

    if (fd < 0)
        return fd;
    rc = uffd_handshake(fd, blocks, nr_blocks, true, err);
    close(fd);
    return rc;
}

struct postcopy_ram *postcopy_ram_new(const struct ram_block *blocks, unsigned nr_blocks,
                                      int (*request)(void *opaque,
                                                     const struct postcopy_request *request,
                                                     struct gw_error *err),
                                      void *opaque, struct gw_error *err)
{
    struct postcopy_ram *ram = calloc(1, sizeof(*ram));

    if (!ram) {
        gw_error_set(err, -ENOMEM, "out of memory for postcopy's state");
        return NULL;
    }
    *ram = (struct postcopy_ram){ .blocks = blocks, .nr_blocks = nr_blocks, .uffd = -1,
                                  .stop_pipe = { -1, -1 }, .request = request, .opaque = opaque,
                                  .page_size = blocks[0].page_size };
    pthread_mutex_init(&ram->wait_lock, NULL);
    for (unsigned i = 0; i < POSTCOPY_LANES; i++) {
        ram->lanes[i].ram = ram;
        ram->lanes[i].staging = malloc(STREAM_PAGES_PER_RECORD * ram->page_size);
    }
    for (unsigned b = 0; ram->lanes[POSTCOPY_LANES - 1].staging && b < nr_blocks; b++) {
        uint64_t words = ram_block_bitmap_words(&blocks[b]);
        ram->received[b] = calloc(words, sizeof(uint64_t));
        ram->requested[b] = calloc(words, sizeof(uint64_t));
        ram->asked_us[b] = calloc(ram_block_pages(&blocks[b]), sizeof(uint64_t));
        if (!ram->received[b] || !ram->requested[b] || !ram->asked_us[b])
            break;
    }
    if (!ram->lanes[0].staging || !ram->asked_us[nr_blocks - 1]) {
        postcopy_ram_free(ram);
        gw_error_set(err, -ENOMEM, "out of memory for postcopy's page bitmaps");
        return NULL;
    }
    return ram;
}

int postcopy_ram_discard(struct postcopy_ram *ram, uint32_t block, uint64_t first,
                         uint64_t pages, struct gw_error *err)
{
    const struct ram_block *ram_block = &ram->blocks[block];
    uint8_t *start = ram_block->host + first * ram->page_size;
    /* A shared file's page lives in the file: only a hole makes it missing. */
    int advice = ram_block->fd >= 0 ? MADV_REMOVE : MADV_DONTNEED;

    if (madvise(start, pages * ram->page_size, advice) < 0)
        return gw_error_set(err, -errno, "cannot discard pages [%" PRIu64 ", +%" PRIu64
                            ") of block '%s': %s", first, pages, ram_block->name,
                            strerror(errno));
    return 0;
}

/* Counts the guest's stall: the time during which at least one request
 * waited for its answer. */
static void wait_begins(struct postcopy_ram *ram, uint64_t now)
{
    pthread_mutex_lock(&ram->wait_lock);
    if (ram->waiting++ == 0)
        ram->waiting_since_us = now;
    pthread_mutex_unlock(&ram->wait_lock);
}

static void wait_ends(struct postcopy_ram *ram, uint64_t now)
{
    pthread_mutex_lock(&ram->wait_lock);
    if (ram->waiting && --ram->waiting == 0)
        atomic_fetch_add(&ram->stats.wait_us, now - ram->waiting_since_us);
    pthread_mutex_unlock(&ram->wait_lock);
}

/* Under wait_lock: vCPU v stops waiting (its page is here). */
static void vcpu_unblocked(struct postcopy_ram *ram, unsigned v, uint64_t now)
{
    struct vcpu_wait *wait = &ram->vcpu_waits[v];

    atomic_fetch_add(&ram->stats.vcpu_blocktime_us[v], now - wait->since_us);
    if (ram->vcpus_blocked-- == ram->stats.nr_vcpus)
        atomic_fetch_add(&ram->stats.blocktime_us, now - ram->all_blocked_since_us);
    atomic_store(&ram->vcpus_blocked_hint, ram->vcpus_blocked);
    wait->blocked = false;
}

/* The fault thread: the thread tid waits for a page. */
static void vcpu_blocked(struct postcopy_ram *ram, int tid, uint32_t block, uint64_t page)
{
    unsigned v;

    for (v = 0; v < ram->stats.nr_vcpus && ram->vcpu_tids[v] != tid; v++)
        ;
    if (v == ram->stats.nr_vcpus)
        return;   /* not a vCPU: the VMM's own access */
    uint64_t now = now_us();
    pthread_mutex_lock(&ram->wait_lock);
    struct vcpu_wait *wait = &ram->vcpu_waits[v];
    if (!wait->blocked) {
        *wait = (struct vcpu_wait){ true, block, page, now };
        if (++ram->vcpus_blocked == ram->stats.nr_vcpus)
            ram->all_blocked_since_us = now;
        atomic_store(&ram->vcpus_blocked_hint, ram->vcpus_blocked);
    }
    /* Placed meanwhile: page_here may have looked before the mark. */
    if (test_bit(ram->received[block], page) && wait->blocked && wait->page == page &&
        wait->block == block)
        vcpu_unblocked(ram, v, now_us());
    pthread_mutex_unlock(&ram->wait_lock);
}

/* Every vCPU that waited for this page has it. */
static void vcpus_have(struct postcopy_ram *ram, uint32_t block, uint64_t page)
{
    if (!atomic_load(&ram->vcpus_blocked_hint))
        return;
    uint64_t now = now_us();
    pthread_mutex_lock(&ram->wait_lock);
    for (unsigned v = 0; v < ram->stats.nr_vcpus; v++) {
        const struct vcpu_wait *wait = &ram->vcpu_waits[v];
        if (wait->blocked && wait->block == block && wait->page == page)
            vcpu_unblocked(ram, v, now);
    }
    pthread_mutex_unlock(&ram->wait_lock);
}

static unsigned latency_bucket(uint64_t us)
{
    unsigned bucket = 0;

    while (us > 1 && bucket < POSTCOPY_LATENCY_BUCKETS - 1) {
        us >>= 1;
        bucket++;
    }
    return bucket;
}

/* A page is here (placed now, or found already placed): whoever asked for
 * it has its answer. */
static void page_here(struct postcopy_ram *ram, uint32_t block, uint64_t page)
{
    uint64_t asked, now;

    /* Here before the time is taken: a fault thread that stores its time
     * after this takes sees the page here (handle_fault). */
    test_and_set_bit(ram->received[block], page);
    asked = atomic_exchange(&ram->asked_us[block][page], 0);
    vcpus_have(ram, block, page);
    if (!asked)
        return;
    now = now_us();
    atomic_fetch_add(&ram->stats.latency_total_us, now - asked);
    atomic_fetch_add(&ram->stats.latency[latency_bucket(now - asked)], 1);
    wait_ends(ram, now);
}

static void handle_fault(struct postcopy_ram *ram, uint64_t address, int tid)
{
    struct gw_error err = { 0 };

    for (uint32_t b = 0; b < ram->nr_blocks; b++) {
        const struct ram_block *block = &ram->blocks[b];
        if (address < (uintptr_t)block->host || address - (uintptr_t)block->host >= block->size)
            continue;
        uint64_t page = (address - (uintptr_t)block->host) / ram->page_size;
        /* Placed meanwhile: UFFDIO_COPY woke the thread. */
        if (test_bit(ram->received[b], page))
            return;
        vcpu_blocked(ram, tid, b, page);
        if (test_and_set_bit(ram->requested[b], page))
            return;   /* asked for already */
        struct postcopy_request request = { .block = b, .pages = 1, .first = page };
        uint64_t now = now_us();
        /* Before the request leaves: its answer may come back at once.
         * Counted before its time is there, as a placing that takes the
         * time counts the request's latency. */
        wait_begins(ram, now);
        atomic_fetch_add(&ram->stats.requests, 1);
        atomic_store(&ram->asked_us[b][page], now);
        /* Placed since the first look (page_here may have come before the
         * time was there to take): the fault is answered, nothing to ask,
         * nothing counted. A placing that took the time meanwhile counted
         * its latency: the request goes out, so that every request counted
         * was made (its page comes twice, and is placed once). */
        if (test_bit(ram->received[b], page) && atomic_exchange(&ram->asked_us[b][page], 0)) {
            atomic_fetch_sub(&ram->stats.requests, 1);
            wait_ends(ram, now);
            return;
        }
        if (ram->request(ram->opaque, &request, &err) < 0) {
            /* The return path is gone; the load fails on its own channel
             * and reports it. The thread stays asleep: nothing can wake
             * it with the right page. */
        }
        return;
    }
}

/* Owns the uffd's read side: each missing-page fault becomes a request. */
static void *fault_thread(void *opaque)
{
    struct postcopy_ram *ram = opaque;
    struct uffd_msg msgs[FAULTS_PER_READ];
    struct pollfd fds[2] = { { .fd = ram->uffd, .events = POLLIN },
                             { .fd = ram->stop_pipe[0], .events = POLLIN } };

    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        if (fds[1].revents)
            break;
        ssize_t n = read(ram->uffd, msgs, sizeof(msgs));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            break;
        for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
            if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                handle_fault(ram, msgs[i].arg.pagefault.address,
                             (int)msgs[i].arg.pagefault.feat.ptid);
    }
    return NULL;
}

int postcopy_ram_listen(struct postcopy_ram *ram, const int *vcpu_tids, unsigned nr_vcpus,
                        struct gw_error *err)
{
    int rc;

    ram->stats.nr_vcpus = nr_vcpus < POSTCOPY_VCPUS_MAX ? nr_vcpus : POSTCOPY_VCPUS_MAX;
    for (unsigned v = 0; v < ram->stats.nr_vcpus; v++)
        ram->vcpu_tids[v] = vcpu_tids[v];
    ram->uffd = open_uffd(err);
    if (ram->uffd < 0)
        return ram->uffd;
    if ((rc = uffd_handshake(ram->uffd, ram->blocks, ram->nr_blocks, ram->stats.nr_vcpus > 0,
                             err)) < 0)
        return rc;
    for (unsigned b = 0; b < ram->nr_blocks; b++) {
        const struct ram_block *block = &ram->blocks[b];
        struct uffdio_register reg = { .range = { (uintptr_t)block->host, block->size },
                                       .mode = UFFDIO_REGISTER_MODE_MISSING };
        /* As QEMU: a fault fills one small page, never a huge one. */
        if (block->fd < 0)
            madvise(block->host, block->size, MADV_NOHUGEPAGE);
        if (ioctl(ram->uffd, UFFDIO_REGISTER, &reg) < 0)
            return gw_error_set(err, -errno, "cannot register block '%s' with userfaultfd: %s",
                                block->name, strerror(errno));
        ram->registered[b] = true;
        if (!(reg.ioctls & (1ULL << _UFFDIO_COPY)) || !(reg.ioctls & (1ULL << _UFFDIO_ZEROPAGE)))
            return gw_error_set(err, -ENOTSUP, "userfaultfd cannot place pages in block '%s' "
                                "(no UFFDIO_COPY or UFFDIO_ZEROPAGE for its memory)",
                                block->name);
    }
    if (pipe2(ram->stop_pipe, O_CLOEXEC) < 0)
        return gw_error_set(err, -errno, "cannot make the fault thread's pipe: %s",
                            strerror(errno));
    rc = pthread_create(&ram->thread, NULL, fault_thread, ram);
    if (rc)
        return gw_error_set(err, -rc, "cannot start the postcopy fault thread");
    ram->thread_running = true;
    return 0;
}

/* --- the landing --- */

static uint8_t *staged_target(void *opaque, uint32_t block, uint64_t page)
{
    struct lane *lane = opaque;
    unsigned slot = lane->next_slot++ % STREAM_PAGES_PER_RECORD;

    lane->slots[slot] = (struct staged){ block, page };
    return lane->staging + slot * lane->ram->page_size;
}

static int place(struct postcopy_ram *ram, uint32_t block, uint64_t page, const uint8_t *data,
                 struct gw_error *err)
{
    uint8_t *host = ram->blocks[block].host + page * ram->page_size;
    int rc;

    if (test_bit(ram->received[block], page)) {
        atomic_fetch_add(&ram->stats.duplicates, 1);
        page_here(ram, block, page);
        return 0;
    }
    do {
        if (data) {
            struct uffdio_copy copy = { .dst = (uintptr_t)host, .src = (uintptr_t)data,
                                        .len = ram->page_size };
            rc = ioctl(ram->uffd, UFFDIO_COPY, &copy);
        } else {
            struct uffdio_zeropage zero = { .range = { (uintptr_t)host, ram->page_size } };
            rc = ioctl(ram->uffd, UFFDIO_ZEROPAGE, &zero);
        }
    } while (rc < 0 && errno == EAGAIN);
    if (rc < 0 && errno != EEXIST)
        return gw_error_set(err, -errno, "cannot place page %" PRIu64 " of block '%s': %s",
                            page, ram->blocks[block].name, strerror(errno));
    atomic_fetch_add(rc < 0 ? &ram->stats.duplicates : &ram->stats.placed, 1);
    page_here(ram, block, page);
    return 0;
}

/* The loader commits pages in the order it asked for targets, skipping
 * only a torn one: look for the slot from where the page should be. */
static int staged_commit(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    struct lane *lane = opaque;

    /* Newest first: an older record may have staged the same page. */
    for (unsigned i = 1; i <= STREAM_PAGES_PER_RECORD; i++) {
        unsigned at = (lane->next_slot - i) % STREAM_PAGES_PER_RECORD;
        const struct staged *slot = &lane->slots[at];
        if (slot->block == block && slot->page == page)
            return place(lane->ram, block, page, lane->staging + at * lane->ram->page_size,
                         err);
    }
    return gw_error_set(err, -EINVAL, "page %" PRIu64 " of block %u was never staged", page,
                        block);
}

static int placed_zero(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    struct lane *lane = opaque;

    return place(lane->ram, block, page, NULL, err);
}

static const struct page_landing_ops postcopy_landing_ops = {
    .target = staged_target,
    .commit = staged_commit,
    .zero = placed_zero,
};

struct page_landing postcopy_ram_landing(struct postcopy_ram *ram, unsigned lane)
{
    return (struct page_landing){ .ops = &postcopy_landing_ops, .opaque = &ram->lanes[lane] };
}

static void stop_fault_thread(struct postcopy_ram *ram)
{
    if (ram->thread_running) {
        if (write(ram->stop_pipe[1], "x", 1) < 0) {
            /* a full pipe already says stop */
        }
        pthread_join(ram->thread, NULL);
        ram->thread_running = false;
    }
}

void postcopy_ram_finish(struct postcopy_ram *ram)
{
    if (!ram)
        return;
    for (unsigned b = 0; b < ram->nr_blocks; b++) {
        const struct ram_block *block = &ram->blocks[b];
        struct uffdio_range range = { (uintptr_t)block->host, block->size };
        if (ram->registered[b] && ioctl(ram->uffd, UFFDIO_UNREGISTER, &range) == 0)
            ram->registered[b] = false;
    }
    stop_fault_thread(ram);
    pthread_mutex_lock(&ram->wait_lock);
    uint64_t now = now_us();
    if (ram->waiting)
        atomic_fetch_add(&ram->stats.wait_us, now - ram->waiting_since_us);
    ram->waiting = 0;
    for (unsigned v = 0; v < ram->stats.nr_vcpus; v++)
        if (ram->vcpu_waits[v].blocked)
            vcpu_unblocked(ram, v, now);
    pthread_mutex_unlock(&ram->wait_lock);
}

const uint64_t *postcopy_ram_received(const struct postcopy_ram *ram, uint32_t block)
{
    return ram->received[block];
}

void postcopy_ram_request_again(struct postcopy_ram *ram)
{
    struct gw_error err = { 0 };

    for (uint32_t b = 0; b < ram->nr_blocks; b++)
        for (uint64_t page = 0; page < ram_block_pages(&ram->blocks[b]); page++)
            if (atomic_load(&ram->asked_us[b][page])) {
                struct postcopy_request request = { .block = b, .pages = 1, .first = page };
                if (ram->request(ram->opaque, &request, &err) < 0)
                    return;   /* the new link broke too: the next recovery asks again */
            }
}

const struct postcopy_stats *postcopy_ram_stats(const struct postcopy_ram *ram)
{
    return &ram->stats;
}

void postcopy_ram_free(struct postcopy_ram *ram)
{
    if (!ram)
        return;
    postcopy_ram_finish(ram);
    if (ram->uffd >= 0)
        close(ram->uffd);
    for (int i = 0; i < 2; i++)
        if (ram->stop_pipe[i] >= 0)
            close(ram->stop_pipe[i]);
    for (unsigned b = 0; b < STREAM_BLOCKS_MAX; b++) {
        free(ram->received[b]);
        free(ram->requested[b]);
        free((void *)ram->asked_us[b]);
    }
    for (unsigned i = 0; i < POSTCOPY_LANES; i++)
        free(ram->lanes[i].staging);
    pthread_mutex_destroy(&ram->wait_lock);
    free(ram);
}
