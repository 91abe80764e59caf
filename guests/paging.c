/* S and U mode under Sv39, compared line by line with QEMU (-M virt -bios none).
 * M-mode opens PMP, builds the tables and drops to S. S-mode runs identity-mapped
 * (gigapages) and uses a non-identity window at 0x40000000 (4 KiB pages, one of
 * them aliased), takes its own page faults (medeleg), enters U-mode and handles
 * its ecall and faults. Printed: values read, causes, stval, and the A/D bits the
 * hardware set in the page-table entries. */
#include "platform.h"

#define WIN 0x40000000UL

static uint64_t root[512] __attribute__((aligned(4096)));
static uint64_t l1[512] __attribute__((aligned(4096)));
static uint64_t l0[512] __attribute__((aligned(4096)));
static uint64_t data_page[512] __attribute__((aligned(4096)));
static uint64_t ro_page[512] __attribute__((aligned(4096)));
extern char user_code[];

static volatile uint64_t s_cause, s_tval, s_faults;

static uint64_t pte_of(void *pa, uint64_t flags) { return ((uint64_t)pa >> 12 << 10) | flags | PTE_V; }

static void kv(const char *k, uint64_t v) { uart_putc(' '); uart_puts(k); uart_putc(' '); put_hex(v); }
static void line(const char *name) { uart_puts(name); uart_putc(':'); }
static void end(void) { uart_putc('\n'); }

/* The user program: its page is mapped at WIN + 0x4000 (U, R|X). It must not touch sp. */
__asm__(".section .text.user,\"ax\"\n.balign 4096\n.globl user_code\nuser_code:\n"
        "  li t0, 0x40000000\n  ld a0, 0(t0)\n  addi a0, a0, 1\n  ecall\n"       /* ecall 1: a0 = data + 1 */
        "  li t0, 0x40003000\n  ld a1, 0(t0)\n"                                       /* S-only alias: fault */
        "  li t0, 0x40001000\n  sd a0, 0(t0)\n"                                       /* read-only: fault */
        "  csrr a0, sstatus\n"                                                        /* illegal in U: to M */
        "1: j 1b\n.balign 4096\n.text\n");

/* S-mode trap entry: saves the caller-saved registers on the (shared) stack, calls s_trap. */
__asm__(".text\n.balign 4\n.globl s_entry\ns_entry:\n"
        "  addi sp, sp, -144\n"
        "  sd ra, 0(sp)\n sd t0, 8(sp)\n sd t1, 16(sp)\n sd t2, 24(sp)\n sd a0, 32(sp)\n sd a1, 40(sp)\n"
        "  sd a2, 48(sp)\n sd a3, 56(sp)\n sd a4, 64(sp)\n sd a5, 72(sp)\n sd a6, 80(sp)\n sd a7, 88(sp)\n"
        "  sd t3, 96(sp)\n sd t4, 104(sp)\n sd t5, 112(sp)\n sd t6, 120(sp)\n"
        "  mv a0, sp\n  call s_trap\n"
        "  ld ra, 0(sp)\n ld t0, 8(sp)\n ld t1, 16(sp)\n ld t2, 24(sp)\n ld a0, 32(sp)\n ld a1, 40(sp)\n"
        "  ld a2, 48(sp)\n ld a3, 56(sp)\n ld a4, 64(sp)\n ld a5, 72(sp)\n ld a6, 80(sp)\n ld a7, 88(sp)\n"
        "  ld t3, 96(sp)\n ld t4, 104(sp)\n ld t5, 112(sp)\n ld t6, 120(sp)\n"
        "  addi sp, sp, 144\n  sret\n");
extern char s_entry[];

/* Returns in S-mode; the faulting instruction is skipped (4 bytes: no compressed code in the window). */
void s_trap(uint64_t *regs)
{
    uint64_t cause = csr_read(scause), tval = csr_read(stval), epc = csr_read(sepc);
    uint64_t from_user = !(csr_read(sstatus) & (1UL << 8));
    s_cause = cause;
    s_tval = tval;
    s_faults++;
    if (from_user) {
        line("u-trap");
        kv("cause", cause);
        kv("tval", tval);
        kv("epc-off", epc - (WIN + 0x4000));
        if (cause == 8) kv("a0", regs[4]);
        end();
    }
    csr_write(sepc, epc + 4);
}

static uint64_t s_load(uint64_t va)
{
    uint64_t v = 0xeeee;
    uint64_t n = s_faults;
    __asm__ volatile(".option push\n.option norvc\nld %0, 0(%1)\n.option pop" : "+r"(v) : "r"(va) : "memory");
    line("s-load");
    kv("va", va);
    if (s_faults != n) { kv("fault", s_cause); kv("tval", s_tval); } else kv("value", v);
    end();
    return v;
}

static void s_store(uint64_t va, uint64_t v)
{
    uint64_t n = s_faults;
    __asm__ volatile(".option push\n.option norvc\nsd %0, 0(%1)\n.option pop" :: "r"(v), "r"(va) : "memory");
    line("s-store");
    kv("va", va);
    if (s_faults != n) { kv("fault", s_cause); kv("tval", s_tval); } else uart_puts(" ok");
    end();
}

static void pte_bits(const char *name, uint64_t pte)
{
    line(name);
    kv("a", !!(pte & PTE_A));
    kv("d", !!(pte & PTE_D));
    end();
}

__attribute__((noreturn)) static void s_main(void)
{
    line("mode");
    uart_puts(" supervisor");
    end();
    pte_bits("pte-data-before", l0[0]);
    s_store(WIN, 0x1234); /* U page from S without SUM: fault */
    csr_set(sstatus, 1UL << 18); /* SUM */
    s_store(WIN, 0x1234);
    pte_bits("pte-data-after-store", l0[0]);
    s_load(WIN + 0x3000);              /* the same page through its S-only alias */
    s_load(WIN + 0x2000);              /* unmapped */
    s_store(WIN + 0x1000, 5);          /* read-only */
    s_load(WIN + 0x1000);
    pte_bits("pte-ro", l0[1]);
    s_load(0x8000000000UL);            /* not canonical in Sv39 */
    s_load(WIN + 0xffc);               /* misaligned across into the read-only page */
    csr_clear(sstatus, 1UL << 18);

    /* To U-mode at the user program's window address. */
    csr_clear(sstatus, 1UL << 8);      /* SPP = U */
    csr_write(sepc, WIN + 0x4000);
    __asm__ volatile("sret" ::: "memory");
    __builtin_unreachable();
}

void trap_handler(struct trap_frame *f)
{
    /* M-mode sees only what S does not take: the user's illegal sstatus read ends the test. */
    line("m-trap");
    kv("cause", f->mcause);
    kv("tval", f->mtval);
    kv("mpp", (csr_read(mstatus) >> 11) & 3);
    end();
    line("data");
    kv("value", data_page[0]);
    end();
    exit_pass();
}

int main(void)
{
    csr_write(pmpaddr0, ~0UL);
    csr_write(pmpcfg0, 0x1f); /* NAPOT over everything, RWX: S and U may access all memory */
    root[0] = (0UL << 10) | PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;                   /* devices, identity */
    root[2] = ((DRAM_BASE >> 12) << 10) | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D; /* DRAM, identity */
    root[1] = pte_of(l1, 0);
    l1[0] = pte_of(l0, 0);
    l0[0] = pte_of(data_page, PTE_R | PTE_W | PTE_U);                /* A/D left to the hardware */
    l0[1] = pte_of(ro_page, PTE_R | PTE_U | PTE_A);
    l0[3] = pte_of(data_page, PTE_R | PTE_W | PTE_A | PTE_D);        /* S-only alias of data_page */
    l0[4] = pte_of(user_code, PTE_R | PTE_X | PTE_U | PTE_A);
    ro_page[0] = 0x77;
    csr_write(stvec, (uint64_t)s_entry);
    csr_write(medeleg, (1UL << 8) | (1UL << 12) | (1UL << 13) | (1UL << 15));
    csr_write(satp, (8UL << 60) | ((uint64_t)root >> 12));
    __asm__ volatile("sfence.vma" ::: "memory");
    uint64_t st = csr_read(mstatus);
    st = (st & ~(3UL << 11)) | (1UL << 11); /* MPP = S */
    csr_write(mstatus, st);
    csr_write(mepc, (uint64_t)s_main);
    __asm__ volatile("mret" ::: "memory");
    return 1;
}
