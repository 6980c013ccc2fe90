/* Entry of the test guest: the multiboot v1 header, a flat GDT and an IDT of
 * our own, and the NMI and exception stubs, including the real-mode round
 * trip that ends NMI blocking. Everything else happens in guest_main (main.c). */
#include "guest.h"

#define MB_HEADER_MAGIC 0x1BADB002
/* Page-aligned modules and memory info. No a.out kludge (bit 16): loaders
 * take the load addresses from our ELF program headers. */
#define MB_HEADER_FLAGS 0x00000003

#define GDT_CODE 0x08
#define GDT_DATA 0x10
#define GDT_CODE16 0x18
/* GDT_CODE16's base is its own selector times 16, so the value 0x18 in CS
 * names the same code whether the CPU is in real or protected mode. */
#define CODE16_BASE (GDT_CODE16 << 4)

#define CR0_PE 1
#define IDT_VECTORS 32
#define IDT_GATE_INTR32 0x8E00      /* present, DPL 0, 32-bit interrupt gate */
#define NMI_VECTOR 2

    .section .multiboot, "a"
    .balign 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .text
    .code32
    .globl _start
_start:
    /* The loader's DS is flat, which is all lgdt needs; after the far jump
     * nothing depends on the loader's GDT any more. */
    cli
    cld
    lgdt gdt_descriptor
    ljmp $GDT_CODE, $1f
1:  mov $GDT_DATA, %ecx
    mov %ecx, %ds
    mov %ecx, %es
    mov %ecx, %fs
    mov %ecx, %gs
    mov %ecx, %ss
    mov $__stack_top, %esp

    /* Keep the boot magic and the info pointer (EBX) out of stosl's way. */
    mov %eax, %esi
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl

    call fill_idts
    lidt idt_descriptor
    push %ebx
    push %esi
    call guest_main
2:  hlt
    jmp 2b

/* Gate offsets are split into two 16-bit halves, which no i386 relocation
 * can express, so the tables are filled in at run time. */
fill_idts:
    mov $idt, %edi
    xor %ecx, %ecx
1:  mov $exception_stub, %eax
    cmp $NMI_VECTOR, %ecx
    jne 2f
    mov $nmi_stub, %eax
2:  mov %ax, (%edi)
    movw $GDT_CODE, 2(%edi)
    movw $IDT_GATE_INTR32, 4(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
    add $8, %edi
    inc %ecx
    cmp $IDT_VECTORS, %ecx
    jb 1b

    /* trip_idt serves both modes at once: real mode reads vector 2 as a
     * far pointer at byte 8, protected mode reads gate 2 at byte 16. */
    movl $((GDT_CODE16 << 16) + rm_nmi_stub - CODE16_BASE), trip_idt + 4 * NMI_VECTOR
    mov idt + 8 * NMI_VECTOR, %eax
    mov %eax, trip_idt + 8 * NMI_VECTOR
    mov idt + 8 * NMI_VECTOR + 4, %eax
    mov %eax, trip_idt + 8 * NMI_VECTOR + 4
    ret

/* KVM's instruction emulator, which runs all of this guest on a PVM host,
 * implements iret in real mode only: a protected-mode iret stops the VM with
 * an emulation failure. So the handler returns with popf and lret, and ends
 * NMI blocking through unblock_nmi. It may interrupt anything, unblock_nmi
 * included, so it saves every register it or its callees clobber. */
nmi_stub:
    push %eax
    push %ecx
    push %edx
    push $'N'
    call serial_putc
    add $4, %esp
    call unblock_nmi
    pop %edx
    pop %ecx
    pop %eax
    /* Reorder the frame (EIP, CS, EFLAGS) into (EFLAGS, EIP, CS). */
    push %eax
    mov 12(%esp), %eax
    xchg %eax, 4(%esp)
    xchg %eax, 8(%esp)
    mov %eax, 12(%esp)
    pop %eax
    popf
    lret

/* Uses no stack: the exception may be a stack fault. Error codes pushed by
 * some vectors are never popped because this never returns. */
exception_stub:
    mov $EXIT_EXCEPTION, %al
    mov $DEBUG_EXIT_PORT, %dx
    outb %al, %dx
1:  hlt
    jmp 1b

/* Code that runs with CS = GDT_CODE16 must lie within 64 KiB of CODE16_BASE;
 * guest.ld places this section right after the multiboot header. */
    .section .text.code16, "ax"

/* Ends NMI blocking with the one iret the emulator implements: a real-mode
 * one. SS and DS are never reloaded, so they keep their flat protected-mode
 * descriptors, and the stack lies below 64 KiB so that 16- and 32-bit stack
 * pointers agree. Once the iret has run, a new NMI may arrive before we are
 * back: in real mode it goes through trip_idt to rm_nmi_stub, in protected
 * mode with CS still GDT_CODE16 to nmi_stub, whose lret can reload that CS.
 * Offsets into GDT_CODE16 are written as 32-bit operands because ld rejects
 * the negative addends of 16-bit ones; their high halves are zero anyway.
 * Clobbers EAX and ECX. */
    .code32
unblock_nmi:
    lidt trip_idt_descriptor
    ljmp $GDT_CODE16, $(1f - CODE16_BASE)
    .code16
1:  mov %cr0, %eax
    and $~CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $GDT_CODE16, $(2f - CODE16_BASE)
2:  or $CR0_PE, %eax
    mov $(3f - CODE16_BASE), %ecx
    pushfw
    pushw %cs
    pushw %cx
    iretw
3:  mov %eax, %cr0
    ljmpl $GDT_CODE, $4f
    .code32
4:  lidt idt_descriptor
    ret

/* An NMI taken in real mode during unblock_nmi: print and go back. */
    .code16
rm_nmi_stub:
    push %ax
    push %dx
    mov $COM1_LSR, %dx
1:  in %dx, %al
    test $LSR_THR_EMPTY, %al
    jz 1b
    mov $COM1_THR, %dx
    mov $'N', %al
    out %al, %dx
    pop %dx
    pop %ax
    iretw
    .code32
    .globl __code16_end
__code16_end:

    .section .rodata
    .balign 8
/* Accessed bits are preset (0x9B, 0x93) so that loading a selector never
 * makes the CPU write to the table. */
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF        /* GDT_CODE: base 0, 4 GiB, 32-bit */
    .quad 0x00CF93000000FFFF        /* GDT_DATA: base 0, 4 GiB */
    .quad 0x00009B000000FFFF + (CODE16_BASE << 16)  /* GDT_CODE16: 64 KiB, 16-bit */
gdt_end:

    .balign 4
    .word 0
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .word 0
idt_descriptor:
    .word IDT_VECTORS * 8 - 1
    .long idt

    .word 0
trip_idt_descriptor:
    .word 8 * (NMI_VECTOR + 1) - 1
    .long trip_idt

    .bss
    .balign 8
idt:
    .skip IDT_VECTORS * 8
trip_idt:
    .skip 8 * (NMI_VECTOR + 1)

/* Below 64 KiB so that unblock_nmi can use it in real mode; guest.ld puts it
 * right below the code. */
    .section .bss.stack, "aw", @nobits
    .balign 16
    .skip 4096

    .section .note.GNU-stack, "", @progbits
