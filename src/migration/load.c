/* The destination's record loop: the order the stream must follow
 * (RAM_BLOCKS first, END last) and the final checks
 * that nothing was lost on the way. Used by the incoming thread and the
 * stream fuzzer alike. */
#include "migration_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int load_precopy_buffer(struct load_state *state, struct device *device, unsigned slot,
                               uint32_t index, uint32_t version, const uint8_t *data,
                               size_t len, struct gw_error *err)
{
    int rc;

    if (!device->ops->load_precopy)
        return gw_error_set(err, -EPROTO, "device '%s' got precopy data, which it does not "
                            "take", device->id);
    if (index != state->next_precopy[slot])
        return gw_error_set(err, -EPROTO, "device '%s' precopy buffer %u arrived, %u was "
                            "expected", device->id, index, state->next_precopy[slot]);
    rc = device->ops->load_precopy(device->opaque, data, len, version, err);
    if (rc < 0)
        return rc;
    state->next_precopy[slot]++;
    return 0;
}

/* A device that loads pieces gets each as it comes, as a VFIO device's
 * state is written to it chunk by chunk: no copy of the whole state here. */
static int load_piece_in_order(struct load_state *state, struct device *device, unsigned slot,
                               uint32_t index, uint32_t flags, uint32_t version,
                               const uint8_t *data, size_t len, struct gw_error *err)
{
    int rc = device->ops->load_piece(device->opaque, index, data, len, version, err);

    if (rc < 0)
        return rc;
    state->next_buffer[slot]++;
    state->piece_bytes[slot] += len;
    if (!(flags & DEVICE_LAST))
        return 0;
    rc = device->ops->load_finish(device->opaque, index + 1, version, err);
    if (rc < 0)
        return rc;
    state->device_seen[slot] = true;
    state->devices_loaded++;
    return 0;
}

/* Stop-copy buffers come in order; the last one hands the whole state to
 * the device's load (or, for a device that loads pieces, each buffer goes
 * to it at once). Every index and size is checked against its bound. */
static int load_state_buffer(struct load_state *state, struct device *device, unsigned slot,
                             uint32_t index, uint32_t flags, uint32_t version,
                             const uint8_t *data, size_t len, struct gw_error *err)
{
    struct gw_buffer *parts = &state->device_parts[slot];
    int rc;

    if (state->device_seen[slot])
        return gw_error_set(err, -EPROTO, "device '%s' instance %u arrived twice", device->id,
                            device->instance);
    if (index != state->next_buffer[slot])
        return gw_error_set(err, -EPROTO, "device '%s' buffer %u arrived, %u was expected "
                            "(buffers missing or duplicated)", device->id, index,
                            state->next_buffer[slot]);
    if (len > DEVICE_STATE_MAX - parts->len - state->piece_bytes[slot])
        return gw_error_set(err, -EPROTO, "device '%s' state grows past %llu bytes",
                            device->id, (unsigned long long)DEVICE_STATE_MAX);
    if (device->ops->load_piece)
        return load_piece_in_order(state, device, slot, index, flags, version, data, len, err);
    if (len && gw_buffer_append(parts, data, len) < 0)
        return gw_error_set(err, -ENOMEM, "out of memory for device '%s' state", device->id);
    state->next_buffer[slot]++;
    if (!(flags & DEVICE_LAST))
        return 0;
    rc = device->ops->load(device->opaque, parts->data ? parts->data : (const uint8_t *)"",
                           parts->len, version, err);
    gw_buffer_free(parts);
    if (rc < 0)
        return rc;
    state->device_seen[slot] = true;
    state->devices_loaded++;
    return 0;
}

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

static int load_device(struct load_state *state, const struct stream_record *record,
                       struct gw_error *err)
{
    struct device_record_head head;
    struct device *device;
    unsigned slot;
    int rc = device_record_head(record, &head, err);

    if (rc < 0)
        return rc;
    device = state->devices ? device_find(state->devices, head.id, head.instance) : NULL;
    if (!device)
        return gw_error_set(err, -ENOENT,
                            "the stream carries state for device '%.32s' instance %u, which "
                            "this VM does not have", head.id, head.instance);
    if (head.flags & ~(DEVICE_LAST | DEVICE_PRECOPY) ||
        (head.flags & DEVICE_LAST && head.flags & DEVICE_PRECOPY))
        return gw_error_set(err, -EPROTO, "DEVICE record at stream offset %" PRIu64
                            " has flags 0x%x", record->offset, head.flags);
    slot = (unsigned)(device - state->devices->devices);
    if (!(head.flags & DEVICE_PRECOPY) && state->multifd)
        multifd_recv_precopy_done(state->multifd);
    if (head.flags & DEVICE_PRECOPY)
        rc = load_precopy_buffer(state, device, slot, head.index, head.version,
                                 record->body + DEVICE_RECORD_HEADER,
                                 record->length - DEVICE_RECORD_HEADER, err);
    else
        rc = load_state_buffer(state, device, slot, head.index, head.flags, head.version,
                               record->body + DEVICE_RECORD_HEADER,
                               record->length - DEVICE_RECORD_HEADER, err);
    if (rc < 0)
        gw_error_prefix(err, "loading device '%s' instance %u", head.id, head.instance);
    return rc;
}

void load_state_free(struct load_state *state)
{
    for (unsigned i = 0; i < STREAM_BLOCKS_MAX; i++) {
        free(state->own_torn.bitmaps[i]);
        state->own_torn.bitmaps[i] = NULL;
    }
    pthread_mutex_destroy(&state->own_torn.lock);
    for (unsigned i = 0; i < DEVICE_MAX; i++)
        gw_buffer_free(&state->device_parts[i]);
}

static int check_end(struct load_state *state, const struct stream_record *record,
                     struct gw_error *err)
{
    uint64_t counts[3];
    int rc = state->multifd ? multifd_recv_finish(state->multifd, state, err) : 0;

    if (rc == 0)
        rc = ram_check_torn(state, err);
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
    case REC_SWITCHOVER:
        if (state->multifd)
            multifd_recv_precopy_done(state->multifd);
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
    rc = stream_read_record(reader, &record, err);
    if (rc < 0)
        return rc;
    if (record.type != REC_CONFIG)
        return gw_error_set(err, -EPROTO, "the stream has a %s record after RAM_BLOCKS, not "
                            "CONFIG", stream_record_name(record.type));
    struct migration_config theirs;
    rc = config_check(&state->config, record.body, record.length, &theirs, err);
    if (rc == 0 && state->after_config) {
        memcpy(state->config.id, theirs.id, sizeof(theirs.id));
        rc = state->after_config(state->after_config_opaque, state, err);
    }
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
