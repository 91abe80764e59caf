/* Runs another guest's main() in S-mode under Sv39: identity gigapages over the
 * devices and DRAM (so the program and its output are unchanged), PMP open.
 * Build as a variant with -DGUEST_SOURCE='"compute.c"': this measures what
 * paging costs against the same code in M-mode. */
#include "platform.h"

#define main guest_main
#include GUEST_SOURCE
#undef main


static uint64_t sv39_root[512] __attribute__((aligned(4096)));

__attribute__((noreturn)) static void in_supervisor(void)
{
    guest_exit(guest_main());
    for (;;) {}
}

int main(void)
{
    csr_write(pmpaddr0, ~0UL);
    csr_write(pmpcfg0, 0x1f);
    sv39_root[0] = PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;                               /* devices */
    sv39_root[2] = ((DRAM_BASE >> 12) << 10) | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D; /* DRAM */
    csr_write(satp, (8UL << 60) | ((uint64_t)sv39_root >> 12));
    __asm__ volatile("sfence.vma" ::: "memory");
    uint64_t st = csr_read(mstatus);
    csr_write(mstatus, (st & ~(3UL << 11)) | (1UL << 11));
    csr_write(mepc, (uint64_t)in_supervisor);
    __asm__ volatile("mret" ::: "memory");
    return 1;
}
