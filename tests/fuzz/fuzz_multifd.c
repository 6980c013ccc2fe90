/* Fuzzes what a destination reads on a multifd connection before and
 * besides pages: the channel header, the CONFIG record, and device-state
 * buffers in any order, put together and loaded by the load thread. The
 * first input byte picks which; records come as stream records. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migration_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
    const uint8_t *data;
    size_t size, pos;
};

static int read_input(void *opaque, void *buf, size_t len, struct gw_error *err)
{
    struct input *input = opaque;

    if (len > input->size - input->pos)
        return gw_error_set(err, -ENODATA, "end of input");
    memcpy(buf, input->data + input->pos, len);
    input->pos += len;
    return 0;
}

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

static const struct device_ops multifd_ops = { .load = load_state, .multifd = true };
static const struct device_ops main_ops = { .load = load_state };

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

static void fuzz_device_buffers(const uint8_t *data, size_t size)
{
    static struct device_registry devices;
    static uint8_t sink[1];
    struct migration migration = { .channel = { .fd = -1 } };
    struct input input = { data, size, 0 };
    struct stream_reader reader = { .io = { .read = read_input, .opaque = &input },
                                    .page_size = 4096 };
    struct stream_record record;
    struct load_state state;
    struct gw_error err = { 0 };

    if (!devices.count) {
        device_register(&devices, "gpu0", 0, 1, &multifd_ops, sink, NULL);
        device_register(&devices, "cpu", 0, 1, &main_ops, sink, NULL);
    }
    pthread_mutex_init(&migration.lock, NULL);
    load_state_init(&state, NULL, 0, &devices);
    if (multifd_recv_start(&migration, &state, 4096, &err) == 0) {
        while (stream_read_record(&reader, &record, &err) == 0 && record.type == REC_DEVICE &&
               multifd_recv_device(state.multifd, &reader, &record, &err) == 0)
            ;
        multifd_recv_finish(state.multifd, &state, &err);
    }
    multifd_recv_free(state.multifd);
    load_state_free(&state);
    stream_reader_free(&reader);
    pthread_mutex_destroy(&migration.lock);
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
