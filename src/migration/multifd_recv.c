/* The destination's multifd side: one receiving thread per channel, the
 * pass barrier of invariant 3, and device state reassembled from buffers
 * that arrive in any order on any channel and loaded by a load thread, so
 * that a slow device load never holds up a channel.
 *
 * Ownership: each receiver owns its reader and its load_state copy (its own
 * counts); `lock` guards the barrier, the first error, the assemblies'
 * bookkeeping and the load queue. Buffer data is copied outside the lock
 * into a region only its own index maps to. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <zstd.h>

#define BUFFERS_MAX ((unsigned)(DEVICE_STATE_MAX / DEVICE_BUFFER_MAX))   /* 65 */
/* Piece buffers kept for reuse once loaded, so their memory is touched
 * once rather than once per piece. */
#define SPARE_PIECES 3
#define PIECE_BUFFER_SIZE (DEVICE_RECORD_HEADER + DEVICE_BUFFER_MAX)

struct receiver {
    struct multifd_recv *recv;
    unsigned index;
    bool ram;                       /* takes part in the pass barrier */
    struct channel *channel;
    struct stream_reader reader;
    struct load_state state;        /* shares blocks, written, torn with the main one */
    uint64_t next_pass;
    ZSTD_DCtx *dctx;
    uint8_t *scratch;
    pthread_t thread;
    bool started;
};

/* One device's state as its buffers come in. A device with load_piece
 * takes each buffer as it comes (piecewise); for any other the buffers are
 * put together at 16 MiB offsets and load gets the whole. */
struct assembly {
    uint8_t *data;                  /* whole: DEVICE_STATE_MAX of address space */
    uint64_t received[2];           /* bit per buffer index claimed */
    unsigned copied;                /* whole: buffers in place; piecewise: claimed */
    unsigned applied;               /* piecewise: pieces loaded */
    int last;                       /* index of the LAST buffer, -1 until it comes */
    size_t size;
    uint32_t version;
    bool queued, loaded;            /* queued: every buffer has come */
};

/* Work for the load thread: a whole state, or one piece. */
struct load_item {
    struct load_item *next;
    unsigned slot;
    bool piece;
    uint32_t index;
    uint8_t *buffer;                /* piece: the record body, PIECE_BUFFER_SIZE */
    const uint8_t *data;            /* piece: its state, in buffer */
    size_t len;
};

struct multifd_recv {
    struct migration *migration;
    struct load_state *main_state;
    uint32_t page_size;
    struct receiver *receivers;
    unsigned nr_receivers, nr_ram;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned at_barrier, ended_ram, ended;
    uint64_t barrier_generation;
    bool failed;
    struct gw_error error;

    struct assembly assemblies[DEVICE_MAX];
    struct load_item *queue_head, **queue_tail;
    uint8_t *spare[SPARE_PIECES];   /* PIECE_BUFFER_SIZE each, touched */
    unsigned nr_spare;
    bool pieces;                    /* a device here loads pieces from multifd */
    bool loading, stop_loader;
    /* The main channel has moved past precopy: every precopy buffer, which
     * only the main channel carries, is loaded, so a stop-copy state may
     * now be loaded on top. */
    bool precopy_done;
    pthread_t load_thread;
    bool load_thread_started;
};

/* Records the first error and wakes the receivers at the barrier and the
 * loader. The source hears it at once on the return path and ends, which
 * ends the main thread's read too; the multifd channels are shut so that
 * no source write waits on a receiver that is gone. */
static void recv_fail(struct multifd_recv *recv, const struct gw_error *err)
{
    struct migration *migration = recv->migration;
    bool first;

    pthread_mutex_lock(&recv->lock);
    first = !recv->failed;
    if (first) {
        recv->failed = true;
        recv->error = *err;
    }
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    if (first && err->code != -ECANCELED)
        channels_send_error_once(migration, err);
    pthread_mutex_lock(&migration->lock);
    channels_shutdown_multifd(migration);
    pthread_mutex_unlock(&migration->lock);
}

/* SYNC(pass): nobody reads pass+1 before every RAM channel has finished
 * pass. */
static int barrier(struct receiver *receiver, const struct stream_record *record,
                   struct gw_error *err)
{
    struct multifd_recv *recv = receiver->recv;
    uint64_t pass, generation;
    int rc = 0;

    if (!receiver->ram || record->length != 8)
        return gw_error_set(err, -EPROTO, "SYNC record at stream offset %" PRIu64 " on %s",
                            record->offset, receiver->ram ? "has the wrong size"
                                                          : "a device-state channel");
    memcpy(&pass, record->body, 8);
    if (pass != receiver->next_pass)
        return gw_error_set(err, -EPROTO, "multifd channel %u synchronised pass %" PRIu64
                            ", expected pass %" PRIu64, receiver->index, pass,
                            receiver->next_pass);
    receiver->next_pass++;
    pthread_mutex_lock(&recv->lock);
    if (recv->ended_ram)
        rc = gw_error_set(err, -EPROTO, "multifd channel %u reached pass %" PRIu64 " after "
                          "another RAM channel had ended", receiver->index, pass);
    generation = recv->barrier_generation;
    if (rc == 0 && ++recv->at_barrier == recv->nr_ram) {
        recv->at_barrier = 0;
        recv->barrier_generation++;
        pthread_cond_broadcast(&recv->changed);
    }
    while (rc == 0 && recv->barrier_generation == generation && !recv->failed)
        pthread_cond_wait(&recv->changed, &recv->lock);
    if (rc == 0 && recv->failed)
        rc = gw_error_set(err, -ECANCELED, "another channel failed");
    pthread_mutex_unlock(&recv->lock);
    return rc;
}

/* Loads one item; returns 0 or the device's error, prefixed. */
static int load_item(struct multifd_recv *recv, struct load_item *item, bool *finished,
                     struct gw_error *err)
{
    struct device *device = &recv->main_state->devices->devices[item->slot];
    struct assembly *assembly = &recv->assemblies[item->slot];
    int rc;

    *finished = false;
    if (!item->piece) {
        rc = device->ops->load(device->opaque, assembly->data, assembly->size,
                               assembly->version, err);
        munmap(assembly->data, DEVICE_STATE_MAX);
        assembly->data = NULL;
        *finished = true;
    } else {
        rc = device->ops->load_piece(device->opaque, item->index, item->data, item->len,
                                     assembly->version, err);
        pthread_mutex_lock(&recv->lock);
        *finished = rc == 0 && ++assembly->applied == (unsigned)assembly->last + 1 &&
                    assembly->last >= 0;
        pthread_mutex_unlock(&recv->lock);
        if (*finished)
            rc = device->ops->load_finish(device->opaque, assembly->applied, assembly->version,
                                          err);
    }
    if (rc < 0)
        gw_error_prefix(err, "loading device '%s' instance %u", device->id, device->instance);
    return rc;
}

static void *load_thread(void *opaque)
{
    struct multifd_recv *recv = opaque;

    pthread_mutex_lock(&recv->lock);
    for (;;) {
        while ((!recv->queue_head || !recv->precopy_done) && !recv->stop_loader)
            pthread_cond_wait(&recv->changed, &recv->lock);
        if (recv->stop_loader)
            break;   /* only after END or a failure: nothing left worth loading */
        struct load_item *item = recv->queue_head;
        struct gw_error err = { 0 };
        bool finished;
        recv->queue_head = item->next;
        if (!recv->queue_head)
            recv->queue_tail = &recv->queue_head;
        recv->loading = true;
        pthread_mutex_unlock(&recv->lock);
        int rc = load_item(recv, item, &finished, &err);
        if (rc < 0)
            recv_fail(recv, &err);
        pthread_mutex_lock(&recv->lock);
        if (finished && rc == 0)
            recv->assemblies[item->slot].loaded = true;
        recv->loading = false;
        if (item->buffer && recv->nr_spare < SPARE_PIECES)
            recv->spare[recv->nr_spare++] = item->buffer;   /* take_spare waits for it */
        else
            free(item->buffer);
        free(item);
        pthread_cond_broadcast(&recv->changed);
    }
    pthread_mutex_unlock(&recv->lock);
    return NULL;
}

static void queue_item(struct multifd_recv *recv, struct load_item *item)
{
    item->next = NULL;
    *recv->queue_tail = item;
    recv->queue_tail = &item->next;
    pthread_cond_broadcast(&recv->changed);
}

/* Claims buffer `index` of a device under the lock: every rule about which
 * buffers may come is checked here. */
static int claim_buffer(struct assembly *assembly, bool piecewise, uint32_t index,
                        uint32_t flags, uint32_t version, size_t len, struct gw_error *err)
{
    uint64_t bit = 1ULL << (index % 64);

    if (assembly->queued)
        return gw_error_set(err, -EPROTO, "buffer %u arrived after the whole state had", index);
    if (index >= BUFFERS_MAX)
        return gw_error_set(err, -EPROTO, "buffer index %u is past the largest state (%u "
                            "buffers of 16 MiB)", index, BUFFERS_MAX);
    if (assembly->received[index / 64] & bit)
        return gw_error_set(err, -EPROTO, "buffer %u arrived twice", index);
    if (!piecewise && !(flags & DEVICE_LAST) && len != DEVICE_BUFFER_MAX)
        return gw_error_set(err, -EPROTO, "buffer %u holds %zu bytes; every buffer but the "
                            "last holds 16 MiB", index, len);
    if (assembly->last >= 0 && (flags & DEVICE_LAST || index > (uint32_t)assembly->last))
        return gw_error_set(err, -EPROTO, "buffer %u%s arrived after the last one, %d", index,
                            flags & DEVICE_LAST ? " (marked last)" : "", assembly->last);
    if (flags & DEVICE_LAST) {
        for (unsigned i = index + 1; i < BUFFERS_MAX; i++)
            if (assembly->received[i / 64] >> (i % 64) & 1)
                return gw_error_set(err, -EPROTO, "buffer %u is marked last, but buffer %u "
                                    "arrived before it", index, i);
        assembly->last = (int)index;
        assembly->size = (size_t)index * DEVICE_BUFFER_MAX + len;
    }
    if (assembly->copied && version != assembly->version)
        return gw_error_set(err, -EPROTO, "buffers of versions %u and %u", assembly->version,
                            version);
    if (!piecewise && !assembly->data) {
        void *region = mmap(NULL, DEVICE_STATE_MAX, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (region == MAP_FAILED)
            return gw_error_set(err, -ENOMEM, "cannot map room for the device state: %s",
                                strerror(errno));
        assembly->data = region;
    }
    assembly->version = version;
    assembly->received[index / 64] |= bit;
    if (piecewise && ++assembly->copied == (unsigned)assembly->last + 1 && assembly->last >= 0)
        assembly->queued = true;   /* every piece has come */
    return 0;
}

/* A spare piece buffer, once the load thread has given one back: memory
 * stays bounded, and no page of it is touched for the first time while
 * the guest is stopped. NULL if the migration failed meanwhile. */
static uint8_t *take_spare(struct multifd_recv *recv)
{
    uint8_t *buffer = NULL;

    if (!recv->pieces)
        return malloc(PIECE_BUFFER_SIZE);   /* none expected: no pool was made */
    pthread_mutex_lock(&recv->lock);
    while (!recv->nr_spare && !recv->failed)
        pthread_cond_wait(&recv->changed, &recv->lock);
    if (recv->nr_spare)
        buffer = recv->spare[--recv->nr_spare];
    pthread_mutex_unlock(&recv->lock);
    return buffer;
}

static int prepare_spares(struct multifd_recv *recv, struct gw_error *err)
{
    const struct device_registry *devices = recv->main_state->devices;

    for (unsigned i = 0; devices && i < devices->count; i++)
        recv->pieces |= devices->devices[i].ops->multifd && devices->devices[i].ops->load_piece;
    if (!recv->pieces || !recv->migration->config.channel_header)
        return recv->pieces = false, 0;
    for (; recv->nr_spare < SPARE_PIECES; recv->nr_spare++) {
        recv->spare[recv->nr_spare] = malloc(PIECE_BUFFER_SIZE);
        if (!recv->spare[recv->nr_spare])
            return gw_error_set(err, -ENOMEM, "out of memory for device state buffers");
        memset(recv->spare[recv->nr_spare], 0, PIECE_BUFFER_SIZE);
    }
    return 0;
}

/* A piece for the load thread. With a reader, the record's body becomes
 * the piece (the reader gets a spare to read the next into): no copy. */
static int queue_piece(struct multifd_recv *recv, struct stream_reader *reader,
                       const struct stream_record *record, struct load_item *item)
{
    uint8_t *spare = take_spare(recv);

    if (!spare)
        return -ECANCELED;
    if (reader && reader->body == record->body && reader->body_cap >= PIECE_BUFFER_SIZE) {
        item->buffer = reader->body;
        reader->body = spare;
        reader->body_cap = PIECE_BUFFER_SIZE;
    } else {
        item->buffer = spare;
        memcpy(spare, record->body, record->length);
    }
    item->data = item->buffer + DEVICE_RECORD_HEADER;
    pthread_mutex_lock(&recv->lock);
    queue_item(recv, item);
    pthread_mutex_unlock(&recv->lock);
    return 0;
}

/* A buffer of a whole state lands at its 16 MiB offset; the last one in
 * queues the state for load. */
static void place_buffer(struct multifd_recv *recv, const struct stream_record *record,
                         struct load_item *item)
{
    struct assembly *assembly = &recv->assemblies[item->slot];

    /* Outside the lock: no other buffer maps to these bytes. */
    memcpy(assembly->data + (size_t)item->index * DEVICE_BUFFER_MAX,
           record->body + DEVICE_RECORD_HEADER, item->len);
    pthread_mutex_lock(&recv->lock);
    if (++assembly->copied == (unsigned)assembly->last + 1 && assembly->last >= 0) {
        assembly->queued = true;
        queue_item(recv, item);
        item = NULL;
    }
    pthread_mutex_unlock(&recv->lock);
    free(item);
}

int multifd_recv_device(struct multifd_recv *recv, struct stream_reader *reader,
                        const struct stream_record *record, struct gw_error *err)
{
    struct device_registry *devices = recv->main_state->devices;
    struct device_record_head head;
    struct device *device;
    struct load_item *item;
    unsigned slot;
    int rc = device_record_head(record, &head, err);

    if (rc < 0)
        return rc;
    const char *id = head.id;
    uint32_t instance = head.instance, index = head.index, flags = head.flags;
    device = devices ? device_find(devices, id, instance) : NULL;
    if (!device)
        return gw_error_set(err, -ENOENT, "a multifd channel carries state for device '%.32s' "
                            "instance %u, which this VM does not have", id, instance);
    if (!device->ops->multifd)
        return gw_error_set(err, -EPROTO, "a multifd channel carries state for device '%s', "
                            "whose state travels on the main channel", device->id);
    if (flags & ~DEVICE_LAST)
        return gw_error_set(err, -EPROTO, "device '%s' buffer %u on a multifd channel has "
                            "flags 0x%x; only LAST (1) is allowed there", device->id, index, flags);
    slot = (unsigned)(device - devices->devices);
    item = calloc(1, sizeof(*item));
    if (!item)
        return gw_error_set(err, -ENOMEM, "out of memory for device '%s' state", device->id);
    *item = (struct load_item){ .slot = slot, .piece = device->ops->load_piece != NULL,
                                .index = index, .len = record->length - DEVICE_RECORD_HEADER };
    bool piece = item->piece;   /* once queued, the item is the load thread's */
    pthread_mutex_lock(&recv->lock);
    rc = claim_buffer(&recv->assemblies[slot], piece, index, flags, head.version, item->len,
                      err);
    pthread_mutex_unlock(&recv->lock);
    if (rc == 0 && piece && queue_piece(recv, reader, record, item) < 0)
        rc = gw_error_set(err, -ECANCELED, "another channel failed");
    else if (rc == 0 && !piece)
        place_buffer(recv, record, item);
    if (rc < 0) {
        free(item);
        gw_error_prefix(err, "device '%s' instance %u", device->id, instance);
    }
    return rc;
}

static int receive_record(struct receiver *receiver, struct stream_record *record,
                          struct gw_error *err)
{
    struct multifd_recv *recv = receiver->recv;

    switch (record->type) {
    case REC_PAGES:
        if (receiver->ram && !receiver->dctx)
            return ram_load_pages(&receiver->reader, record, &receiver->state, err);
        break;
    case REC_PAGES_ZSTD:
        if (receiver->dctx)
            return ram_load_pages_zstd(record, &receiver->state, recv->page_size,
                                       receiver->dctx, receiver->scratch, err);
        break;
    case REC_ZERO_PAGES:
        if (receiver->ram)
            return ram_load_zero_pages(&receiver->state, recv->page_size, record->body,
                                       record->length, err);
        break;
    case REC_SYNC:
        return barrier(receiver, record, err);
    case REC_DEVICE:
        return multifd_recv_device(recv, &receiver->reader, record, err);
    default:
        break;
    }
    return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64 " does not belong "
                        "on a multifd %s channel%s", stream_record_name(record->type),
                        record->offset, receiver->ram ? "RAM" : "device-state",
                        record->type == REC_PAGES ? " with multifd-compression zstd" : "");
}

static void *receiver_thread(void *opaque)
{
    struct receiver *receiver = opaque;
    struct multifd_recv *recv = receiver->recv;
    struct stream_record record;
    struct gw_error err = { 0 };
    int rc = stream_read_header(&receiver->reader, &err);

    while (rc == 0 && (rc = stream_read_record(&receiver->reader, &record, &err)) == 0) {
        if (record.type == REC_CHANNEL_END)
            break;
        rc = receive_record(receiver, &record, &err);
    }
    pthread_mutex_lock(&recv->lock);
    if (rc == 0 && receiver->ram && recv->at_barrier)
        rc = gw_error_set(&err, -EPROTO, "multifd channel %u ended while other channels wait "
                          "at the end of a pass", receiver->index);
    pthread_mutex_unlock(&recv->lock);
    /* The failure is recorded before the end is counted: END must never see
     * every channel ended and no error when one failed. */
    if (rc < 0) {
        gw_error_prefix(&err, "multifd %s channel %u", receiver->ram ? "RAM" : "device-state",
                        receiver->ram ? receiver->index : receiver->index - recv->nr_ram);
        recv_fail(recv, &err);
    }
    pthread_mutex_lock(&recv->lock);
    recv->ended++;
    recv->ended_ram += receiver->ram;
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    return NULL;
}

static int start_receiver(struct multifd_recv *recv, unsigned index, struct gw_error *err)
{
    struct receiver *receiver = &recv->receivers[index];
    struct migration *migration = recv->migration;
    int rc;

    receiver->recv = recv;
    receiver->index = index;
    receiver->ram = index < recv->nr_ram;
    receiver->channel = &migration->multifd_channels[index];
    receiver->reader.io = channel_stream_io(receiver->channel);
    /* Room for a whole device-state piece, touched now rather than in the
     * downtime, so a piece is read in place and handed on (queue_piece). */
    if (recv->pieces && (!receiver->ram || !migration->config.device_channels) &&
        stream_reader_prepare(&receiver->reader, PIECE_BUFFER_SIZE, err) < 0)
        return -ENOMEM;
    receiver->state = *recv->main_state;
    receiver->state.normal_pages = receiver->state.zero_pages = 0;
    receiver->next_pass = 1;
    if (receiver->ram && migration->config.compression == COMPRESSION_ZSTD) {
        receiver->dctx = ZSTD_createDCtx();
        receiver->scratch = malloc((size_t)STREAM_PAGES_PER_RECORD * recv->page_size);
        if (!receiver->dctx || !receiver->scratch)
            return gw_error_set(err, -ENOMEM, "out of memory for zstd decompression");
    }
    rc = pthread_create(&receiver->thread, NULL, receiver_thread, receiver);
    if (rc)
        return gw_error_set(err, -rc, "cannot start a multifd receiving thread: %s",
                            strerror(rc));
    receiver->started = true;
    return 0;
}

int multifd_recv_start(struct migration *migration, struct load_state *main_state,
                       uint32_t page_size, struct gw_error *err)
{
    struct multifd_recv *recv = calloc(1, sizeof(*recv));
    int rc;

    if (!recv)
        return gw_error_set(err, -ENOMEM, "out of memory for the multifd receivers");
    main_state->multifd = recv;
    recv->migration = migration;
    recv->main_state = main_state;
    recv->page_size = page_size;
    recv->nr_receivers = migration->nr_multifd_channels;
    recv->nr_ram = migration->config.channels;
    for (unsigned i = 0; i < DEVICE_MAX; i++)
        recv->assemblies[i].last = -1;
    recv->queue_tail = &recv->queue_head;
    pthread_mutex_init(&recv->lock, NULL);
    pthread_cond_init(&recv->changed, NULL);
    recv->receivers = calloc(recv->nr_receivers ? recv->nr_receivers : 1, sizeof(*recv->receivers));
    if (!recv->receivers)
        return gw_error_set(err, -ENOMEM, "out of memory for the multifd receivers");
    if ((rc = prepare_spares(recv, err)) < 0)
        return rc;
    rc = pthread_create(&recv->load_thread, NULL, load_thread, recv);
    if (rc)
        return gw_error_set(err, -rc, "cannot start the device load thread: %s", strerror(rc));
    recv->load_thread_started = true;
    for (unsigned i = 0; i < recv->nr_receivers; i++)
        if ((rc = start_receiver(recv, i, err)) < 0)
            return rc;
    return 0;
}

static int missing_buffers(const struct multifd_recv *recv, struct gw_error *err)
{
    const struct device_registry *devices = recv->main_state->devices;

    for (unsigned slot = 0; devices && slot < devices->count; slot++) {
        const struct assembly *assembly = &recv->assemblies[slot];
        const struct device *device = &devices->devices[slot];
        unsigned missing = 0;
        if (!assembly->received[0] && !assembly->received[1])
            continue;   /* nothing came on multifd: check_end names it if it must */
        if (assembly->loaded)
            continue;
        if (assembly->last < 0)
            return gw_error_set(err, -EPROTO, "device '%s' instance %u: the last buffer of "
                                "its state never arrived", device->id, device->instance);
        while (assembly->received[missing / 64] >> (missing % 64) & 1)
            missing++;
        return gw_error_set(err, -EPROTO, "device '%s' instance %u: buffer %u of its state "
                            "never arrived (the last is %d)", device->id, device->instance,
                            missing, assembly->last);
    }
    return 0;
}

void multifd_recv_precopy_done(struct multifd_recv *recv)
{
    pthread_mutex_lock(&recv->lock);
    recv->precopy_done = true;
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
}

int multifd_recv_finish(struct multifd_recv *recv, struct load_state *main_state,
                        struct gw_error *err)
{
    int rc = 0;

    multifd_recv_precopy_done(recv);
    pthread_mutex_lock(&recv->lock);
    while (!recv->failed && (recv->ended < recv->nr_receivers || recv->loading ||
                             recv->queue_head))
        pthread_cond_wait(&recv->changed, &recv->lock);
    if (recv->failed) {
        *err = recv->error;
        rc = err->code ? err->code : -EIO;
    }
    pthread_mutex_unlock(&recv->lock);
    if (rc == 0)
        rc = missing_buffers(recv, err);
    for (unsigned i = 0; rc == 0 && i < recv->nr_receivers; i++) {
        main_state->normal_pages += recv->receivers[i].state.normal_pages;
        main_state->zero_pages += recv->receivers[i].state.zero_pages;
    }
    for (unsigned slot = 0; rc == 0 && slot < DEVICE_MAX; slot++) {
        if (!recv->assemblies[slot].loaded)
            continue;
        if (main_state->device_seen[slot])
            return gw_error_set(err, -EPROTO, "device '%s' state arrived twice, on the main "
                                "channel and on multifd channels",
                                main_state->devices->devices[slot].id);
        main_state->device_seen[slot] = true;
        main_state->devices_loaded++;
    }
    return rc;
}

bool multifd_recv_error(struct multifd_recv *recv, struct gw_error *err)
{
    bool failed;

    if (!recv)
        return false;
    pthread_mutex_lock(&recv->lock);
    failed = recv->failed && recv->error.code != -ECANCELED;
    if (failed)
        *err = recv->error;
    pthread_mutex_unlock(&recv->lock);
    return failed;
}

uint64_t multifd_recv_bytes(const struct multifd_recv *recv)
{
    uint64_t bytes = 0;

    for (unsigned i = 0; recv && i < recv->nr_receivers; i++)
        bytes += recv->receivers[i].reader.offset;
    return bytes;
}

void multifd_recv_free(struct multifd_recv *recv)
{
    struct migration *migration;

    if (!recv)
        return;
    migration = recv->migration;
    pthread_mutex_lock(&migration->lock);
    channels_shutdown_multifd(migration);
    pthread_mutex_unlock(&migration->lock);
    pthread_mutex_lock(&recv->lock);
    recv->failed = true;   /* releases the barrier */
    recv->stop_loader = true;
    pthread_cond_broadcast(&recv->changed);
    pthread_mutex_unlock(&recv->lock);
    for (unsigned i = 0; recv->receivers && i < recv->nr_receivers; i++) {
        struct receiver *receiver = &recv->receivers[i];
        if (receiver->started)
            pthread_join(receiver->thread, NULL);
        stream_reader_free(&receiver->reader);
        ZSTD_freeDCtx(receiver->dctx);
        free(receiver->scratch);
    }
    if (recv->load_thread_started)
        pthread_join(recv->load_thread, NULL);
    for (unsigned i = 0; i < recv->nr_spare; i++)
        free(recv->spare[i]);
    while (recv->queue_head) {
        struct load_item *item = recv->queue_head;
        recv->queue_head = item->next;
        free(item->buffer);
        free(item);
    }
    for (unsigned i = 0; i < DEVICE_MAX; i++)
        if (recv->assemblies[i].data)
            munmap(recv->assemblies[i].data, DEVICE_STATE_MAX);
    free(recv->receivers);
    pthread_mutex_destroy(&recv->lock);
    pthread_cond_destroy(&recv->changed);
    free(recv);
}
