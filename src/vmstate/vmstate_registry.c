/* The device registry: a fixed table, filled at start-up, read by the
 * migration threads afterwards (only the migration thread writes what it
 * learns of a device's state: its size and how fast it saves). */
#include "vmstate_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

/* The engine calls what device.h promises it may: an ops table that lacks
 * one is refused here, by name, not found missing in the middle of a
 * migration. */
static int check_ops(const char *id, const struct device_ops *ops, struct gw_error *err)
{
    bool pieces = ops && ops->save_piece, load_pieces = ops && ops->load_piece;

    if (!ops)
        return gw_error_set(err, -EINVAL, "device '%s' has no ops", id);
    if (pieces != load_pieces || load_pieces != (ops->load_finish != NULL))
        return gw_error_set(err, -EINVAL, "device '%s' has %s but not %s: save_piece, "
                            "load_piece and load_finish go together", id,
                            pieces ? "save_piece" : load_pieces ? "load_piece" : "load_finish",
                            !pieces ? "save_piece" : !load_pieces ? "load_piece"
                                                                  : "load_finish");
    if (!pieces && !ops->save)
        return gw_error_set(err, -EINVAL, "device '%s' has no save: it needs save, or "
                            "save_piece with load_piece and load_finish", id);
    if (!load_pieces && !ops->load)
        return gw_error_set(err, -EINVAL, "device '%s' has no load: it needs load, or "
                            "load_piece with save_piece and load_finish", id);
    if (!ops->save && !ops->query_pending)
        return gw_error_set(err, -EINVAL, "device '%s' has neither save nor query_pending: "
                            "the engine cannot learn how much state it holds", id);
    if (!ops->save_precopy != !ops->load_precopy)
        return gw_error_set(err, -EINVAL, "device '%s' has %s but not %s: the two go "
                            "together", id, ops->save_precopy ? "save_precopy" : "load_precopy",
                            ops->save_precopy ? "load_precopy" : "save_precopy");
    return 0;
}

int device_register(struct device_registry *registry, const char *id, uint32_t instance,
                    uint32_t version, const struct device_ops *ops, void *opaque,
                    struct gw_error *err)
{
    struct device *device;
    int rc;

    if (strlen(id) == 0 || strlen(id) >= DEVICE_ID_MAX)
        return gw_error_set(err, -EINVAL, "device id '%s' must be 1 to %d bytes", id,
                            DEVICE_ID_MAX - 1);
    if ((rc = check_ops(id, ops, err)) < 0)
        return rc;
    if (device_find(registry, id, instance))
        return gw_error_set(err, -EEXIST, "device '%s' instance %u is registered twice", id,
                            instance);
    if (registry->count == DEVICE_MAX)
        return gw_error_set(err, -ENOSPC, "more than %d devices", DEVICE_MAX);
    device = &registry->devices[registry->count++];
    memset(device, 0, sizeof(*device));
    strcpy(device->id, id);
    device->instance = instance;
    device->version = version;
    device->ops = ops;
    device->opaque = opaque;
    return 0;
}

struct device *device_find(struct device_registry *registry, const char *id,
                           uint32_t instance)
{
    for (unsigned i = 0; i < registry->count; i++) {
        struct device *device = &registry->devices[i];
        if (device->instance == instance && !strncmp(device->id, id, DEVICE_ID_MAX))
            return device;
    }
    return NULL;
}

uint64_t vmstate_now_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

/* Below this a save's time is mostly the cost of the call. */
#define TIMING_MIN_BYTES (256u << 10)

void vmstate_record_timing(struct device *device, uint64_t bytes, uint64_t us)
{
    if (bytes == 0 || (bytes < TIMING_MIN_BYTES && device->timed_bytes >= TIMING_MIN_BYTES))
        return;
    device->timed_bytes = bytes;
    device->timed_us = us ? us : 1;
}

/* A device that says what it holds is not saved whole just to time it:
 * one piece, into a buffer touched beforehand as the stop-copy's are, tells
 * its rate. Only a device with save_setup, which starts the next stop-copy
 * over at its first piece. */
static int time_one_piece(struct device *device, struct gw_error *err)
{
    struct gw_buffer piece = { 0 };
    bool last = false;
    uint64_t started;
    int rc;

    if (gw_buffer_prepare(&piece, DEVICE_BUFFER_MAX) < 0)
        return gw_error_set(err, -ENOMEM, "out of memory timing device '%s'", device->id);
    started = vmstate_now_us();
    rc = device->ops->save_piece(device->opaque, &piece, DEVICE_BUFFER_MAX, &last, err);
    if (rc == 0)
        vmstate_record_timing(device, piece.len, vmstate_now_us() - started);
    gw_buffer_free(&piece);
    return rc;
}

int device_measure(struct device_registry *registry, struct gw_error *err)
{
    struct gw_buffer state = { 0 };
    int rc = 0;

    for (unsigned i = 0; i < registry->count && rc == 0; i++) {
        struct device *device = &registry->devices[i];
        if (device->ops->query_pending) {
            /* it says what it holds: no need to save it all to know */
            if (device->ops->save_piece && device->ops->save_setup &&
                (rc = time_one_piece(device, err)) < 0)
                gw_error_prefix(err, "timing device '%s'", device->id);
            continue;
        }
        gw_buffer_reset(&state);
        uint64_t started = vmstate_now_us();
        rc = device->ops->save(device->opaque, &state, err);
        if (rc < 0) {
            gw_error_prefix(err, "measuring device '%s'", device->id);
            break;
        }
        device->saved_size = state.len;
        vmstate_record_timing(device, state.len, vmstate_now_us() - started);
    }
    gw_buffer_free(&state);
    return rc;
}
