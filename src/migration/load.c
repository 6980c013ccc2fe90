/* The destination's record loop: the order the stream must follow
 * (RAM_BLOCKS first, END last) and the final checks
 * that nothing was lost on the way. Used by the incoming thread and the
 * stream fuzzer alike. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define DEVICE_HEADER 40   /* id[32], instance u32, version u32 */

static int load_device(struct load_state *state, const struct stream_record *record,
                       struct gw_error *err)
{
    char id[DEVICE_ID_MAX + 1] = { 0 };
    uint32_t instance, version;
    struct device *device;
    int rc;

    if (record->length < DEVICE_HEADER)
        return gw_error_set(err, -EPROTO, "DEVICE record at stream offset %" PRIu64
                            " is too short", record->offset);
    memcpy(id, record->body, DEVICE_ID_MAX);
    memcpy(&instance, record->body + 32, 4);
    memcpy(&version, record->body + 36, 4);
    device = state->devices ? device_find(state->devices, id, instance) : NULL;
    if (!device)
        return gw_error_set(err, -ENOENT,
                            "the stream carries state for device '%.32s' instance %u, which "
                            "this VM does not have", id, instance);
    if (state->device_seen[device - state->devices->devices])
        return gw_error_set(err, -EPROTO, "device '%s' instance %u arrived twice", id, instance);
    rc = device->ops->load(device->opaque, record->body + DEVICE_HEADER,
                           record->length - DEVICE_HEADER, version, err);
    if (rc < 0) {
        gw_error_prefix(err, "loading device '%s' instance %u", id, instance);
        return rc;
    }
    state->device_seen[device - state->devices->devices] = true;
    state->devices_loaded++;
    return 0;
}

void load_state_free(struct load_state *state)
{
    for (unsigned i = 0; i < STREAM_BLOCKS_MAX; i++) {
        free(state->torn[i]);
        state->torn[i] = NULL;
    }
}

static int check_end(struct load_state *state, const struct stream_record *record,
                     struct gw_error *err)
{
    uint64_t counts[3];
    int rc = ram_check_torn(state, err);

    if (rc < 0)
        return rc;
    if (record->length != sizeof(counts))
        return gw_error_set(err, -EPROTO, "END record has %u bytes, not 24", record->length);
    memcpy(counts, record->body, sizeof(counts));
    if (counts[0] != state->normal_pages || counts[1] != state->zero_pages ||
        counts[2] != state->devices_loaded)
        return gw_error_set(err, -EPROTO,
                            "the source sent %" PRIu64 " pages, %" PRIu64 " zero pages and %"
                            PRIu64 " devices, but %" PRIu64 ", %" PRIu64 " and %" PRIu64
                            " arrived: records were lost",
                            counts[0], counts[1], counts[2], state->normal_pages,
                            state->zero_pages, state->devices_loaded);
    for (unsigned i = 0; state->devices && i < state->devices->count; i++)
        if (!state->device_seen[i])
            return gw_error_set(err, -EPROTO, "the source sent no state for device '%s' "
                                "instance %u", state->devices->devices[i].id,
                                state->devices->devices[i].instance);
    return 0;
}

static int load_record(struct stream_reader *reader, struct load_state *state,
                       struct stream_record *record, struct gw_error *err)
{
    switch (record->type) {
    case REC_PAGES:
        return ram_load_pages(reader, record, state, err);
    case REC_ZERO_PAGES:
        return ram_load_zero_pages(state, reader->page_size, record->body, record->length, err);
    case REC_DEVICE:
        return load_device(state, record, err);
    case REC_PASS_END:
        return 0;
    default:
        return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64
                            " does not belong in a migration stream here",
                            stream_record_name(record->type), record->offset);
    }
}

int migration_load_stream(struct stream_reader *reader, struct load_state *state,
                          struct gw_error *err)
{
    struct stream_record record;
    int rc = stream_read_header(reader, err);

    if (rc < 0)
        return rc;
    rc = stream_read_record(reader, &record, err);
    if (rc < 0)
        return rc;
    if (record.type != REC_RAM_BLOCKS)
        return gw_error_set(err, -EPROTO, "the stream starts with a %s record, not RAM_BLOCKS",
                            stream_record_name(record.type));
    rc = ram_check_blocks(state->blocks, state->nr_blocks, reader->page_size, record.body,
                          record.length, err);
    if (rc < 0)
        return rc;
    for (;;) {
        rc = stream_read_record(reader, &record, err);
        if (rc < 0)
            return rc;
        if (record.type == REC_END)
            return check_end(state, &record, err);
        rc = load_record(reader, state, &record, err);
        if (rc < 0)
            return rc;
    }
}
