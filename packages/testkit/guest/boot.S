/*
 * Multiboot (v1) entry for the xbzrle test guest.
 * Loaded by QEMU's `-kernel` multiboot loader at 1 MiB, 32-bit protected mode, paging off.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* align modules, want memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .text
    .globl _start
_start:
    cli
    cld
    movl $stack_top, %esp
    movl %eax, %esi              /* multiboot magic */
                                 /* %ebx = multiboot info pointer, preserved below */
    lgdt gdt_desc
    ljmp $0x08, $1f
1:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    /* zero .bss (the stack lives in .stack, which is not cleared) */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    pushl %ebx
    pushl %esi
    call kmain
2:
    cli
    hlt
    jmp 2b

/* IRQ0 (PIT) handler: count ticks, acknowledge the PIC. */
    .globl isr_timer
isr_timer:
    pushl %eax
    incl ticks
    movb $0x20, %al
    outb %al, $0x20
    popl %eax
    iret

/* Spurious / unexpected interrupt (vectors >= 32): ignore. */
    .globl isr_ignore
isr_ignore:
    iret

/* CPU exceptions (vectors 0..31): report and stop. */
    .globl isr_fault
isr_fault:
    pushal
    call fault_handler
3:
    cli
    hlt
    jmp 3b

    .section .rodata
    .align 8
gdt:
    .quad 0x0000000000000000
    .quad 0x00CF9A000000FFFF     /* 0x08: code, flat 4 GiB */
    .quad 0x00CF92000000FFFF     /* 0x10: data, flat 4 GiB */
gdt_end:
    .align 4
    .word 0
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .section .stack, "aw", @nobits
    .align 16
    .space 32768
stack_top:
    .section .note.GNU-stack, "", @progbits
