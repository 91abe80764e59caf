/* Guest entry and trap entry shared by all guests.
 * Entry state (QEMU virt -bios none, and our emulator): M-mode, a0 = hartid,
 * a1 = DTB pointer on QEMU / 0 on ours (never used). */
#include "platform.h"

    .section .text.init, "ax"
    .globl _start
_start:
    /* gp must be loaded without relaxation (relaxing would use gp itself). */
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop

    csrr    t0, mhartid
    bnez    t0, park                /* only hart 0 runs guests */

    la      sp, __stack_top
    la      t0, trap_entry
    csrw    mtvec, t0               /* direct mode: trap_entry is 4-aligned */
    csrw    mie, zero
    csrw    mscratch, zero

    /* Zero .bss (8-byte aligned by the linker script). */
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    call    runtime_init            /* probes optional devices (balloon) */
    call    main
    call    guest_exit              /* main's return value: 0 = pass */
park:
    wfi
    j       park

/* Save every register in a trap_frame on the current stack, call the C
 * trap_handler(frame), write back the (possibly changed) mepc and registers,
 * mret. Nested traps are not expected: mstatus.MIE is 0 inside. */
    .text
    .balign 4
    .globl trap_entry
trap_entry:
    addi    sp, sp, -TF_SIZE
    sd      x1, 1*8(sp)
    .irp n, 3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n*8(sp)
    .endr
    addi    t0, sp, TF_SIZE
    sd      t0, 2*8(sp)             /* sp as it was at the trap */
    csrr    t0, mepc
    sd      t0, TF_MEPC(sp)
    csrr    t0, mcause
    sd      t0, TF_MCAUSE(sp)
    csrr    t0, mtval
    sd      t0, TF_MTVAL(sp)
    mv      a0, sp
    call    trap_handler
    ld      t0, TF_MEPC(sp)
    csrw    mepc, t0
    ld      x1, 1*8(sp)
    .irp n, 3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n*8(sp)
    .endr
    addi    sp, sp, TF_SIZE
    mret

/* uint32_t mmio_probe32(uintptr_t addr): 32-bit load that returns 0 when the
 * access faults (QEMU: unmapped MMIO is an access fault). mtvec points at a
 * local handler for the duration, which skips the 4-byte load. */
    .text
    .globl mmio_probe32
mmio_probe32:
    csrr    t1, mtvec
    la      t2, 1f
    csrw    mtvec, t2
    mv      t3, a0
    li      a0, 0
    .option push
    .option norvc
    lw      a0, 0(t3)               /* 4 bytes: the handler skips exactly this */
    .option pop
    j       2f
    .balign 4
1:  csrr    t2, mepc
    addi    t2, t2, 4
    csrw    mepc, t2
    mret
2:  csrw    mtvec, t1
    slli    a0, a0, 32              /* zero-extend the 32-bit value */
    srli    a0, a0, 32
    ret
