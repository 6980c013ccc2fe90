/* isa-debug-exit at 0x501: a guest writes a value and the VM ends with exit
 * status (value << 1) | 1, as QEMU's device does. */
#ifndef GODWIT_VM_DEBUG_EXIT_H
#define GODWIT_VM_DEBUG_EXIT_H

#include <stdbool.h>
#include <stdint.h>

#define DEBUG_EXIT_PORT 0x501
#define DEBUG_EXIT_SIZE 2

void debug_exit_io(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size);

#endif
