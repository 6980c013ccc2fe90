/* The 8250 UART at COM1 (0x3f8, IRQ 4): enough of it for a polled driver
 * and its interrupt enable. Output goes to a file descriptor; there is no
 * input source yet, so the receiver is always empty. */
#ifndef GODWIT_VM_UART_H
#define GODWIT_VM_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>

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

/* What migrates of the UART: every register a guest can set, and the
 * pending THR-empty interrupt. LSR, MSR and RBR follow from these. */
struct uart_state {
    uint8_t ier, lcr, mcr, scr, fcr;
    uint8_t dll, dlm;
    bool thr_interrupt;
};

void uart_init(struct uart *uart, int out_fd, struct kvm *kvm);
void uart_io(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size);

/* Reads the registers under the lock. */
void uart_get_state(struct uart *uart, struct uart_state *state);
/* Sets them (with the VM stopped) and drives the IRQ line to the level they
 * imply: the in-kernel irqchip's per-source line levels do not migrate, so
 * the destination's UART must assert its line again. Returns -EINVAL, with
 * err naming the register, for a value no guest write could have made. */
int uart_set_state(struct uart *uart, const struct uart_state *state, struct gw_error *err);

#endif
