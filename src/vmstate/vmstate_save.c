/* The source's device saver: pending sizes for the estimate, precopy
 * buffers while the guest runs, and the stop-copy state, whole (cut into
 * 16 MiB buffers) or in pieces that go out as soon as the device has made
 * each (seed 002). A buffer handed to a multifd channel is never refilled
 * before that channel is done with it. Runs on the migration thread. */
#include "vmstate_internal.h"

#include "util/capped_us.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct vmstate_saver {
    struct device_registry *devices;
    struct device_sink sink;
    uint32_t precopy_buffers[DEVICE_MAX];   /* next precopy buffer index, per device */
    /* Whole states that multifd channels are sending: they live until the
     * saver is freed, after the channels are finished. */
    struct gw_buffer *kept;
    unsigned nr_kept, kept_cap;
    struct piece_buffer {
        struct gw_buffer data;
        atomic_bool sent;    /* no channel holds it */
    } pieces[VMSTATE_PIECES_IN_FLIGHT];
    unsigned nr_pieces, next_piece;
};

void device_record_head_encode(const struct device *device, uint32_t index, uint32_t flags,
                               uint8_t *header)
{
    memset(header, 0, DEVICE_RECORD_HEADER);
    memcpy(header, device->id, strnlen(device->id, DEVICE_ID_MAX));
    memcpy(header + 32, &device->instance, 4);
    memcpy(header + 36, &device->version, 4);
    memcpy(header + 40, &index, 4);
    memcpy(header + 44, &flags, 4);
}

int vmstate_save_setup(struct device_registry *devices, struct gw_error *err)
{
    for (unsigned i = 0; devices && i < devices->count; i++) {
        struct device *device = &devices->devices[i];
        if (device->ops->save_setup && device->ops->save_setup(device->opaque, err) < 0) {
            gw_error_prefix(err, "device '%s' cannot start a migration", device->id);
            return err ? err->code : -EIO;
        }
    }
    return 0;
}

/* A device's time to save its stop-copy bytes here, at the rate last
 * timed. The destination's load is the estimate's to reckon
 * (migration_estimate.c): how it overlaps the save and the transfer
 * depends on the lanes. */
static double device_save_us(const struct device *device, uint64_t stopcopy)
{
    if (!device->timed_bytes)
        return 0;
    return (double)stopcopy * (double)device->timed_us / (double)device->timed_bytes;
}

uint64_t vmstate_pending(struct device_registry *devices, struct device_pending *pending)
{
    double save_us[2] = { 0, 0 };
    struct device_route *routes[2] = { &pending->main, &pending->multifd };

    *pending = (struct device_pending){ .main.pieces = true, .multifd.pieces = true };
    for (unsigned i = 0; devices && i < devices->count; i++) {
        const struct device *device = &devices->devices[i];
        uint64_t precopy = 0, stopcopy = device->saved_size;
        if (device->ops->query_pending)
            device->ops->query_pending(device->opaque, &precopy, &stopcopy);
        precopy = precopy > DEVICE_STATE_MAX ? DEVICE_STATE_MAX : precopy;
        stopcopy = stopcopy > DEVICE_STATE_MAX ? DEVICE_STATE_MAX : stopcopy;
        pending->precopy += precopy;
        pending->stopcopy += stopcopy;
        unsigned route = device->ops->multifd ? 1 : 0;
        routes[route]->bytes += stopcopy;
        routes[route]->pieces &= device->ops->save_piece != NULL;
        save_us[route] += device_save_us(device, stopcopy);
    }
    pending->main.save_us = capped_us(save_us[0]);
    pending->multifd.save_us = capped_us(save_us[1]);
    return pending->stopcopy;
}

/* Seed 002: a device that takes multifd has its state sent by the multifd
 * channels (where the migration has device channels), while the migration
 * thread goes on with the other devices on the main channel. */
static bool on_multifd(const struct vmstate_saver *saver, const struct device *device)
{
    return device->ops->multifd && saver->sink.queue_multifd;
}

/* Devices that save in pieces fill the piece buffers while the guest is
 * stopped: touch them now, not in the downtime. The main channel writes a
 * piece before the next is made and needs one; multifd channels keep up to
 * VMSTATE_PIECES_IN_FLIGHT on the wire. */
struct vmstate_saver *vmstate_saver_new(struct device_registry *devices,
                                        const struct device_sink *sink, struct gw_error *err)
{
    struct vmstate_saver *saver = calloc(1, sizeof(*saver));

    if (!saver) {
        gw_error_set(err, -ENOMEM, "out of memory for the device saver");
        return NULL;
    }
    saver->devices = devices;
    saver->sink = *sink;
    for (unsigned i = 0; i < VMSTATE_PIECES_IN_FLIGHT; i++)
        atomic_init(&saver->pieces[i].sent, true);
    for (unsigned i = 0; devices && i < devices->count; i++) {
        const struct device *device = &devices->devices[i];
        unsigned needed = on_multifd(saver, device) ? VMSTATE_PIECES_IN_FLIGHT : 1;
        if (device->ops->save_piece && needed > saver->nr_pieces)
            saver->nr_pieces = needed;
    }
    for (unsigned i = 0; i < saver->nr_pieces; i++) {
        if (gw_buffer_prepare(&saver->pieces[i].data, DEVICE_BUFFER_MAX) < 0) {
            gw_error_set(err, -ENOMEM, "out of memory for device state buffers");
            vmstate_saver_free(saver);
            return NULL;
        }
    }
    return saver;
}

void vmstate_saver_free(struct vmstate_saver *saver)
{
    if (!saver)
        return;
    for (unsigned i = 0; i < saver->nr_kept; i++)
        gw_buffer_free(&saver->kept[i]);
    free(saver->kept);
    for (unsigned i = 0; i < VMSTATE_PIECES_IN_FLIGHT; i++)
        gw_buffer_free(&saver->pieces[i].data);
    free(saver);
}

/* One DEVICE record on the main channel or a multifd channel. */
static int send_buffer(struct vmstate_saver *saver, const struct device *device, uint32_t index,
                       uint32_t flags, const uint8_t *data, size_t len, atomic_bool *sent,
                       struct gw_error *err)
{
    uint8_t header[DEVICE_RECORD_HEADER];

    device_record_head_encode(device, index, flags, header);
    if (flags & DEVICE_PRECOPY || !on_multifd(saver, device))
        return saver->sink.write_main(saver->sink.opaque, header, data, len, err);
    return saver->sink.queue_multifd(saver->sink.opaque, header, data, len, sent, err);
}

int vmstate_save_precopy(struct vmstate_saver *saver, uint64_t budget, struct gw_error *err)
{
    struct device_registry *devices = saver->devices;
    struct gw_buffer data = { 0 };
    int rc = 0;

    for (unsigned i = 0; devices && i < devices->count && rc == 0; i++) {
        struct device *device = &devices->devices[i];
        uint64_t sent = 0, save_us = 0;
        if (!device->ops->save_precopy)
            continue;
        while (rc == 0 && sent < budget) {
            uint64_t allowed = budget - sent < DEVICE_BUFFER_MAX ? budget - sent
                                                                 : DEVICE_BUFFER_MAX;
            uint64_t started = vmstate_now_us();
            gw_buffer_reset(&data);
            rc = device->ops->save_precopy(device->opaque, &data, allowed, err);
            save_us += vmstate_now_us() - started;
            if (rc < 0) {
                gw_error_prefix(err, "device '%s' precopy", device->id);
                break;
            }
            if (data.len == 0)
                break;
            if (data.len > allowed) {
                rc = gw_error_set(err, -EMSGSIZE, "device '%s' gave %zu bytes of precopy "
                                  "data, more than the %" PRIu64 " it was allowed", device->id,
                                  data.len, allowed);
                break;
            }
            rc = send_buffer(saver, device, saver->precopy_buffers[i]++, DEVICE_PRECOPY,
                             data.data, data.len, NULL, err);
            sent += data.len;
        }
        if (rc == 0)
            vmstate_record_timing(device, sent, save_us);
    }
    gw_buffer_free(&data);
    return rc;
}

/* A new empty buffer that stays valid until the saver is freed. */
static struct gw_buffer *keep_buffer(struct vmstate_saver *saver, struct gw_error *err)
{
    if (saver->nr_kept == saver->kept_cap) {
        unsigned cap = saver->kept_cap ? 2 * saver->kept_cap : 16;
        struct gw_buffer *kept = realloc(saver->kept, cap * sizeof(*kept));
        if (!kept) {
            gw_error_set(err, -ENOMEM, "out of memory for device state");
            return NULL;
        }
        saver->kept = kept;
        saver->kept_cap = cap;
    }
    saver->kept[saver->nr_kept] = (struct gw_buffer){ 0 };
    return &saver->kept[saver->nr_kept++];
}

/* The next piece buffer, once no channel holds it: a main-channel device
 * may follow a multifd one whose pieces are still being sent. */
static struct piece_buffer *next_piece_buffer(struct vmstate_saver *saver, struct gw_error *err)
{
    struct piece_buffer *piece = &saver->pieces[saver->next_piece++ % saver->nr_pieces];

    if (!atomic_load(&piece->sent) &&
        saver->sink.wait_sent(saver->sink.opaque, &piece->sent, err) < 0)
        return NULL;
    gw_buffer_reset(&piece->data);
    return piece;
}

/* A device with save_piece: each piece goes out as soon as the device has
 * made it, while it makes the next (on multifd channels, other threads
 * send it). At most DEVICE_STATE_MAX in all, one buffer per piece. */
static int send_device_pieces(struct vmstate_saver *saver, struct device *device,
                              struct gw_error *err)
{
    bool last = false;
    uint64_t total = 0, save_us = 0;
    int rc = 0;

    for (uint32_t index = 0; rc == 0 && !last; index++) {
        struct piece_buffer *in_flight = next_piece_buffer(saver, err);
        if (!in_flight) {
            rc = err && err->code ? err->code : -EIO;
            break;
        }
        struct gw_buffer *piece = &in_flight->data;
        uint64_t started = vmstate_now_us();
        rc = device->ops->save_piece(device->opaque, piece, DEVICE_BUFFER_MAX, &last, err);
        save_us += vmstate_now_us() - started;
        if (rc < 0) {
            gw_error_prefix(err, "saving device '%s'", device->id);
            break;
        }
        total += piece->len;
        if (piece->len > DEVICE_BUFFER_MAX || total > DEVICE_STATE_MAX ||
            (!last && index + 1 == DEVICE_STATE_MAX / DEVICE_BUFFER_MAX)) {
            rc = gw_error_set(err, -EMSGSIZE, "device '%s' saved a piece of %zu bytes, %" PRIu64
                              " in %u pieces so far; a piece holds at most %u bytes and a state "
                              "%llu bytes in %llu pieces", device->id, piece->len, total,
                              index + 1, DEVICE_BUFFER_MAX,
                              (unsigned long long)DEVICE_STATE_MAX,
                              (unsigned long long)(DEVICE_STATE_MAX / DEVICE_BUFFER_MAX));
            break;
        }
        rc = send_buffer(saver, device, index, last ? DEVICE_LAST : 0, piece->data, piece->len,
                         &in_flight->sent, err);
    }
    device->saved_size = total;
    if (rc == 0)
        vmstate_record_timing(device, total, save_us);
    return rc;
}

/* One device's stop-copy state, cut into buffers of DEVICE_BUFFER_MAX. */
static int send_device_state(struct vmstate_saver *saver, struct device *device,
                             struct gw_buffer *state, struct gw_error *err)
{
    size_t offset = 0;
    uint32_t index = 0;
    int rc;

    if (device->ops->save_piece)
        return send_device_pieces(saver, device, err);
    uint64_t started = vmstate_now_us();
    rc = device->ops->save(device->opaque, state, err);
    if (rc < 0)
        return gw_error_prefix(err, "saving device '%s'", device->id), rc;
    vmstate_record_timing(device, state->len, vmstate_now_us() - started);
    if (state->len > DEVICE_STATE_MAX)
        return gw_error_set(err, -EMSGSIZE, "device '%s' saved %zu bytes, more than %llu",
                            device->id, state->len, (unsigned long long)DEVICE_STATE_MAX);
    device->saved_size = state->len;
    do {
        size_t len = state->len - offset < DEVICE_BUFFER_MAX ? state->len - offset
                                                             : DEVICE_BUFFER_MAX;
        uint32_t flags = offset + len == state->len ? DEVICE_LAST : 0;
        const uint8_t *data = state->data ? state->data + offset : NULL;
        rc = send_buffer(saver, device, index++, flags, data, len, NULL, err);
        offset += len;
    } while (rc == 0 && offset < state->len);
    return rc;
}

int vmstate_save_stopcopy(struct vmstate_saver *saver, struct gw_error *err)
{
    struct device_registry *devices = saver->devices;
    struct gw_buffer state = { 0 };
    int rc = 0;

    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; devices && i < devices->count && rc == 0; i++) {
            struct device *device = &devices->devices[i];
            bool multifd = on_multifd(saver, device);
            if (multifd != (round == 0))
                continue;
            gw_buffer_reset(&state);
            /* A whole state on a multifd channel is sent after this loop
             * moves on: it needs a buffer of its own. */
            struct gw_buffer *kept = multifd && !device->ops->save_piece ? keep_buffer(saver, err)
                                                                         : &state;
            rc = kept ? send_device_state(saver, device, kept, err) : -ENOMEM;
        }
    }
    gw_buffer_free(&state);
    return rc;
}
