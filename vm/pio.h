/* Port I/O and MMIO dispatch for the emulated devices. Accesses nothing
 * claims are counted and reported once each, never fatal: a guest probing
 * for hardware must not kill the VM. */
#ifndef GODWIT_VM_PIO_H
#define GODWIT_VM_PIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PIO_MAX_HANDLERS 8

/* data holds size bytes; a read fills it. */
typedef void (*pio_fn)(void *opaque, uint16_t port, bool is_write, uint8_t *data,
                       unsigned size);

struct pio_handler {
    uint16_t base;
    uint16_t len;
    pio_fn fn;
    void *opaque;
};

struct pio_bus {
    struct pio_handler handlers[PIO_MAX_HANDLERS];
    unsigned nr_handlers;
    pthread_mutex_t lock;            /* guards the counters below */
    uint64_t unhandled_pio;
    uint64_t unhandled_mmio;
    uint8_t reported_ports[65536 / 8];
    bool reported_mmio;
};

void pio_init(struct pio_bus *bus);
int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len, pio_fn fn, void *opaque);
/* count is KVM's repeat count for string I/O (rep outsb): size bytes each. */
void pio_handle(struct pio_bus *bus, uint16_t port, bool is_write, uint8_t *data,
                unsigned size, unsigned count);
void pio_handle_mmio(struct pio_bus *bus, uint64_t addr, bool is_write, uint8_t *data,
                     unsigned len);

#endif
