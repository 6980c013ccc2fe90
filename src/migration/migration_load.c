/* The destination's record loop; see migration_load.h. */
#include "migration_load.h"

#include "multifd/multifd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int load_state_init(struct load_state *state, const struct ram_block *blocks,
                    unsigned nr_blocks, const struct page_landing *landing,
                    struct device_registry *devices,
                    void (*on_failure)(void *opaque, const struct gw_error *err),
                    void *opaque, struct gw_error *err)
{
    memset(state, 0, sizeof(*state));
    ram_loader_init(&state->ram, blocks, nr_blocks, landing);
    state->config.zero_detection = ZERO_DETECT_MULTIFD;
    state->devices = device_loader_new(devices, on_failure, opaque, err);
    return state->devices ? 0 : -ENOMEM;
}

void load_state_free(struct load_state *state)
{
    device_loader_free(state->devices);
    state->devices = NULL;
    ram_loader_destroy(&state->ram);
}

static int check_counts(struct load_state *state, const struct stream_record *record,
                        uint64_t devices_loaded, struct gw_error *err);

static int check_end(struct load_state *state, const struct stream_record *record,
                     struct gw_error *err)
{
    uint64_t devices_loaded = 0;
    int rc = state->multifd ? multifd_recv_finish(state->multifd, &state->counts, err) : 0;

    if (state->postcopy_listening)
        return gw_error_set(err, -EPROTO, "END at stream offset %" PRIu64 " in the middle of "
                            "the switch to postcopy (POSTCOPY_RUN never came)", record->offset);
    if (rc == 0)
        rc = device_loader_finish(state->devices, &devices_loaded, err);
    if (rc == 0)
        rc = device_loader_check(state->devices, err);
    if (rc == 0)
        rc = ram_check_torn(&state->ram, err);
    if (rc < 0)
        return rc;
    return check_counts(state, record, devices_loaded, err);
}

/* END's counts against what arrived: lost records show here. */
static int check_counts(struct load_state *state, const struct stream_record *record,
                        uint64_t devices_loaded, struct gw_error *err)
{
    uint64_t counts[3];

    if (record->length != sizeof(counts))
        return gw_error_set(err, -EPROTO, "END record has %u bytes, not 24", record->length);
    memcpy(counts, record->body, sizeof(counts));
    if (counts[0] != state->counts.normal_pages || counts[1] != state->counts.zero_pages ||
        counts[2] != devices_loaded)
        return gw_error_set(err, -EPROTO,
                            "the source sent %" PRIu64 " pages, %" PRIu64 " zero pages and %"
                            PRIu64 " devices, but %" PRIu64 ", %" PRIu64 " and %" PRIu64
                            " arrived: records were lost",
                            counts[0], counts[1], counts[2], state->counts.normal_pages,
                            state->counts.zero_pages, devices_loaded);
    return 0;
}

/* u32 running (0 or 1), u32 reserved (0): once per stream. */
static int load_run_state(struct load_state *state, const struct stream_record *record,
                          struct gw_error *err)
{
    uint32_t fields[2];

    if (record->length != sizeof(fields))
        return gw_error_set(err, -EPROTO, "RUN_STATE record at stream offset %" PRIu64
                            " has %u bytes, not 8", record->offset, record->length);
    memcpy(fields, record->body, sizeof(fields));
    if (fields[0] > 1 || fields[1] != 0)
        return gw_error_set(err, -EPROTO, "RUN_STATE record at stream offset %" PRIu64
                            " says running=%u, reserved=%u; running is 0 or 1, reserved 0",
                            record->offset, fields[0], fields[1]);
    if (state->run_state_seen)
        return gw_error_set(err, -EPROTO, "a second RUN_STATE record at stream offset %"
                            PRIu64 "; a stream has one", record->offset);
    state->run_state_seen = true;
    state->source_paused = fields[0] == 0;
    return 0;
}

static int forget_torn(void *opaque, uint32_t block, uint64_t first, uint64_t pages,
                       struct gw_error *err)
{
    struct load_state *state = opaque;

    ram_loader_forget_torn(&state->ram, block, first, pages);
    return postcopy_ram_discard(state->postcopy, block, first, pages, err);
}

/* u32 flags (POSTCOPY_ADVISE_PREEMPT), u32 reserved; once, before pages. */
static int load_advise(struct load_state *state, const struct stream_record *record,
                       struct gw_error *err)
{
    uint32_t fields[2];

    if (!state->postcopy)
        return gw_error_set(err, -EINVAL, "the source may switch to postcopy (capability "
                            "postcopy-ram), which this destination does not have: set the "
                            "capability on both sides, or on neither");
    if (record->length != POSTCOPY_ADVISE_SIZE)
        return gw_error_set(err, -EPROTO, "POSTCOPY_ADVISE record has %u bytes, not %d",
                            record->length, POSTCOPY_ADVISE_SIZE);
    memcpy(fields, record->body, sizeof(fields));
    if ((fields[0] & ~POSTCOPY_ADVISE_PREEMPT) || fields[1] || state->postcopy_advised)
        return gw_error_set(err, -EPROTO, "POSTCOPY_ADVISE at stream offset %" PRIu64 " says "
                            "flags 0x%x, reserved %u; flags are 0 or 1, reserved 0, once",
                            record->offset, fields[0], fields[1]);
    state->preempt_advised = fields[0] & POSTCOPY_ADVISE_PREEMPT;
    if (state->preempt_advised != state->postcopy_preempt)
        return gw_error_set(err, -EINVAL, "the source %s postcopy-preempt, this destination "
                            "%s: set the capability on both sides, or on neither",
                            state->preempt_advised ? "uses" : "does not use",
                            state->postcopy_preempt ? "does" : "does not");
    state->postcopy_advised = true;
    return 0;
}

/* The switch's records, in their order: ADVISE (once, early), LISTEN
 * (the guest stopped there, every multifd channel at its end), DISCARD*,
 * RUN. */
static int load_postcopy_record(struct load_state *state, struct stream_record *record,
                                struct gw_error *err)
{
    int rc;

    if (record->type == REC_POSTCOPY_ADVISE)
        return load_advise(state, record, err);
    if (!state->postcopy_advised || (record->type == REC_POSTCOPY_LISTEN) ==
                                        state->postcopy_listening)
        return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64 " out of "
                            "order: postcopy goes ADVISE, LISTEN, DISCARD*, RUN",
                            stream_record_name(record->type), record->offset);
    switch (record->type) {
    case REC_POSTCOPY_LISTEN:
        /* Every page of precopy lands before any is discarded. */
        if (state->multifd && (rc = multifd_recv_finish(state->multifd, &state->counts, err)) < 0)
            return rc;
        if ((rc = postcopy_ram_listen(state->postcopy, state->vcpu_tids, state->nr_vcpus,
                                      err)) < 0 ||
            (state->postcopy_listen &&
             (rc = state->postcopy_listen(state->after_config_opaque, state, err)) < 0))
            return rc;
        state->ram.landing = postcopy_ram_landing(state->postcopy, 0);
        state->postcopy_listening = true;
        return 0;
    case REC_POSTCOPY_DISCARD:
        return postcopy_discard_decode(record->body, record->length, state->ram.blocks,
                                       state->ram.nr_blocks, forget_torn, state, err);
    default:   /* REC_POSTCOPY_RUN */
        if ((rc = device_loader_finish(state->devices, &state->devices_loaded, err)) < 0 ||
            (rc = device_loader_check(state->devices, err)) < 0 ||
            (rc = ram_check_torn(&state->ram, err)) < 0)
            return rc;
        return LOAD_POSTCOPY_RUN;
    }
}

static int load_record(struct stream_reader *reader, struct load_state *state,
                       struct stream_record *record, struct gw_error *err)
{
    switch (record->type) {
    case REC_POSTCOPY_ADVISE:
    case REC_POSTCOPY_LISTEN:
    case REC_POSTCOPY_DISCARD:
    case REC_POSTCOPY_RUN:
        return load_postcopy_record(state, record, err);
    case REC_PAGES:
        return ram_load_pages(reader, record, &state->ram, &state->counts, err);
    case REC_ZERO_PAGES:
        return ram_load_zero_pages(&state->ram, &state->counts, reader->page_size, record->body,
                                   record->length, err);
    case REC_DEVICE:
        return device_loader_feed(state->devices, reader, record, false, err);
    case REC_PASS_END:
        return 0;
    case REC_SWITCHOVER:
        device_loader_precopy_done(state->devices);
        return 0;
    case REC_RUN_STATE:
        return load_run_state(state, record, err);
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
    rc = ram_check_blocks(state->ram.blocks, state->ram.nr_blocks, reader->page_size,
                          record.body, record.length, err);
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
        if (rc != 0)
            return rc;
    }
}

int migration_load_postcopy(struct stream_reader *reader, struct load_state *state,
                            struct gw_error *err)
{
    struct stream_record record;
    int rc;

    for (;;) {
        if ((rc = stream_read_record(reader, &record, err)) < 0)
            return rc;
        switch (record.type) {
        case REC_PAGES:
            rc = ram_load_pages(reader, &record, &state->ram, &state->counts, err);
            break;
        case REC_ZERO_PAGES:
            rc = ram_load_zero_pages(&state->ram, &state->counts, reader->page_size,
                                     record.body, record.length, err);
            break;
        case REC_END:
            /* The preempt channel ends before END: its pages count too. */
            if ((state->preempt_finish &&
                 (rc = state->preempt_finish(state->after_config_opaque, state, err)) < 0) ||
                (rc = ram_check_torn(&state->ram, err)) < 0)
                return rc;
            return check_counts(state, &record, state->devices_loaded, err);
        default:
            return gw_error_set(err, -EPROTO, "%s record at stream offset %" PRIu64 " in "
                                "postcopy, where only PAGES, ZERO_PAGES and END belong",
                                stream_record_name(record.type), record.offset);
        }
        if (rc < 0)
            return rc;
    }
}
