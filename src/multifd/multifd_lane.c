/* What one lane writes: PAGES (or PAGES_ZSTD) straight from guest memory
 * with each page's CRC, zero runs, SYNC, CHANNEL_END and device buffers,
 * counted and paced to max-bandwidth. Runs on the lane's own thread and
 * touches only the lane's scratch and its slot. */
#include "multifd_send.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* When bytes sent since start are due at limit bytes/s. In 128 bits: a
 * limit up to 2^63 (libvirt's "unlimited") must mean no wait, and bytes *
 * 10^6 passes 64 bits at 18 TB. */
static uint64_t pace_due_us(uint64_t start_us, uint64_t bytes, uint64_t limit)
{
    unsigned __int128 us = (unsigned __int128)bytes * 1000000 / limit;

    return us > UINT64_MAX - start_us ? UINT64_MAX : start_us + (uint64_t)us;
}

/* Adds a lane's sleep to the time the pacing held the link back, counting
 * only what no other lane's sleep has counted: lanes that sleep together
 * leave the link idle once, not once each. */
static void count_paced(struct multifd_sender *sender, uint64_t from_us, uint64_t to_us)
{
    pthread_mutex_lock(&sender->pace_lock);
    if (from_us < sender->paced_until_us)
        from_us = sender->paced_until_us;
    if (to_us > from_us) {
        atomic_fetch_add(&sender->migration->stats.paced_us, to_us - from_us);
        sender->paced_until_us = to_us;
    }
    pthread_mutex_unlock(&sender->pace_lock);
}

/* Sleeps as needed to keep all lanes together to max-bandwidth, in slices
 * that notice cancel. */
static void pace(struct multifd_sender *sender, uint64_t bytes, bool vm_stopped)
{
    struct migration *migration = sender->migration;
    uint64_t limit, now = migration_now_us(), due_us;

    pthread_mutex_lock(&migration->lock);
    limit = migration->params.max_bandwidth;
    pthread_mutex_unlock(&migration->lock);
    if (!limit || vm_stopped)
        return;   /* the stop-copy phase is never throttled: it is downtime */
    pthread_mutex_lock(&sender->pace_lock);
    if (!sender->window_start_us || now - sender->window_start_us > 1000000) {
        sender->window_start_us = now;
        sender->window_bytes = 0;
    }
    sender->window_bytes += bytes;
    due_us = pace_due_us(sender->window_start_us, sender->window_bytes, limit);
    pthread_mutex_unlock(&sender->pace_lock);
    uint64_t slept_from = now;
    while (now < due_us && !migration_cancelled(migration)) {
        uint64_t nap = due_us - now > 20000 ? 20000 : due_us - now;
        struct timespec ts = { 0, (long)(nap * 1000) };
        nanosleep(&ts, NULL);
        now = migration_now_us();
    }
    if (now > slept_from)
        count_paced(sender, slept_from, now);
}

/* Writes one record on the lane and counts it. */
static int lane_write(struct lane *lane, uint32_t type, const struct iovec *parts, int nparts,
                      uint32_t crc_length, bool vm_stopped, struct gw_error *err)
{
    struct migration *migration = lane->sender->migration;
    uint64_t before = lane->writer->offset, bytes;
    int rc = stream_write_record_partial_crc(lane->writer, type, parts, nparts, crc_length, err);

    if (rc < 0)
        return rc;
    bytes = lane->writer->offset - before;
    migration_count_sent(migration, bytes, vm_stopped);
    if (lane->multifd)
        atomic_fetch_add(&migration->stats.multifd_bytes, bytes);
    if (type == REC_DEVICE)
        atomic_fetch_add(&migration->stats.device_transferred, bytes);
    pace(lane->sender, bytes, vm_stopped);
    return 0;
}

static uint32_t body_length(const struct iovec *parts, int nparts)
{
    size_t length = 0;

    for (int i = 0; i < nparts; i++)
        length += parts[i].iov_len;
    return (uint32_t)length;
}

static int write_zero_runs(struct lane *lane, uint32_t block, uint64_t (*runs)[2],
                           uint32_t count, bool vm_stopped, struct gw_error *err)
{
    uint32_t header[2] = { block, count };
    struct iovec parts[2] = { { header, sizeof(header) }, { runs, count * sizeof(runs[0]) } };
    uint64_t pages = 0;
    int rc;

    for (uint32_t i = 0; i < count; i++)
        pages += runs[i][1];
    rc = lane_write(lane, REC_ZERO_PAGES, parts, 2, body_length(parts, 2), vm_stopped, err);
    if (rc == 0)
        atomic_fetch_add(&lane->sender->migration->stats.zero_pages, pages);
    return rc;
}

/* zero-page-detection multifd: the lane reads each page; zero ones leave
 * the batch as runs. Returns the pages left with data. */
static uint32_t split_zero_pages(struct lane *lane, const struct send_slot *slot,
                                 uint32_t *nr_runs)
{
    uint32_t page_size = lane->sender->page_size, data = 0, runs = 0;

    for (uint32_t i = 0; i < slot->count; i++) {
        if (!ram_page_is_zero(slot->page[i], page_size)) {
            lane->data_pages[data] = slot->page[i];
            lane->data_index[data++] = slot->index[i];
        } else if (runs && lane->zero_runs[runs - 1][0] + lane->zero_runs[runs - 1][1] ==
                               slot->index[i]) {
            lane->zero_runs[runs - 1][1]++;
        } else {
            lane->zero_runs[runs][0] = slot->index[i];
            lane->zero_runs[runs++][1] = 1;
        }
    }
    *nr_runs = runs;
    return data;
}

static int compress_pages(struct lane *lane, uint32_t count, size_t *out_len,
                          struct gw_error *err)
{
    ZSTD_outBuffer out = { lane->compressed, lane->compressed_cap, 0 };
    size_t rc = ZSTD_CCtx_reset(lane->zstd, ZSTD_reset_session_only);

    for (uint32_t i = 0; i < count && !ZSTD_isError(rc); i++) {
        ZSTD_inBuffer in = { lane->data_pages[i], lane->sender->page_size, 0 };
        ZSTD_EndDirective mode = i + 1 == count ? ZSTD_e_end : ZSTD_e_continue;
        do {
            rc = ZSTD_compressStream2(lane->zstd, &out, &in, mode);
        } while (!ZSTD_isError(rc) && (in.pos < in.size || (mode == ZSTD_e_end && rc != 0)));
    }
    if (ZSTD_isError(rc))
        return gw_error_set(err, -EIO, "zstd compression failed: %s", ZSTD_getErrorName(rc));
    *out_len = out.pos;
    return 0;
}

/* PAGES (or PAGES_ZSTD): meta (block, count, indexes, CRCs, padding to 8),
 * covered by the record CRC, then the pages: straight from guest memory,
 * adjacent pages in one iovec, or one zstd frame. */
static int write_pages(struct lane *lane, uint32_t block, uint32_t count, bool vm_stopped,
                       struct gw_error *err)
{
    uint32_t page_size = lane->sender->page_size;
    uint32_t crc_length = 8 + 12 * count + (count % 2) * 4;
    int nparts = 1, rc;

    memcpy(lane->meta, &block, 4);
    memcpy(lane->meta + 4, &count, 4);
    memcpy(lane->meta + 8, lane->data_index, 8 * count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t crc = stream_crc32c(0, lane->data_pages[i], page_size);
        memcpy(lane->meta + 8 + 8 * count + 4 * i, &crc, 4);
    }
    memset(lane->meta + 8 + 12 * count, 0, 4);
    lane->parts[0] = (struct iovec){ lane->meta, crc_length };
    if (lane->sender->compress) {
        size_t len = 0;
        if ((rc = compress_pages(lane, count, &len, err)) < 0)
            return rc;
        lane->parts[1] = (struct iovec){ lane->compressed, len };
        rc = lane_write(lane, REC_PAGES_ZSTD, lane->parts, 2, crc_length + (uint32_t)len,
                        vm_stopped, err);
    } else {
        for (uint32_t i = 0; i < count; i++) {
            struct iovec *last = &lane->parts[nparts - 1];
            if (nparts > 1 && (const uint8_t *)last->iov_base + last->iov_len == lane->data_pages[i])
                last->iov_len += page_size;
            else
                lane->parts[nparts++] = (struct iovec){ (void *)lane->data_pages[i], page_size };
        }
        rc = lane_write(lane, REC_PAGES, lane->parts, nparts, crc_length, vm_stopped, err);
    }
    if (rc == 0)
        atomic_fetch_add(&lane->sender->migration->stats.normal_pages, count);
    return rc;
}

static int send_pages_slot(struct lane *lane, struct send_slot *slot, struct gw_error *err)
{
    uint32_t data = slot->count, runs = 0;
    int rc = 0;

    if (lane->sender->zero_detection == ZERO_DETECT_MULTIFD) {
        data = split_zero_pages(lane, slot, &runs);
    } else {
        memcpy(lane->data_pages, slot->page, slot->count * sizeof(slot->page[0]));
        memcpy(lane->data_index, slot->index, slot->count * sizeof(slot->index[0]));
    }
    if (runs)
        rc = write_zero_runs(lane, slot->block, lane->zero_runs, runs, slot->vm_stopped, err);
    if (rc == 0 && data)
        rc = write_pages(lane, slot->block, data, slot->vm_stopped, err);
    return rc;
}

int multifd_lane_send(struct lane *lane, struct send_slot *slot, struct gw_error *err)
{
    struct iovec parts[2];

    switch (slot->kind) {
    case SLOT_PAGES:
        return send_pages_slot(lane, slot, err);
    case SLOT_ZERO:
        return write_zero_runs(lane, slot->block, slot->zero_runs, slot->count, slot->vm_stopped,
                               err);
    case SLOT_SYNC:
        parts[0] = (struct iovec){ &slot->pass, sizeof(slot->pass) };
        return lane_write(lane, REC_SYNC, parts, 1, sizeof(slot->pass), slot->vm_stopped, err);
    case SLOT_END:
        return lane_write(lane, REC_CHANNEL_END, NULL, 0, 0, slot->vm_stopped, err);
    case SLOT_DEVICE:
        parts[0] = (struct iovec){ slot->device_header, DEVICE_RECORD_HEADER };
        parts[1] = (struct iovec){ (void *)slot->device_data, slot->device_len };
        return lane_write(lane, REC_DEVICE, parts, 2, body_length(parts, 2), slot->vm_stopped,
                          err);
    }
    return 0;
}

