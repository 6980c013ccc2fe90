/* 8250 UART register model. The transmitter is infinitely fast: THR is
 * always empty again after a write, so LSR always reports THRE and TEMT. */
#include "uart.h"

#include <errno.h>
#include <unistd.h>

#include "kvm.h"

enum {
    REG_RBR_THR = 0, REG_IER = 1, REG_IIR_FCR = 2, REG_LCR = 3,
    REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};

#define LCR_DLAB 0x80
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_FIFO_ON 0xc0
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10
#define MCR_OUT2 0x08
#define MSR_DCD_DSR_CTS 0xb0

void uart_init(struct uart *uart, int out_fd, struct kvm *kvm)
{
    *uart = (struct uart){ .out_fd = out_fd, .kvm = kvm, .dll = 0x0c };
    pthread_mutex_init(&uart->lock, NULL);
}

/* The PC wires the UART's interrupt through OUT2, as Linux's driver expects. */
static void update_irq(struct uart *uart)
{
    int level = (uart->ier & IER_THRI) && uart->thr_interrupt && (uart->mcr & MCR_OUT2);

    if (level != uart->irq_level && uart->kvm) {
        uart->irq_level = level;
        kvm_irq_line(uart->kvm, UART_COM1_IRQ, level);
    }
}

static void transmit(struct uart *uart, uint8_t byte)
{
    if (uart->out_fd >= 0 && !(uart->mcr & MCR_LOOP)) {
        while (write(uart->out_fd, &byte, 1) < 0 && errno == EINTR)
            ;
    }
    uart->thr_interrupt = true;   /* and THR is empty again at once */
}

static void write_reg(struct uart *uart, unsigned reg, uint8_t value)
{
    bool dlab = uart->lcr & LCR_DLAB;

    switch (reg) {
    case REG_RBR_THR:
        if (dlab)
            uart->dll = value;
        else
            transmit(uart, value);
        break;
    case REG_IER:
        if (dlab) {
            uart->dlm = value;
        } else {
            /* Enabling THRI with THR empty raises the interrupt at once. */
            if ((value & IER_THRI) && !(uart->ier & IER_THRI))
                uart->thr_interrupt = true;
            uart->ier = value & 0x0f;
        }
        break;
    case REG_IIR_FCR: uart->fcr = value; break;
    case REG_LCR: uart->lcr = value; break;
    case REG_MCR: uart->mcr = value & 0x1f; break;
    case REG_SCR: uart->scr = value; break;
    default: break;   /* LSR and MSR are read-only */
    }
}

static uint8_t read_reg(struct uart *uart, unsigned reg)
{
    bool dlab = uart->lcr & LCR_DLAB;
    uint8_t iir;

    switch (reg) {
    case REG_RBR_THR: return dlab ? uart->dll : 0;   /* nothing received */
    case REG_IER: return dlab ? uart->dlm : uart->ier;
    case REG_IIR_FCR:
        iir = (uart->fcr & 1) ? IIR_FIFO_ON : 0;
        if ((uart->ier & IER_THRI) && uart->thr_interrupt) {
            uart->thr_interrupt = false;   /* reading IIR acknowledges THRI */
            return iir | IIR_THRI;
        }
        return iir | IIR_NO_INT;
    case REG_LCR: return uart->lcr;
    case REG_MCR: return uart->mcr;
    case REG_LSR: return LSR_THRE | LSR_TEMT;
    case REG_MSR:
        if (uart->mcr & MCR_LOOP)   /* loopback: outputs appear as inputs */
            return (uint8_t)(((uart->mcr & 0x0c) << 4) | ((uart->mcr & 0x03) << 4));
        return MSR_DCD_DSR_CTS;
    default: return uart->scr;
    }
}

void uart_io(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    struct uart *uart = opaque;
    unsigned reg = (unsigned)(port - UART_COM1_BASE) & 7;

    (void)size;   /* the 8250 is a byte device; wider accesses use the low byte */
    pthread_mutex_lock(&uart->lock);
    if (is_write)
        write_reg(uart, reg, data[0]);
    else
        data[0] = read_reg(uart, reg);
    update_irq(uart);
    pthread_mutex_unlock(&uart->lock);
}

/* --- migration: the registers in and out, with the VM stopped --- */

void uart_get_state(struct uart *uart, struct uart_state *state)
{
    pthread_mutex_lock(&uart->lock);
    *state = (struct uart_state){
        .ier = uart->ier, .lcr = uart->lcr, .mcr = uart->mcr, .scr = uart->scr,
        .fcr = uart->fcr, .dll = uart->dll, .dlm = uart->dlm,
        .thr_interrupt = uart->thr_interrupt,
    };
    pthread_mutex_unlock(&uart->lock);
}

int uart_set_state(struct uart *uart, const struct uart_state *state, struct gw_error *err)
{
    /* write_reg keeps only these bits, so a guest cannot have set others. */
    if (state->ier & ~0x0f)
        return gw_error_set(err, -EINVAL, "serial: IER 0x%02x has bits above 0x0f set, "
                            "which this UART never holds", state->ier);
    if (state->mcr & ~0x1f)
        return gw_error_set(err, -EINVAL, "serial: MCR 0x%02x has bits above 0x1f set, "
                            "which this UART never holds", state->mcr);
    pthread_mutex_lock(&uart->lock);
    uart->ier = state->ier;
    uart->lcr = state->lcr;
    uart->mcr = state->mcr;
    uart->scr = state->scr;
    uart->fcr = state->fcr;
    uart->dll = state->dll;
    uart->dlm = state->dlm;
    uart->thr_interrupt = state->thr_interrupt;
    /* No level is ever -1, so update_irq drives the line whatever it is. */
    if (uart->kvm)
        uart->irq_level = -1;
    update_irq(uart);
    pthread_mutex_unlock(&uart->lock);
    return 0;
}
