/* Random Sv39 page tables against QEMU (-M virt -bios none), line by line.
 * Each round draws new leaf PTEs for a 16-page window (any mix of V, R, W, X,
 * U, A, D, reserved W-without-R encodings, pointers where a leaf must be) and a
 * 2 MiB megapage (aligned or misaligned PPN), random sstatus.SUM and MXR, then
 * makes random loads, stores and instruction fetches from S-mode and from
 * U-mode, aligned and across page boundaries. Printed per access: the value or
 * the fault's cause and stval; per round: every PTE as the hardware left it
 * (A/D updates). Page faults are delegated to S; S also handles U's ecall.
 * The rounds repeat the same code, so ours runs them as compiled blocks too. */
#include "platform.h"

#ifndef ROUNDS
#define ROUNDS 100
#endif
#ifndef ACCESSES
#define ACCESSES 40
#endif
#ifndef SEED
#define SEED 0x5eed
#endif

#define SSTATUS_SUM (1UL << 18)
#define SSTATUS_MXR (1UL << 19)
#define SSTATUS_SPP (1UL << 8)

#define WIN      0x40000000UL   /* l1[0]: 16 random 4 KiB pages */
#define MEGA     0x40200000UL   /* l1[1]: a random 2 MiB leaf */
#define USER     0x40400000UL   /* l1[2]: the U-mode stub (fixed U|R|X) */
#define PAGES    16
#define TARGETS  8

static uint64_t root[512] __attribute__((aligned(4096)));
static uint64_t l1[512] __attribute__((aligned(4096)));
static uint64_t l0[512] __attribute__((aligned(4096)));
static uint64_t l0_user[512] __attribute__((aligned(4096)));
static uint64_t target[TARGETS][512] __attribute__((aligned(4096)));
static uint8_t mega[2UL << 20] __attribute__((aligned(2UL << 20)));
extern char user_stub[];
extern char s_entry[];
extern char u_entry[];

/* What the last trap from S or U reported (set by the trap entries). */
volatile uint64_t fault_cause, fault_tval, faults;
/* enter_user's saved S context: ra, sp, s0..s11. */
uint64_t u_ctx[14];

static uint64_t rng = SEED;
static uint64_t rnd(uint64_t n) { return rng_next(&rng) % n; }
static uint64_t pte_of(const void *pa, uint64_t flags) { return ((uint64_t)pa >> 12 << 10) | flags; }

/* addi a0, a0, 1; ret — what every executable target holds at offset 0. */
static void put_code(void *at) { ((uint32_t *)at)[0] = 0x00150513; ((uint32_t *)at)[1] = 0x00008067; }

/* The U stub: a0 = op (0 load, 1 store, 2 fetch), a1 = va, a2 = value; returns a2 through ecall.
 * Never touches sp: S-mode's trap entries run on it. */
__asm__(".section .text.user,\"ax\"\n.balign 4096\n.globl user_stub\nuser_stub:\n"
        ".option push\n.option norvc\n"
        "  beqz a0, 1f\n  addi t0, a0, -1\n  beqz t0, 2f\n"
        "  mv a0, a2\n  jalr ra, 0(a1)\n  mv a2, a0\n  ecall\n"
        "1: ld a2, 0(a1)\n  ecall\n"
        "2: sd a2, 0(a1)\n  ecall\n"
        ".option pop\n.balign 4096\n.text\n");

/* S-mode entry for traps from S: records the fault and skips the access; a fetch fault returns to ra. */
__asm__(".text\n.balign 4\n.globl s_entry\ns_entry:\n"
        "  addi sp, sp, -32\n  sd t0, 0(sp)\n  sd t1, 8(sp)\n  sd t2, 16(sp)\n"
        "  csrr t0, scause\n  la t1, fault_cause\n  sd t0, 0(t1)\n"
        "  csrr t2, stval\n  la t1, fault_tval\n  sd t2, 0(t1)\n"
        "  la t1, faults\n  ld t2, 0(t1)\n  addi t2, t2, 1\n  sd t2, 0(t1)\n"
        "  li t1, 12\n  beq t0, t1, 1f\n"
        "  csrr t0, sepc\n  addi t0, t0, 4\n  csrw sepc, t0\n  j 2f\n"
        "1: csrw sepc, ra\n"
        "2: ld t0, 0(sp)\n  ld t1, 8(sp)\n  ld t2, 16(sp)\n  addi sp, sp, 32\n  sret\n");

/* S-mode entry while U runs: faults as above (U's registers are scratch), ecall returns to enter_user's caller. */
__asm__(".text\n.balign 4\n.globl u_entry\nu_entry:\n"
        "  csrr t0, scause\n  li t1, 8\n  beq t0, t1, 3f\n"
        "  la t1, fault_cause\n  sd t0, 0(t1)\n"
        "  csrr t2, stval\n  la t1, fault_tval\n  sd t2, 0(t1)\n"
        "  la t1, faults\n  ld t2, 0(t1)\n  addi t2, t2, 1\n  sd t2, 0(t1)\n"
        "  li t1, 12\n  beq t0, t1, 1f\n"
        "  csrr t0, sepc\n  addi t0, t0, 4\n  csrw sepc, t0\n  sret\n"
        "1: csrw sepc, ra\n  sret\n"
        "3: la t0, u_ctx\n"
        "  ld ra, 0(t0)\n  ld sp, 8(t0)\n  ld s0, 16(t0)\n  ld s1, 24(t0)\n  ld s2, 32(t0)\n  ld s3, 40(t0)\n"
        "  ld s4, 48(t0)\n  ld s5, 56(t0)\n  ld s6, 64(t0)\n  ld s7, 72(t0)\n  ld s8, 80(t0)\n  ld s9, 88(t0)\n"
        "  ld s10, 96(t0)\n  ld s11, 104(t0)\n"
        "  la t1, s_entry\n  csrw stvec, t1\n  mv a0, a2\n  ret\n");

/* uint64_t enter_user(op, va, value): runs the U stub once, returns its a2. */
__asm__(".text\n.balign 4\n.globl enter_user\nenter_user:\n"
        "  la t0, u_ctx\n"
        "  sd ra, 0(t0)\n  sd sp, 8(t0)\n  sd s0, 16(t0)\n  sd s1, 24(t0)\n  sd s2, 32(t0)\n  sd s3, 40(t0)\n"
        "  sd s4, 48(t0)\n  sd s5, 56(t0)\n  sd s6, 64(t0)\n  sd s7, 72(t0)\n  sd s8, 80(t0)\n  sd s9, 88(t0)\n"
        "  sd s10, 96(t0)\n  sd s11, 104(t0)\n"
        "  la t1, u_entry\n  csrw stvec, t1\n"
        "  li t1, 0x40400000\n  csrw sepc, t1\n"
        "  li t1, 0x100\n  csrc sstatus, t1\n"
        "  sret\n");
uint64_t enter_user(uint64_t op, uint64_t va, uint64_t value);

static uint64_t s_load(uint64_t va)
{
    uint64_t v = 0xeeee;
    __asm__ volatile(".option push\n.option norvc\nld %0, 0(%1)\n.option pop" : "+r"(v) : "r"(va) : "memory");
    return v;
}

static void s_store(uint64_t va, uint64_t v)
{
    __asm__ volatile(".option push\n.option norvc\nsd %0, 0(%1)\n.option pop" :: "r"(v), "r"(va) : "memory");
}

static uint64_t s_fetch(uint64_t va, uint64_t v)
{
    register uint64_t a0 __asm__("a0") = v;
    __asm__ volatile("jalr ra, 0(%1)" : "+r"(a0) : "r"(va) : "ra", "memory");
    return a0;
}

/* A random leaf (or not-a-leaf) for one page-table slot. */
static uint64_t random_flags(void)
{
    static const uint64_t perms[] = { PTE_R, PTE_R | PTE_W, PTE_R | PTE_W, PTE_R | PTE_X, PTE_R | PTE_W | PTE_X,
                                      PTE_R | PTE_W | PTE_X, PTE_X, PTE_W /* reserved */, PTE_W | PTE_X /* reserved */,
                                      0 /* a pointer */ };
    uint64_t f = perms[rnd(10)];
    if (rnd(20) != 0) f |= PTE_V;
    if (rnd(5) < 2) f |= PTE_U;
    if (rnd(2)) f |= PTE_A;
    if (rnd(2)) f |= PTE_D;
    return f;
}

static void new_tables(void)
{
    for (int i = 0; i < PAGES; i++) l0[i] = pte_of(target[rnd(TARGETS)], random_flags());
    uint64_t f = random_flags();
    if (rnd(4) == 0) l1[1] = 0;
    else if (rnd(4) == 0 && (f & (PTE_R | PTE_X))) l1[1] = pte_of(mega + 4096, f);   /* misaligned superpage */
    else if (f & (PTE_R | PTE_W | PTE_X)) l1[1] = pte_of(mega, f);
    else l1[1] = 0;
    uint64_t st = csr_read(sstatus) & ~(SSTATUS_SUM | SSTATUS_MXR);
    if (rnd(2)) st |= SSTATUS_SUM;
    if (rnd(3) == 0) st |= SSTATUS_MXR;
    csr_write(sstatus, st);
    __asm__ volatile("sfence.vma" ::: "memory");
}

static uint64_t random_va(int op)
{
    if (rnd(6) == 0) return MEGA + (op == 2 ? 0 : 8 + rnd((1UL << 18) - 1) * 8);
    uint64_t page = WIN + rnd(PAGES) * 4096;
    if (op == 2) return page;
    if (op == 0 && rnd(10) == 0) return page + 4092;   /* misaligned, into the next page */
    return page + 8 + rnd(511) * 8;                   /* stores never reach the code at offset 0 */
}

/* Every target word folded: what the stores left, through whichever alias they went. */
static uint64_t targets_sum(void)
{
    uint64_t h = 0;
    for (int i = 0; i < TARGETS; i++)
        for (int w = 0; w < 512; w++) h = (h ^ target[i][w]) * 0x100000001B3UL;
    return h;
}

static void access(int round, int n)
{
    int user = rnd(5) < 2, op = (int)rnd(10);
    op = op < 5 ? 0 : op < 8 ? 1 : 2;
    uint64_t va = random_va(op), value = rng_next(&rng), got;
    /* QEMU 7.2 lets S fetch from a U page when an S load under SUM filled the TLB entry (with the
     * PTE's X); the spec, and ours, always fault. Such fetches are made from U instead. */
    uint64_t pte = va >= MEGA ? l1[1] : l0[(va - WIN) >> 12];
    if (op == 2 && (pte & PTE_U)) user = 1;
    uint64_t before = faults;
    if (user) got = enter_user((uint64_t)op, va, value);
    else if (op == 0) got = s_load(va);
    else if (op == 1) { s_store(va, value); got = value; }
    else got = s_fetch(va, value);
    put_dec((uint64_t)round); uart_putc('.'); put_dec((uint64_t)n);
    uart_puts(user ? " U " : " S ");
    uart_puts(op == 0 ? "load " : op == 1 ? "store " : "fetch ");
    put_hex(va);
    if (faults != before) { uart_puts(" fault "); put_hex(fault_cause); uart_putc(' '); put_hex(fault_tval); }
    else if (op != 1) { uart_puts(" = "); put_hex(got); }
    uart_putc('\n');
}

__attribute__((noreturn)) static void s_main(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        new_tables();
        for (int n = 0; n < ACCESSES; n++) access(round, n);
        uart_puts("ptes");
        for (int i = 0; i < PAGES; i++) { uart_putc(' '); put_hex(l0[i] & 0xff); }
        uart_puts(" mega "); put_hex(l1[1] & 0xff);
        uart_puts(" sum "); put_hex(targets_sum());
        uart_putc('\n');
    }
    exit_pass();
}

void trap_handler(struct trap_frame *f)
{
    /* What S does not take (an illegal instruction, a misaligned fetch) ends the test where it happened. */
    uart_puts("m-trap "); put_hex(f->mcause); uart_putc(' '); put_hex(f->mtval); uart_putc('\n');
    exit_fail(3);
}

int main(void)
{
    csr_write(pmpaddr0, ~0UL);
    csr_write(pmpcfg0, 0x1f);
    root[0] = PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;                                               /* devices */
    root[2] = ((DRAM_BASE >> 12) << 10) | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D;           /* DRAM */
    root[1] = pte_of(l1, PTE_V);
    l1[0] = pte_of(l0, PTE_V);
    l1[2] = pte_of(l0_user, PTE_V);
    l0_user[0] = pte_of(user_stub, PTE_V | PTE_R | PTE_X | PTE_U | PTE_A);
    for (int i = 0; i < TARGETS; i++) {
        put_code(target[i]);
        for (int w = 1; w < 512; w++) target[i][w] = ((uint64_t)i << 56) | (uint64_t)w;
    }
    put_code(mega);
    __asm__ volatile("fence.i" ::: "memory");
    csr_write(stvec, (uint64_t)s_entry);
    csr_write(medeleg, (1UL << 4) | (1UL << 6) | (1UL << 8) | (1UL << 12) | (1UL << 13) | (1UL << 15));
    csr_write(satp, (8UL << 60) | ((uint64_t)root >> 12));
    __asm__ volatile("sfence.vma" ::: "memory");
    uint64_t st = csr_read(mstatus);
    csr_write(mstatus, (st & ~(3UL << 11)) | (1UL << 11));  /* MPP = S */
    csr_write(mepc, (uint64_t)s_main);
    __asm__ volatile("mret" ::: "memory");
    return 1;
}
