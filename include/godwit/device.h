/* Devices in a migration (QEMU's SaveVMHandlers, trimmed to what precopy
 * needs now). A device registers its ops in its own file; the engine calls
 * them in registration order. Every id/instance pair is unique. */
#ifndef GODWIT_DEVICE_H
#define GODWIT_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/buffer.h>
#include <godwit/error.h>

#define DEVICE_ID_MAX 32
#define DEVICE_MAX 64
/* Largest state one device may save (the destination reassembles it from
 * buffers of at most DEVICE_BUFFER_MAX before its load sees it). */
#define DEVICE_STATE_MAX ((1ull << 30) + (16ull << 20))   /* 1 GiB and framing */
#define DEVICE_BUFFER_MAX (16u << 20)

struct device_ops {
    /* Called with the VM stopped: append the rest of the state (all of it,
     * for a device without precopy) to out. The engine cuts a large state
     * into buffers on the wire; load sees it whole again. */
    int (*save)(void *opaque, struct gw_buffer *out, struct gw_error *err);
    /* Called on the destination with the VM stopped: data came from the
     * wire, so check every length before use. version is the sender's. */
    int (*load)(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                struct gw_error *err);
    /* Bytes still to send while running, and bytes the stop-copy phase will
     * send (which includes what precopy has not sent yet). May be NULL: the
     * engine then uses the device's last saved size. May report nonsense;
     * the engine clamps what it reads. */
    void (*query_pending)(void *opaque, uint64_t *precopy_bytes, uint64_t *stopcopy_bytes);

    /* Optional: an outgoing migration starts (the VM runs). Whatever the
     * device remembers of an earlier, cancelled or failed migration (what
     * precopy already sent) no longer holds: the new destination has
     * nothing. Called for every device before the first pass. */
    int (*save_setup)(void *opaque, struct gw_error *err);

    /* Precopy (optional, both or neither): while the VM runs, append at most
     * max_bytes of state to out (appending nothing is fine); the device
     * keeps track of what it has sent and what changed since. Called once
     * per dirty pass while query_pending reports precopy bytes. */
    int (*save_precopy)(void *opaque, struct gw_buffer *out, uint64_t max_bytes,
                        struct gw_error *err);
    /* The destination's side of one save_precopy buffer, in order. */
    int (*load_precopy)(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                        struct gw_error *err);

    /* The stop-copy state may travel in buffers on multifd channels (with
     * x-channel-header) and be loaded by the destination's load thread, at
     * any time before END: load must not depend on other devices. */
    bool multifd;

    /* Optional, all three or none (seed 002's save_live_complete_precopy
     * and load_state_buffer/load_finish): the stop-copy state in pieces, so
     * that the first piece is on the wire while the device makes the next
     * and the destination loads each as it comes.
     * save_piece: VM stopped, called instead of save until *last: append
     * the next piece, at most max_bytes; the pieces put together are a
     * state that load takes (the main channel still loads it whole).
     * load_piece: piece `index` of a state that came on multifd channels,
     * in any order, one piece at a time, from the load thread; each piece
     * stands alone. load_finish: every piece up to the last is loaded. */
    int (*save_piece)(void *opaque, struct gw_buffer *out, size_t max_bytes, bool *last,
                      struct gw_error *err);
    int (*load_piece)(void *opaque, uint32_t index, const uint8_t *data, size_t len,
                      uint32_t version, struct gw_error *err);
    int (*load_finish)(void *opaque, uint32_t pieces, uint32_t version, struct gw_error *err);
};

struct device {
    char id[DEVICE_ID_MAX];
    uint32_t instance;
    uint32_t version;          /* of the state format; load gets the sender's */
    const struct device_ops *ops;
    void *opaque;
    /* Bytes of its last save (device_measure, then every migration): the
     * stop-copy estimate of a device without query_pending. */
    uint64_t saved_size;
    /* How fast it saves, as the engine last timed it (device_measure, a
     * precopy pass, a stop-copy phase): timed_bytes in timed_us; both 0
     * until timed. The downtime estimate reckons the time its stop-copy
     * bytes take at this rate, here and for the destination's load, as
     * stages of a pipeline beside their time on the wire. */
    uint64_t timed_bytes, timed_us;
};

struct device_registry {
    struct device devices[DEVICE_MAX];
    unsigned count;
};

/* Refuses, with a sentence naming the op, an ops table the engine could
 * not use: save (or the three piece ops), load (or the piece ops), and
 * save_precopy with load_precopy, as described above. */
int device_register(struct device_registry *registry, const char *id, uint32_t instance,
                    uint32_t version, const struct device_ops *ops, void *opaque,
                    struct gw_error *err);
struct device *device_find(struct device_registry *registry, const char *id,
                           uint32_t instance);

/* Saves every device without query_pending once to learn its state size
 * (one with it says what it holds), and times the save; a device with
 * query_pending, save_piece and save_setup saves one piece, timed, and
 * nothing else (the next migration's save_setup starts its stop-copy over,
 * as after a failed one). Call while the VM does not run (before its vCPUs
 * start), so the first migration's downtime estimate counts device state,
 * and the time to save it, that were measured, not guessed. */
int device_measure(struct device_registry *registry, struct gw_error *err);

#endif
