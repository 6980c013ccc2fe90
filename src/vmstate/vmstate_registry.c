/* The device registry: a fixed table, filled at start-up, read by the
 * migration threads afterwards (never changed while a migration runs). */
#include <godwit/device.h>

#include <errno.h>
#include <stdbool.h>
#include <string.h>

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

int device_measure(struct device_registry *registry, struct gw_error *err)
{
    struct gw_buffer state = { 0 };
    int rc = 0;

    for (unsigned i = 0; i < registry->count && rc == 0; i++) {
        struct device *device = &registry->devices[i];
        if (device->ops->query_pending)
            continue;   /* it says what it holds: no need to save it all to know */
        gw_buffer_reset(&state);
        rc = device->ops->save(device->opaque, &state, err);
        if (rc < 0)
            gw_error_prefix(err, "measuring device '%s'", device->id);
        else
            device->saved_size = state.len;
    }
    gw_buffer_free(&state);
    return rc;
}
