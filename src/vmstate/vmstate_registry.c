/* The device registry: a fixed table, filled at start-up, read by the
 * migration threads afterwards (never changed while a migration runs). */
#include <godwit/device.h>

#include <errno.h>
#include <string.h>

int device_register(struct device_registry *registry, const char *id, uint32_t instance,
                    uint32_t version, const struct device_ops *ops, void *opaque,
                    struct gw_error *err)
{
    struct device *device;

    if (strlen(id) == 0 || strlen(id) >= DEVICE_ID_MAX)
        return gw_error_set(err, -EINVAL, "device id '%s' must be 1 to %d bytes", id,
                            DEVICE_ID_MAX - 1);
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
