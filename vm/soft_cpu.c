/* --accel none: the test guest played by a host thread (soft_cpu.h). */
#include "soft_cpu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <godwit/size.h>

#define PAGE MEMORY_PAGE_SIZE
/* Pages per chunk, and the pause after each: about 1.4 us a page, the pace
 * of the real guest's pass under PVM (35 ms over 99 MiB). */
#define CHUNK_PAGES 256
#define CHUNK_PAUSE_NS 330000
#define STATE_VERSION 1
/* rate=, as the guest (guest/pace.c): whole MiB/s up to RATE_MAX, about a
 * millisecond of pages between two looks at the clock, and a schedule
 * restarted from now once it is more than LAG_LIMIT_NS behind. */
#define RATE_MAX (1u << 20)
#define PAGES_PER_MIB 256
#define MAX_RATE_CHUNK_PAGES 1024
#define LAG_LIMIT_NS 15625000ULL
#define NS_PER_S 1000000000ULL
enum { MODE_DIRTY, MODE_IDLE };

static int parse_rate(struct soft_cpu *cpu, const char *value, struct gw_error *err)
{
    unsigned long long rate;

    if (!value[0] || value[strspn(value, "0123456789")] != '\0' || strlen(value) > 7 ||
        (rate = strtoull(value, NULL, 10)) == 0 || rate > RATE_MAX)
        return gw_error_set(err, -EINVAL, "--append: rate= takes whole MiB/s from 1 to %u, "
                            "not '%s'", RATE_MAX, value);
    cpu->rate = (uint32_t)rate;
    return 0;
}

/* One word of --append: key=value; words without '=' are skipped, as the
 * guest skips the kernel name QEMU puts first. */
static int parse_word(struct soft_cpu *cpu, const char *word, size_t len, uint64_t *start,
                      uint64_t *end, struct gw_error *err)
{
    char key[16], value[64];
    const char *eq = memchr(word, '=', len);

    if (!eq)
        return 0;
    if ((size_t)(eq - word) >= sizeof(key) || len - (size_t)(eq - word) - 1 >= sizeof(value))
        return gw_error_set(err, -EINVAL, "--append: '%.*s' is too long", (int)len, word);
    snprintf(key, sizeof(key), "%.*s", (int)(eq - word), word);
    snprintf(value, sizeof(value), "%.*s", (int)(len - (size_t)(eq - word) - 1), eq + 1);
    if (!strcmp(key, "mode") && (!strcmp(value, "dirty") || !strcmp(value, "idle"))) {
        cpu->mode = strcmp(value, "dirty") ? MODE_IDLE : MODE_DIRTY;
        return 0;
    }
    if (!strcmp(key, "start") || !strcmp(key, "end"))
        return size_parse(value, 1, !strcmp(key, "start") ? start : end, err);
    if (!strcmp(key, "rate"))
        return parse_rate(cpu, value, err);
    return gw_error_set(err, -EINVAL, "--append: the test guest takes mode=dirty|idle, start=, "
                        "end= and rate=, not '%s'", key);
}

int soft_cpu_init(struct soft_cpu *cpu, struct guest_memory *memory, const char *append,
                  int serial_fd, struct gw_error *err)
{
    uint64_t start = 1ULL << 20, end = memory->size - (1ULL << 20);
    const char *at = append;
    int rc;

    memset(cpu, 0, sizeof(*cpu));
    cpu->memory = memory;
    cpu->serial_fd = serial_fd;
    pthread_mutex_init(&cpu->lock, NULL);
    if ((rc = cond_init_monotonic(&cpu->changed)) < 0)
        return gw_error_set(err, rc, "cannot make the soft CPU's condition: %s",
                            strerror(-rc));
    while (*at) {
        size_t len = strcspn(at, " ");
        if ((rc = parse_word(cpu, at, len, &start, &end, err)) < 0)
            return rc;
        at += len;
        at += strspn(at, " ");
    }
    cpu->first = (start + PAGE - 1) & ~(PAGE - 1);
    cpu->end = end & ~(PAGE - 1);
    if (end > memory->size || cpu->first >= cpu->end || cpu->end > MEMORY_LOW_LIMIT)
        return gw_error_set(err, -EINVAL, "--append: the range start=%llu end=%llu does not fit "
                            "in the guest's RAM below 3 GiB", (unsigned long long)start,
                            (unsigned long long)end);
    cpu->next = cpu->first;
    for (unsigned b = 0; b < memory->nr_blocks; b++) {
        cpu->dirty[b] = calloc(ram_block_bitmap_words(&memory->blocks[b]), sizeof(uint64_t));
        if (!cpu->dirty[b])
            return gw_error_set(err, -ENOMEM, "out of memory for the dirty log");
    }
    return 0;
}

static void serial_putc(struct soft_cpu *cpu, char c)
{
    if (cpu->serial_fd >= 0 && write(cpu->serial_fd, &c, 1) < 0) {
        /* the serial port is best effort, as a UART with nobody listening */
    }
}

/* The guest's own write to its RAM. The migration threads read the page
 * meanwhile, as they read a KVM guest's: the dirty bit set after it sends
 * the page again. tests/tsan.supp names this function for that reason. */
static void soft_guest_write(uint8_t *byte, bool zero)
{
    if (zero)
        *byte = 0;
    else
        (*(volatile uint8_t *)byte)++;
}

/* The range lies in block 0 (below 3 GiB), which starts at guest address 0. */
static void touch(struct soft_cpu *cpu, uint64_t gpa, bool zero)
{
    uint64_t page = gpa / PAGE;

    soft_guest_write(cpu->memory->host + gpa, zero);
    if (atomic_load(&cpu->tracking))
        __atomic_fetch_or(&cpu->dirty[0][page / 64], 1ULL << (page % 64), __ATOMIC_RELEASE);
}

/* Parks while stopped, sleeps for the cpu throttle; returns false when the
 * thread must end. */
static bool wait_to_run(struct soft_cpu *cpu)
{
    bool go;

    pthread_mutex_lock(&cpu->lock);
    for (;;) {
        if (cpu->quit)
            break;
        if (cpu->run && throttle_sleep_wait(&cpu->throttle, &cpu->changed, &cpu->lock))
            continue;
        if (cpu->run)
            break;
        throttle_sleep_drop(&cpu->throttle);
        cpu->parked = true;
        pthread_cond_broadcast(&cpu->changed);
        pthread_cond_wait(&cpu->changed, &cpu->lock);
    }
    cpu->parked = false;
    go = !cpu->quit;
    if (go && cpu->nmi_pending && cpu->booted) {
        cpu->nmi_pending = false;
        serial_putc(cpu, 'N');
    }
    pthread_mutex_unlock(&cpu->lock);
    return go;
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * NS_PER_S + (uint64_t)now.tv_nsec;
}

static unsigned chunk_pages(const struct soft_cpu *cpu)
{
    unsigned pages = (cpu->rate / 4) & ~7u;   /* rate * 256 / 1000: a millisecond */

    if (!cpu->rate)
        return CHUNK_PAGES;
    return pages < 8 ? 8 : pages > MAX_RATE_CHUNK_PAGES ? MAX_RATE_CHUNK_PAGES : pages;
}

/* After a chunk: unpaced, the short pause that gives PVM's pace; with rate=,
 * sleeps until the chunk is due. A stop (the thread parked) leaves the
 * schedule far behind, so it starts again from now rather than burst. */
static void pace_after(struct soft_cpu *cpu, uint64_t *due_ns, unsigned pages)
{
    static const struct timespec pause = { 0, CHUNK_PAUSE_NS };
    uint64_t now = monotonic_ns();
    struct timespec until;

    if (!cpu->rate) {
        nanosleep(&pause, NULL);
        return;
    }
    *due_ns += pages * NS_PER_S / ((uint64_t)cpu->rate * PAGES_PER_MIB);
    if (now > *due_ns + LAG_LIMIT_NS) {
        *due_ns = now;
        return;
    }
    until = (struct timespec){ (time_t)(*due_ns / NS_PER_S), (long)(*due_ns % NS_PER_S) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
}

static void *soft_cpu_thread(void *opaque)
{
    struct soft_cpu *cpu = opaque;
    uint64_t due_ns = monotonic_ns();

    pthread_mutex_lock(&cpu->lock);
    cpu->tid = gettid();
    pthread_cond_broadcast(&cpu->changed);
    pthread_mutex_unlock(&cpu->lock);
    while (wait_to_run(cpu)) {
        if (!cpu->booted) {
            for (uint64_t gpa = cpu->first; cpu->mode == MODE_DIRTY && gpa < cpu->end; gpa += PAGE)
                touch(cpu, gpa, true);
            cpu->booted = true;
            serial_putc(cpu, 'A');
            continue;
        }
        if (cpu->mode == MODE_IDLE) {
            pthread_mutex_lock(&cpu->lock);
            if (cpu->run && !cpu->quit && !cpu->nmi_pending)
                pthread_cond_wait(&cpu->changed, &cpu->lock);   /* halt until stopped */
            pthread_mutex_unlock(&cpu->lock);
            continue;
        }
        unsigned pages = 0;

        for (; pages < chunk_pages(cpu) && cpu->next < cpu->end; pages++, cpu->next += PAGE)
            touch(cpu, cpu->next, false);
        if (cpu->next >= cpu->end) {
            cpu->next = cpu->first;
            serial_putc(cpu, 'B');
        }
        pace_after(cpu, &due_ns, pages);
    }
    pthread_mutex_lock(&cpu->lock);
    cpu->parked = true;
    pthread_cond_broadcast(&cpu->changed);
    pthread_mutex_unlock(&cpu->lock);
    return NULL;
}

int soft_cpu_start(struct soft_cpu *cpu, struct gw_error *err)
{
    int rc = pthread_create(&cpu->thread, NULL, soft_cpu_thread, cpu);

    if (rc)
        return gw_error_set(err, -rc, "cannot start the soft CPU thread: %s", strerror(rc));
    cpu->started = true;
    pthread_mutex_lock(&cpu->lock);
    while (!cpu->tid)
        pthread_cond_wait(&cpu->changed, &cpu->lock);
    pthread_mutex_unlock(&cpu->lock);
    return 0;
}

pid_t soft_cpu_thread_id(struct soft_cpu *cpu)
{
    pid_t tid;

    pthread_mutex_lock(&cpu->lock);
    tid = cpu->tid;
    pthread_mutex_unlock(&cpu->lock);
    return tid;
}

void soft_cpu_stop(struct soft_cpu *cpu)
{
    pthread_mutex_lock(&cpu->lock);
    cpu->run = false;
    pthread_cond_broadcast(&cpu->changed);
    while (cpu->started && !cpu->parked)
        pthread_cond_wait(&cpu->changed, &cpu->lock);
    pthread_mutex_unlock(&cpu->lock);
}

void soft_cpu_resume(struct soft_cpu *cpu)
{
    pthread_mutex_lock(&cpu->lock);
    cpu->run = true;
    pthread_cond_broadcast(&cpu->changed);
    pthread_mutex_unlock(&cpu->lock);
}

void soft_cpu_nmi(struct soft_cpu *cpu)
{
    pthread_mutex_lock(&cpu->lock);
    cpu->nmi_pending = true;
    pthread_cond_broadcast(&cpu->changed);
    pthread_mutex_unlock(&cpu->lock);
}

void soft_cpu_throttle(struct soft_cpu *cpu, uint64_t ns)
{
    pthread_mutex_lock(&cpu->lock);
    throttle_sleep_request(&cpu->throttle, ns);   /* no kick: it looks between chunks */
    pthread_cond_broadcast(&cpu->changed);
    pthread_mutex_unlock(&cpu->lock);
}

void soft_cpu_cleanup(struct soft_cpu *cpu)
{
    if (cpu->started) {
        pthread_mutex_lock(&cpu->lock);
        cpu->quit = true;
        pthread_cond_broadcast(&cpu->changed);
        pthread_mutex_unlock(&cpu->lock);
        pthread_join(cpu->thread, NULL);
        cpu->started = false;
    }
    for (unsigned b = 0; b < 2; b++) {
        free(cpu->dirty[b]);
        cpu->dirty[b] = NULL;
    }
}

/* --- the software dirty log --- */

static int soft_dirty_start(void *opaque, struct gw_error *err)
{
    struct soft_cpu *cpu = opaque;

    (void)err;
    atomic_store(&cpu->tracking, true);
    return 0;
}

/* Taking a word and merging it are one exchange here: the engine times the
 * whole call and counts it as the fetch. */
static int soft_dirty_sync(void *opaque, unsigned block, uint64_t *bitmap,
                           struct dirty_sync_times *times, struct gw_error *err)
{
    struct soft_cpu *cpu = opaque;
    uint64_t words = ram_block_bitmap_words(&cpu->memory->blocks[block]);

    (void)err, (void)times;
    for (uint64_t w = 0; w < words; w++)
        if (__atomic_load_n(&cpu->dirty[block][w], __ATOMIC_RELAXED))   /* the thread sets bits */
            bitmap[w] |= __atomic_exchange_n(&cpu->dirty[block][w], 0, __ATOMIC_ACQUIRE);
    return 0;
}

/* Always armed: a write after sync is in the next sync anyway. */
static int soft_dirty_clear(void *opaque, unsigned block, uint64_t first_page,
                            const uint64_t *bits, unsigned nr_words, struct gw_error *err)
{
    (void)opaque, (void)block, (void)first_page, (void)bits, (void)nr_words, (void)err;
    return 0;
}

static void soft_dirty_stop(void *opaque)
{
    struct soft_cpu *cpu = opaque;

    atomic_store(&cpu->tracking, false);
    /* The thread may still be running (a failed or cancelled migration) and
     * setting a bit it saw tracking on for. */
    for (unsigned b = 0; b < cpu->memory->nr_blocks; b++)
        for (uint64_t w = 0; w < ram_block_bitmap_words(&cpu->memory->blocks[b]); w++)
            __atomic_store_n(&cpu->dirty[b][w], 0, __ATOMIC_RELAXED);
}

const struct dirty_tracker_ops soft_dirty_ops = {
    .start = soft_dirty_start,
    .sync = soft_dirty_sync,
    .clear = soft_dirty_clear,
    .stop = soft_dirty_stop,
};

/* --- device soft-cpu: mode, first, end, next, booted --- */

static int soft_cpu_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct soft_cpu *cpu = opaque;
    uint64_t state[5] = { cpu->mode, cpu->first, cpu->end, cpu->next, cpu->booted };

    if (gw_buffer_append(out, state, sizeof(state)) < 0)
        return gw_error_set(err, -ENOMEM, "out of memory saving the soft CPU");
    return 0;
}

static int soft_cpu_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                         struct gw_error *err)
{
    struct soft_cpu *cpu = opaque;
    uint64_t state[5];

    if (version != STATE_VERSION || len != sizeof(state))
        return gw_error_set(err, -EPROTO, "soft-cpu state version %u of %zu bytes; this "
                            "godwit-vm takes version %d of %zu", version, len, STATE_VERSION,
                            sizeof(state));
    memcpy(state, data, sizeof(state));
    if (state[0] > MODE_IDLE || state[1] % PAGE || state[2] % PAGE || state[1] >= state[2] ||
        state[2] > cpu->memory->size || state[2] > MEMORY_LOW_LIMIT || state[3] < state[1] ||
        state[3] >= state[2] || state[3] % PAGE || state[4] > 1)
        return gw_error_set(err, -EPROTO, "soft-cpu state names a range outside this VM's RAM");
    cpu->mode = (uint32_t)state[0];
    cpu->first = state[1];
    cpu->end = state[2];
    cpu->next = state[3];
    cpu->booted = state[4];
    return 0;
}

static const struct device_ops soft_cpu_ops = { .save = soft_cpu_save, .load = soft_cpu_load };

int soft_cpu_register(struct soft_cpu *cpu, struct device_registry *devices, struct gw_error *err)
{
    return device_register(devices, "soft-cpu", 0, STATE_VERSION, &soft_cpu_ops, cpu, err);
}
