/* Device state on the wire (DEVICE records, docs/stream.md) and the
 * engine's two halves of it: the source's saver (pending sizes, precopy
 * buffers, stop-copy state whole or in pieces) and the destination's loader,
 * the one path every DEVICE record takes whatever channel carried it.
 * Neither half knows about channels: the saver writes through a
 * device_sink, the loader is fed records. */
#ifndef GODWIT_VMSTATE_INTERNAL_H
#define GODWIT_VMSTATE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/device.h>
#include <godwit/stream.h>

/* DEVICE record: id[32], instance, version, buffer index, flags; then data. */
#define DEVICE_RECORD_HEADER 48
#define DEVICE_LAST 0x1u      /* the last buffer of a device's stop-copy state */
#define DEVICE_PRECOPY 0x2u   /* a precopy buffer, for load_precopy */
/* A record body that holds a whole piece: what readers prepare. */
#define DEVICE_PIECE_RECORD_MAX (DEVICE_RECORD_HEADER + DEVICE_BUFFER_MAX)
_Static_assert(DEVICE_PIECE_RECORD_MAX == STREAM_DEVICE_BODY_MAX,
               "the stream bounds a DEVICE record at one head and one buffer");

/* The 48-byte head of a DEVICE record, read from a body that was checked
 * to be long enough. */
struct device_record_head {
    char id[DEVICE_ID_MAX + 1];
    uint32_t instance, version, index, flags;
};
int device_record_head(const struct stream_record *record, struct device_record_head *head,
                       struct gw_error *err);
void device_record_head_encode(const struct device *device, uint32_t index, uint32_t flags,
                               uint8_t *header);

/* The clock device saves are timed with (device.h: timed_bytes, timed_us). */
uint64_t vmstate_now_us(void);
/* Records that a device saved bytes in us: a timing of a few bytes says
 * more about a call's cost than about a rate, so it replaces one of many
 * bytes only when there is none. */
void vmstate_record_timing(struct device *device, uint64_t bytes, uint64_t us);

/* --- source (vmstate_save.c) --- */

/* Calls every device's save_setup before the first pass. */
int vmstate_save_setup(struct device_registry *devices, struct gw_error *err);
/* Pieces of device state on multifd channels at once: their buffers are
 * reused, so their memory is touched once, not per piece; so many lanes at
 * most carry a device that saves in pieces at a time. */
#define VMSTATE_PIECES_IN_FLIGHT 3

/* Stop-copy state that travels one way: its bytes, the devices' time to
 * save them at the rate each was last timed (0 for a device never timed),
 * and whether every device of it saves in pieces (then at most
 * VMSTATE_PIECES_IN_FLIGHT of them are on the lanes at once). */
struct device_route {
    uint64_t bytes, save_us;
    bool pieces;
};

/* What the devices hold: precopy and stop-copy bytes, the stop-copy split
 * by the way it travels where the migration has device lanes: the
 * devices that take multifd, and the others (the main channel). */
struct device_pending {
    uint64_t precopy, stopcopy;
    struct device_route main, multifd;
};

/* Asks every device what it still has to send, each figure bounded at
 * DEVICE_STATE_MAX: a device may report nonsense and must not make the
 * estimate overflow. Nothing else is corrected: a stop-copy figure below
 * the precopy one is taken as given, since only stop-copy bytes count in
 * the downtime estimate. Fills *pending and returns its stop-copy bytes. */
uint64_t vmstate_pending(struct device_registry *devices, struct device_pending *pending);

/* Where the saver's records go. write_main writes one DEVICE record on the
 * main channel before it returns. queue_multifd (NULL without multifd
 * device channels) queues one on a multifd channel: data stays valid until
 * *sent turns true (sent may be NULL: until the migration's channels are
 * finished); wait_sent waits for that. */
struct device_sink {
    void *opaque;
    int (*write_main)(void *opaque, const uint8_t *header, const uint8_t *data, size_t len,
                      struct gw_error *err);
    int (*queue_multifd)(void *opaque, const uint8_t *header, const uint8_t *data, size_t len,
                         atomic_bool *sent, struct gw_error *err);
    int (*wait_sent)(void *opaque, atomic_bool *sent, struct gw_error *err);
};

struct vmstate_saver;
/* Prepares (and touches) the buffers the stop-copy phase will fill. */
struct vmstate_saver *vmstate_saver_new(struct device_registry *devices,
                                        const struct device_sink *sink, struct gw_error *err);
/* Precopy data for this pass: up to budget bytes per device. */
int vmstate_save_precopy(struct vmstate_saver *saver, uint64_t budget, struct gw_error *err);
/* Every device's stop-copy state (VM stopped): those on multifd channels
 * first, so they travel while the main channel carries the others. */
int vmstate_save_stopcopy(struct vmstate_saver *saver, struct gw_error *err);
/* After the channels are finished: nothing is in flight any more. */
void vmstate_saver_free(struct vmstate_saver *saver);

/* --- destination (vmstate_load.c) --- */

struct device_loader;
/* on_failure (may be NULL) is called once, from the thread that failed
 * first (the load thread, or whoever calls device_loader_fail), so the
 * caller can tell the source and stop its channels. */
struct device_loader *device_loader_new(struct device_registry *devices,
                                        void (*on_failure)(void *opaque,
                                                           const struct gw_error *err),
                                        void *opaque, struct gw_error *err);
/* One DEVICE record, from the main channel (on_multifd false) or a multifd
 * channel. Precopy buffers (main channel only, in order) are loaded before
 * this returns; stop-copy buffers are checked, reassembled in any order and
 * loaded by the load thread. With a reader whose body holds the record,
 * a piece's body is handed to the load thread without a copy. Safe to call
 * from several threads at once. */
int device_loader_feed(struct device_loader *loader, struct stream_reader *reader,
                       const struct stream_record *record, bool on_multifd,
                       struct gw_error *err);
/* Precopy is over (SWITCHOVER, or the first stop-copy record): stop-copy
 * states may now be loaded on top of what precopy gave. */
void device_loader_precopy_done(struct device_loader *loader);
/* At END, once no more records can come: waits for every load and
 * returns how many devices got their whole state. */
int device_loader_finish(struct device_loader *loader, uint64_t *devices_loaded,
                         struct gw_error *err);
/* Then: names the first device whose state did not come whole. */
int device_loader_check(const struct device_loader *loader, struct gw_error *err);
/* Records a failure from outside (a channel broke): loads stop, waiters
 * wake. */
void device_loader_fail(struct device_loader *loader, const struct gw_error *err);
/* True, with the error, if a load (not a cancel) failed. */
bool device_loader_error(struct device_loader *loader, struct gw_error *err);
void device_loader_free(struct device_loader *loader);

#endif
