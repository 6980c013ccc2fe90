/* Fuzzes the destination's whole stream loader: header, record framing,
 * CRCs, RAM_BLOCKS, CONFIG, PAGES, ZERO_PAGES, DEVICE and END. The RAM block is
 * surrounded by guard bytes that must never change: invariant 2 of
 * DESIGN.md, "never writes outside a block". */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migration/migration_load.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Must match the saved seeds: a 32 MiB godwit-vm guest. */
#define RAM_SIZE (32u << 20)

static int load_any(void *opaque, const uint8_t *state, size_t len, uint32_t version,
                    struct gw_error *err)
{
    uint8_t *sink = opaque;

    (void)version;
    if (len > 65536)
        return gw_error_set(err, -EINVAL, "state too large");
    if (len)
        memcpy(sink, state, len);
    return 0;
}

/* Only the destination's side runs here; registration wants a whole table. */
static int save_nothing(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    (void)opaque, (void)out, (void)err;
    return 0;
}

static const struct device_ops fake_ops = { .save = save_nothing, .load = load_any };
static const char *const device_ids[] = { "kvm-irqchip", "kvm-pit", "kvm-clock", "cpu",
                                          "serial", "soft-cpu" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *memory;
    static uint8_t sink[65536];
    static struct device_registry devices;
    struct fuzz_input input = { data, size, 0 };
    struct stream_reader reader = { .io = { .read = fuzz_read_input, .opaque = &input } };
    struct ram_block block = { "ram-below-4g", NULL, RAM_SIZE, 4096, 0, -1, 0 };
    struct load_state state;
    uint64_t written_words[RAM_SIZE / 4096 / 64] = { 0 };
    uint64_t *written[1] = { written_words };
    struct ram_direct_landing direct = { .blocks = &block };
    struct page_landing landing = ram_direct_landing(&direct);

    if (!memory) {
        memory = malloc(FUZZ_GUARD + RAM_SIZE + FUZZ_GUARD);
        for (size_t i = 0; i < sizeof(device_ids) / sizeof(device_ids[0]); i++)
            if (device_register(&devices, device_ids[i], 0, 1, &fake_ops, sink, NULL) < 0)
                abort();
    }
    if (load_state_init(&state, &block, 1, &landing, &devices, NULL, NULL, NULL) < 0)
        abort();
    fuzz_guards_set(memory, RAM_SIZE);
    block.host = memory + FUZZ_GUARD;
    /* Half the inputs take the fresh-RAM path (written bitmaps). */
    if (size && (data[size - 1] & 1))
        direct.written = written;
    migration_load_stream(&reader, &state, NULL);
    load_state_free(&state);
    stream_reader_free(&reader);
    fuzz_guards_check(memory, RAM_SIZE);
    return 0;
}
