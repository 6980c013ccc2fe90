/* Port I/O dispatch: a short table searched linearly (a handful of devices),
 * plus the counters for what nobody claims. */
#include "pio.h"

#include <stdio.h>
#include <string.h>

/* POST diagnostic port: firmware and kernels write progress codes here. */
#define PORT_POST 0x80

void pio_init(struct pio_bus *bus)
{
    memset(bus, 0, sizeof(*bus));
    pthread_mutex_init(&bus->lock, NULL);
}

int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len, pio_fn fn, void *opaque)
{
    if (bus->nr_handlers == PIO_MAX_HANDLERS)
        return -1;
    bus->handlers[bus->nr_handlers++] = (struct pio_handler){ base, len, fn, opaque };
    return 0;
}

static void unhandled_port(struct pio_bus *bus, uint16_t port, bool is_write, uint8_t *data,
                           unsigned size)
{
    bool first;

    if (!is_write)
        memset(data, 0xff, size);   /* what an empty ISA bus reads as */
    if (port == PORT_POST)
        return;
    pthread_mutex_lock(&bus->lock);
    bus->unhandled_pio++;
    first = !(bus->reported_ports[port / 8] & (1u << (port % 8)));
    bus->reported_ports[port / 8] |= (uint8_t)(1u << (port % 8));
    pthread_mutex_unlock(&bus->lock);
    if (first)
        fprintf(stderr, "godwit-vm: guest %s port 0x%x, which no device handles "
                "(reported once; ignored)\n", is_write ? "wrote" : "read", port);
}

void pio_handle(struct pio_bus *bus, uint16_t port, bool is_write, uint8_t *data,
                unsigned size, unsigned count)
{
    for (unsigned i = 0; i < count; i++, data += size) {
        const struct pio_handler *handler = NULL;
        for (unsigned h = 0; h < bus->nr_handlers; h++) {
            const struct pio_handler *candidate = &bus->handlers[h];
            if (port >= candidate->base && port - candidate->base < candidate->len) {
                handler = candidate;
                break;
            }
        }
        if (handler)
            handler->fn(handler->opaque, port, is_write, data, size);
        else
            unhandled_port(bus, port, is_write, data, size);
    }
}

void pio_handle_mmio(struct pio_bus *bus, uint64_t addr, bool is_write, uint8_t *data,
                     unsigned len)
{
    bool first;

    if (!is_write)
        memset(data, 0xff, len);
    pthread_mutex_lock(&bus->lock);
    bus->unhandled_mmio++;
    first = !bus->reported_mmio;
    bus->reported_mmio = true;
    pthread_mutex_unlock(&bus->lock);
    if (first)
        fprintf(stderr, "godwit-vm: guest %s MMIO address 0x%llx, which is neither RAM nor "
                "a device (reported once for all MMIO; ignored)\n",
                is_write ? "wrote" : "read", (unsigned long long)addr);
}
