/* isa-debug-exit: the test guest reports internal errors through it. The
 * VM ends through the main thread so QMP clients still see SHUTDOWN. */
#include "debug_exit.h"

#include <stdio.h>
#include <string.h>

#include "vm.h"

void debug_exit_io(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    struct vm *vm = opaque;
    uint32_t value = 0;

    (void)port;
    if (!is_write) {
        memset(data, 0xff, size);
        return;
    }
    memcpy(&value, data, size < sizeof(value) ? size : sizeof(value));
    fprintf(stderr, "godwit-vm: guest wrote 0x%x to isa-debug-exit; exiting with status %u\n",
            value, ((value << 1) | 1) & 0xff);
    vm_request_exit(vm, (int)((value << 1) | 1), true, "guest-shutdown");
}
