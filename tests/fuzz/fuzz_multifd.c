/* Fuzzes what a destination reads on a multifd connection before and
 * besides pages: the channel header, the CONFIG record, and device-state
 * buffers in any order, put together and loaded by the device loader. The
 * first input byte picks which; records come as stream records. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel_header.h"
#include "migration/migration_internal.h"
#include "vmstate/vmstate_internal.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The loaded state must be what was sent: its size is bounded by the
 * assembly, and every byte is readable. */
static int load_state(void *opaque, const uint8_t *state, size_t len, uint32_t version,
                      struct gw_error *err)
{
    uint8_t *sink = opaque;
    uint8_t sum = 0;

    (void)version;
    if (len > DEVICE_STATE_MAX)
        return gw_error_set(err, -EINVAL, "state larger than the maximum");
    for (size_t i = 0; i < len; i += 4096)
        sum ^= state[i];
    sink[0] = sum;
    return 0;
}

/* Only the destination's side runs here; registration wants a whole table. */
static int save_nothing(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    (void)opaque, (void)out, (void)err;
    return 0;
}

static const struct device_ops multifd_ops = { .save = save_nothing, .load = load_state,
                                                .multifd = true };
static const struct device_ops main_ops = { .save = save_nothing, .load = load_state };

static void fuzz_header(const uint8_t *data, size_t size)
{
    uint8_t header[CHANNEL_HEADER_SIZE] = { 0 }, id[16];
    uint32_t type, index;

    memcpy(header, data, size < sizeof(header) ? size : sizeof(header));
    channel_header_decode(header, &type, &index, id, NULL);
}

static void fuzz_config(const uint8_t *data, size_t size)
{
    struct migration_config ours = { .multifd = 1, .channels = 2, .zero_detection = 2,
                                     .channel_header = 1 }, theirs;

    config_check(&ours, data, (uint32_t)(size > 64 ? 64 : size), &theirs, NULL);
}

/* Every buffer goes through the device loader as a multifd receiver's
 * would: checked, put together, loaded by the load thread. */
static void fuzz_device_buffers(const uint8_t *data, size_t size)
{
    static struct device_registry devices;
    static uint8_t sink[1];
    struct fuzz_input input = { data, size, 0 };
    struct stream_reader reader = { .io = { .read = fuzz_read_input, .opaque = &input },
                                    .page_size = 4096 };
    struct stream_record record;
    struct device_loader *loader;
    struct gw_error err = { 0 };
    uint64_t loaded;

    if (!devices.count) {
        if (device_register(&devices, "gpu0", 0, 1, &multifd_ops, sink, NULL) < 0)
            abort();
        if (device_register(&devices, "cpu", 0, 1, &main_ops, sink, NULL) < 0)
            abort();
    }
    loader = device_loader_new(&devices, NULL, NULL, &err);
    if (!loader)
        abort();
    while (stream_read_record(&reader, &record, &err) == 0 && record.type == REC_DEVICE &&
           device_loader_feed(loader, &reader, &record, true, &err) == 0)
        ;
    if (device_loader_finish(loader, &loaded, &err) == 0)
        device_loader_check(loader, &err);
    device_loader_free(loader);
    stream_reader_free(&reader);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0: fuzz_header(data + 1, size - 1); break;
    case 1: fuzz_config(data + 1, size - 1); break;
    default: fuzz_device_buffers(data + 1, size - 1); break;
    }
    return 0;
}
