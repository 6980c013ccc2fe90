/* COM1 output of the test guest: brings the 8250 up at 115200 8N1 and writes
 * characters by polling. Every port access is a VM exit, so a character costs
 * one status read and one data write whenever the UART is ready. */
#include "guest.h"

#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define FCR_ENABLE_AND_CLEAR 0x07
#define MCR_DTR_RTS 0x03
#define DIVISOR_115200 1        /* 1.8432 MHz clock / 16 / 115200 */

void serial_init(void)
{
    outb(COM1_IER, 0);          /* we poll; interrupts stay off anyway */
    outb(COM1_LCR, LCR_DLAB);
    outb(COM1_THR, DIVISOR_115200 & 0xff);
    outb(COM1_IER, DIVISOR_115200 >> 8);
    outb(COM1_LCR, LCR_8N1);
    outb(COM1_FCR, FCR_ENABLE_AND_CLEAR);
    outb(COM1_MCR, MCR_DTR_RTS);
}

void serial_putc(char c)
{
    while (!(inb(COM1_LSR) & LSR_THR_EMPTY))
        ;
    outb(COM1_THR, (uint8_t)c);
}
