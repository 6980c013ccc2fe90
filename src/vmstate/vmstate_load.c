/* The destination's device loader: the one path every DEVICE record takes,
 * from the main channel or any multifd channel. Every rule about which
 * buffers may come is checked here, before a byte is used; stop-copy
 * buffers are put together in any order and loaded by one load thread, in
 * the order their states completed, so a slow load never holds up a
 * channel. Never loads a stop-copy state before precopy is over.
 *
 * Ownership: `lock` guards the assemblies' bookkeeping, the load queue, the
 * spares and the first error. A whole state's bytes are copied outside the
 * lock into a region only their own buffer index maps to. */
#include "vmstate_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BUFFERS_MAX ((unsigned)(DEVICE_STATE_MAX / DEVICE_BUFFER_MAX))   /* 65 */
/* Piece buffers kept for reuse once loaded, so their memory is touched
 * once rather than once per piece, and never while the guest is stopped. */
#define SPARE_PIECES 3

/* One device's stop-copy state as its buffers come in. A device with
 * load_piece takes each buffer as it comes (piecewise); for any other the
 * buffers are put together at 16 MiB offsets and load gets the whole. */
struct assembly {
    uint8_t *data;                  /* whole: DEVICE_STATE_MAX of address space */
    uint64_t received[2];           /* bit per buffer index claimed */
    unsigned copied;                /* whole: buffers in place; piecewise: claimed */
    unsigned applied;               /* piecewise: pieces loaded */
    int last;                       /* index of the LAST buffer, -1 until it comes */
    size_t size;
    uint32_t version;
    bool queued, loaded;            /* queued: every buffer has come */
    uint32_t next_precopy;          /* precopy buffers: the index due next */
};

/* Work for the load thread: a whole state, or one piece. */
struct load_item {
    struct load_item *next;
    unsigned slot;
    bool piece;
    uint32_t index;
    uint8_t *buffer;                /* piece: a record body, DEVICE_PIECE_RECORD_MAX */
    const uint8_t *data;            /* piece: its state, in buffer */
    size_t len;
};

struct device_loader {
    struct device_registry *devices;
    void (*on_failure)(void *opaque, const struct gw_error *err);
    void *opaque;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool failed;
    struct gw_error error;
    struct assembly assemblies[DEVICE_MAX];
    struct load_item *queue_head, **queue_tail;
    uint8_t *spare[SPARE_PIECES];   /* DEVICE_PIECE_RECORD_MAX each, touched */
    unsigned nr_spare;
    bool pieces;                    /* a device here loads pieces */
    bool loading, stopping;
    /* Every precopy buffer (only the main channel carries them) is loaded,
     * so a stop-copy state may now be loaded on top. */
    bool precopy_done;
    pthread_t thread;
    bool thread_started;
};

int device_record_head(const struct stream_record *record, struct device_record_head *head,
                       struct gw_error *err)
{
    if (record->length < DEVICE_RECORD_HEADER)
        return gw_error_set(err, -EPROTO, "DEVICE record at stream offset %" PRIu64
                            " is too short", record->offset);
    memset(head->id, 0, sizeof(head->id));
    memcpy(head->id, record->body, DEVICE_ID_MAX);
    memcpy(&head->instance, record->body + 32, 4);
    memcpy(&head->version, record->body + 36, 4);
    memcpy(&head->index, record->body + 40, 4);
    memcpy(&head->flags, record->body + 44, 4);
    return 0;
}

/* Records the first error and wakes everyone who waits on the loader. */
static void loader_fail(struct device_loader *loader, const struct gw_error *err, bool notify)
{
    bool first;

    pthread_mutex_lock(&loader->lock);
    first = !loader->failed;
    if (first) {
        loader->failed = true;
        loader->error = *err;
    }
    pthread_cond_broadcast(&loader->changed);
    pthread_mutex_unlock(&loader->lock);
    if (first && notify && loader->on_failure)
        loader->on_failure(loader->opaque, err);
}

void device_loader_fail(struct device_loader *loader, const struct gw_error *err)
{
    if (loader)
        loader_fail(loader, err, false);
}

bool device_loader_error(struct device_loader *loader, struct gw_error *err)
{
    bool failed;

    if (!loader)
        return false;
    pthread_mutex_lock(&loader->lock);
    failed = loader->failed && loader->error.code != -ECANCELED;
    if (failed)
        *err = loader->error;
    pthread_mutex_unlock(&loader->lock);
    return failed;
}

/* Loads one item; returns 0 or the device's error, prefixed. */
static int load_item(struct device_loader *loader, struct load_item *item, bool *finished,
                     struct gw_error *err)
{
    struct device *device = &loader->devices->devices[item->slot];
    struct assembly *assembly = &loader->assemblies[item->slot];
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
        pthread_mutex_lock(&loader->lock);
        *finished = rc == 0 && ++assembly->applied == (unsigned)assembly->last + 1 &&
                    assembly->last >= 0;
        pthread_mutex_unlock(&loader->lock);
        if (*finished)
            rc = device->ops->load_finish(device->opaque, assembly->applied, assembly->version,
                                          err);
    }
    if (rc < 0)
        gw_error_prefix(err, "loading device '%s' instance %u", device->id, device->instance);
    return rc;
}

/* The load thread: owns the devices' load ops from the first stop-copy
 * load on; reads the queue under the lock. */
static void *load_thread(void *opaque)
{
    struct device_loader *loader = opaque;

    pthread_mutex_lock(&loader->lock);
    for (;;) {
        while ((!loader->queue_head || !loader->precopy_done) && !loader->stopping &&
               !loader->failed)
            pthread_cond_wait(&loader->changed, &loader->lock);
        if (loader->stopping || loader->failed)
            break;   /* nothing left worth loading */
        struct load_item *item = loader->queue_head;
        struct gw_error err = { 0 };
        bool finished;
        loader->queue_head = item->next;
        if (!loader->queue_head)
            loader->queue_tail = &loader->queue_head;
        loader->loading = true;
        pthread_mutex_unlock(&loader->lock);
        int rc = load_item(loader, item, &finished, &err);
        if (rc < 0)
            loader_fail(loader, &err, true);
        pthread_mutex_lock(&loader->lock);
        if (finished && rc == 0)
            loader->assemblies[item->slot].loaded = true;
        loader->loading = false;
        if (item->buffer && loader->nr_spare < SPARE_PIECES)
            loader->spare[loader->nr_spare++] = item->buffer;   /* take_spare waits for it */
        else
            free(item->buffer);
        free(item);
        pthread_cond_broadcast(&loader->changed);
    }
    pthread_mutex_unlock(&loader->lock);
    return NULL;
}

static void queue_item(struct device_loader *loader, struct load_item *item)
{
    item->next = NULL;
    *loader->queue_tail = item;
    loader->queue_tail = &item->next;
    pthread_cond_broadcast(&loader->changed);
}

/* Claims buffer `index` of a device under the lock. */
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
    /* Set by the first buffer only: the load thread reads it, unlocked,
     * while later pieces are claimed (and those carry the same version). */
    if (!assembly->received[0] && !assembly->received[1])
        assembly->version = version;
    assembly->received[index / 64] |= bit;
    if (piecewise && ++assembly->copied == (unsigned)assembly->last + 1 && assembly->last >= 0)
        assembly->queued = true;   /* every piece has come */
    return 0;
}

/* A spare piece buffer, once the load thread has given one back: memory
 * stays bounded. NULL if the migration failed meanwhile. */
static uint8_t *take_spare(struct device_loader *loader)
{
    uint8_t *buffer = NULL;

    pthread_mutex_lock(&loader->lock);
    while (!loader->nr_spare && !loader->failed && !loader->stopping)
        pthread_cond_wait(&loader->changed, &loader->lock);
    if (loader->nr_spare)
        buffer = loader->spare[--loader->nr_spare];
    pthread_mutex_unlock(&loader->lock);
    return buffer;
}

/* A piece for the load thread. With a reader, the record's body becomes
 * the piece (the reader gets a spare to read the next into): no copy. */
static int queue_piece(struct device_loader *loader, struct stream_reader *reader,
                       const struct stream_record *record, struct load_item *item)
{
    uint8_t *spare = take_spare(loader);

    if (!spare)
        return -ECANCELED;
    if (reader && reader->body == record->body && reader->body_cap >= DEVICE_PIECE_RECORD_MAX) {
        item->buffer = reader->body;
        reader->body = spare;
        reader->body_cap = DEVICE_PIECE_RECORD_MAX;
    } else {
        item->buffer = spare;
        memcpy(spare, record->body, record->length);
    }
    item->data = item->buffer + DEVICE_RECORD_HEADER;
    pthread_mutex_lock(&loader->lock);
    queue_item(loader, item);
    pthread_mutex_unlock(&loader->lock);
    return 0;
}

/* A buffer of a whole state lands at its 16 MiB offset; the last one in
 * queues the state for load. */
static void place_buffer(struct device_loader *loader, const struct stream_record *record,
                         struct load_item *item)
{
    struct assembly *assembly = &loader->assemblies[item->slot];

    /* Outside the lock: no other buffer maps to these bytes. */
    memcpy(assembly->data + (size_t)item->index * DEVICE_BUFFER_MAX,
           record->body + DEVICE_RECORD_HEADER, item->len);
    pthread_mutex_lock(&loader->lock);
    if (++assembly->copied == (unsigned)assembly->last + 1 && assembly->last >= 0) {
        assembly->queued = true;
        queue_item(loader, item);
        item = NULL;
    }
    pthread_mutex_unlock(&loader->lock);
    free(item);
}

/* Precopy buffers come on the main channel, in order, while the guest
 * runs on the source; each is loaded at once. */
static int load_precopy(struct device_loader *loader, struct device *device,
                        struct assembly *assembly, const struct device_record_head *head,
                        const struct stream_record *record, struct gw_error *err)
{
    bool late;

    pthread_mutex_lock(&loader->lock);
    late = loader->precopy_done;
    pthread_mutex_unlock(&loader->lock);
    /* The load thread may be loading this device's stop-copy state. */
    if (late)
        return gw_error_set(err, -EPROTO, "precopy buffer %u arrived after the switchover",
                            head->index);
    if (!device->ops->load_precopy)
        return gw_error_set(err, -EPROTO, "device '%s' got precopy data, which it does not "
                            "take", device->id);
    if (head->index != assembly->next_precopy)
        return gw_error_set(err, -EPROTO, "device '%s' precopy buffer %u arrived, %u was "
                            "expected", device->id, head->index, assembly->next_precopy);
    int rc = device->ops->load_precopy(device->opaque, record->body + DEVICE_RECORD_HEADER,
                                       record->length - DEVICE_RECORD_HEADER, head->version, err);
    if (rc == 0)
        assembly->next_precopy++;
    return rc;
}

static int load_stopcopy(struct device_loader *loader, struct stream_reader *reader,
                         const struct stream_record *record, unsigned slot,
                         const struct device_record_head *head, struct gw_error *err)
{
    struct device *device = &loader->devices->devices[slot];
    struct load_item *item = calloc(1, sizeof(*item));
    int rc;

    if (!item)
        return gw_error_set(err, -ENOMEM, "out of memory for device '%s' state", device->id);
    *item = (struct load_item){ .slot = slot, .piece = device->ops->load_piece != NULL,
                                .index = head->index,
                                .len = record->length - DEVICE_RECORD_HEADER };
    bool piece = item->piece;   /* once queued, the item is the load thread's */
    pthread_mutex_lock(&loader->lock);
    rc = claim_buffer(&loader->assemblies[slot], piece, head->index, head->flags,
                      head->version, item->len, err);
    pthread_mutex_unlock(&loader->lock);
    if (rc == 0 && piece && queue_piece(loader, reader, record, item) < 0)
        rc = gw_error_set(err, -ECANCELED, "another channel failed");
    else if (rc == 0 && !piece)
        place_buffer(loader, record, item);
    if (rc < 0)
        free(item);
    return rc;
}

int device_loader_feed(struct device_loader *loader, struct stream_reader *reader,
                       const struct stream_record *record, bool on_multifd,
                       struct gw_error *err)
{
    struct device_record_head head;
    struct device *device;
    unsigned slot;
    int rc = device_record_head(record, &head, err);

    if (rc < 0)
        return rc;
    device = loader->devices ? device_find(loader->devices, head.id, head.instance) : NULL;
    if (!device)
        return gw_error_set(err, -ENOENT, "%s carries state for device '%.32s' instance %u, "
                            "which this VM does not have",
                            on_multifd ? "a multifd channel" : "the stream", head.id,
                            head.instance);
    if (on_multifd && !device->ops->multifd)
        return gw_error_set(err, -EPROTO, "a multifd channel carries state for device '%s', "
                            "whose state travels on the main channel", device->id);
    if (on_multifd && head.flags & ~DEVICE_LAST)
        return gw_error_set(err, -EPROTO, "device '%s' buffer %u on a multifd channel has "
                            "flags 0x%x; only LAST (1) is allowed there", device->id,
                            head.index, head.flags);
    if (head.flags & ~(DEVICE_LAST | DEVICE_PRECOPY) ||
        (head.flags & DEVICE_LAST && head.flags & DEVICE_PRECOPY))
        return gw_error_set(err, -EPROTO, "DEVICE record at stream offset %" PRIu64
                            " has flags 0x%x", record->offset, head.flags);
    slot = (unsigned)(device - loader->devices->devices);
    if (head.flags & DEVICE_PRECOPY) {
        rc = load_precopy(loader, device, &loader->assemblies[slot], &head, record, err);
    } else {
        if (!on_multifd)
            device_loader_precopy_done(loader);
        rc = load_stopcopy(loader, reader, record, slot, &head, err);
    }
    if (rc < 0)
        gw_error_prefix(err, "loading device '%s' instance %u", device->id, head.instance);
    return rc;
}

void device_loader_precopy_done(struct device_loader *loader)
{
    pthread_mutex_lock(&loader->lock);
    loader->precopy_done = true;
    pthread_cond_broadcast(&loader->changed);
    pthread_mutex_unlock(&loader->lock);
}

/* Names the first device whose state did not come whole. */
int device_loader_check(const struct device_loader *loader, struct gw_error *err)
{
    const struct device_registry *devices = loader->devices;

    for (unsigned slot = 0; devices && slot < devices->count; slot++) {
        const struct assembly *assembly = &loader->assemblies[slot];
        const struct device *device = &devices->devices[slot];
        unsigned missing = 0;
        if (assembly->loaded)
            continue;
        if (!assembly->received[0] && !assembly->received[1])
            return gw_error_set(err, -EPROTO, "the source sent no state for device '%s' "
                                "instance %u", device->id, device->instance);
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

int device_loader_finish(struct device_loader *loader, uint64_t *devices_loaded,
                         struct gw_error *err)
{
    int rc = 0;

    device_loader_precopy_done(loader);
    pthread_mutex_lock(&loader->lock);
    while (!loader->failed && (loader->loading || loader->queue_head))
        pthread_cond_wait(&loader->changed, &loader->lock);
    if (loader->failed) {
        *err = loader->error;
        rc = err->code ? err->code : -EIO;
    }
    pthread_mutex_unlock(&loader->lock);
    *devices_loaded = 0;
    for (unsigned slot = 0; rc == 0 && loader->devices && slot < loader->devices->count; slot++)
        *devices_loaded += loader->assemblies[slot].loaded;
    return rc;
}

static int prepare_spares(struct device_loader *loader, struct gw_error *err)
{
    const struct device_registry *devices = loader->devices;

    for (unsigned i = 0; devices && i < devices->count; i++)
        loader->pieces |= devices->devices[i].ops->load_piece != NULL;
    for (; loader->pieces && loader->nr_spare < SPARE_PIECES; loader->nr_spare++) {
        loader->spare[loader->nr_spare] = malloc(DEVICE_PIECE_RECORD_MAX);
        if (!loader->spare[loader->nr_spare])
            return gw_error_set(err, -ENOMEM, "out of memory for device state buffers");
        memset(loader->spare[loader->nr_spare], 0, DEVICE_PIECE_RECORD_MAX);
    }
    return 0;
}

struct device_loader *device_loader_new(struct device_registry *devices,
                                        void (*on_failure)(void *opaque,
                                                           const struct gw_error *err),
                                        void *opaque, struct gw_error *err)
{
    struct device_loader *loader = calloc(1, sizeof(*loader));
    int rc;

    if (!loader) {
        gw_error_set(err, -ENOMEM, "out of memory for the device loader");
        return NULL;
    }
    loader->devices = devices;
    loader->on_failure = on_failure;
    loader->opaque = opaque;
    for (unsigned i = 0; i < DEVICE_MAX; i++)
        loader->assemblies[i].last = -1;
    loader->queue_tail = &loader->queue_head;
    pthread_mutex_init(&loader->lock, NULL);
    pthread_cond_init(&loader->changed, NULL);
    if (prepare_spares(loader, err) < 0) {
        device_loader_free(loader);
        return NULL;
    }
    rc = pthread_create(&loader->thread, NULL, load_thread, loader);
    if (rc) {
        gw_error_set(err, -rc, "cannot start the device load thread: %s", strerror(rc));
        device_loader_free(loader);
        return NULL;
    }
    loader->thread_started = true;
    return loader;
}

void device_loader_free(struct device_loader *loader)
{
    if (!loader)
        return;
    pthread_mutex_lock(&loader->lock);
    loader->stopping = true;
    pthread_cond_broadcast(&loader->changed);
    pthread_mutex_unlock(&loader->lock);
    if (loader->thread_started)
        pthread_join(loader->thread, NULL);
    for (unsigned i = 0; i < loader->nr_spare; i++)
        free(loader->spare[i]);
    while (loader->queue_head) {
        struct load_item *item = loader->queue_head;
        loader->queue_head = item->next;
        free(item->buffer);
        free(item);
    }
    for (unsigned i = 0; i < DEVICE_MAX; i++)
        if (loader->assemblies[i].data)
            munmap(loader->assemblies[i].data, DEVICE_STATE_MAX);
    pthread_mutex_destroy(&loader->lock);
    pthread_cond_destroy(&loader->changed);
    free(loader);
}
