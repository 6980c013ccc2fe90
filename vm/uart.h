/* The 8250 UART at COM1 (0x3f8, IRQ 4): enough of it for a polled driver
 * and its interrupt enable. Output goes to a file descriptor; there is no
 * input source yet, so the receiver is always empty. */
#ifndef GODWIT_VM_UART_H
#define GODWIT_VM_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ 4

struct kvm;

struct uart {
    pthread_mutex_t lock;   /* vCPU threads write registers; the device save path reads them */
    int out_fd;             /* -1: output discarded */
    struct kvm *kvm;        /* for the IRQ line */
    uint8_t ier, lcr, mcr, scr, fcr;
    uint8_t dll, dlm;
    bool thr_interrupt;     /* THR-empty interrupt pending (cleared by an IIR read or a write) */
    int irq_level;
};

void uart_init(struct uart *uart, int out_fd, struct kvm *kvm);
void uart_io(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size);

#endif
