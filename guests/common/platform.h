/* Platform definitions and tiny runtime for LiveMigration guests.
 * Devices follow QEMU's riscv "virt" machine so guests run unchanged on
 * QEMU (-M virt -bios none) and on our emulator. Hart 0, M-mode only. */
#ifndef GUEST_PLATFORM_H
#define GUEST_PLATFORM_H

/* trap_frame layout, shared with crt0.S */
#define TF_MEPC   (32 * 8)
#define TF_MCAUSE (33 * 8)
#define TF_MTVAL  (34 * 8)
#define TF_SIZE   (36 * 8)          /* keeps sp 16-byte aligned */

#ifndef __ASSEMBLER__
#include <stdint.h>

/* ---- memory map ---- */
#define FINISHER_BASE 0x00100000UL  /* sifive_test */
#define CLINT_BASE    0x02000000UL
#define PLIC_BASE     0x0C000000UL
#define UART_BASE     0x10000000UL  /* NS16550A, reg shift 0 */
#define BALLOON_BASE  0x00102000UL  /* ours only: free-page reporting; a hole on QEMU */
#define DRAM_BASE     0x80000000UL
#define DRAM_SIZE     (128UL << 20)

#define CLINT_MSIP     (CLINT_BASE + 0x0)
#define CLINT_MTIMECMP (CLINT_BASE + 0x4000)
#define CLINT_MTIME    (CLINT_BASE + 0xBFF8)
#define MTIME_HZ       10000000UL

#define UART_IRQ 10

/* UART registers and bits */
#define UART_RBR 0
#define UART_THR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_IER_RDI  0x01
#define UART_LSR_DR   0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40

/* CSR bits */
#define MSTATUS_MIE  (1UL << 3)
#define MSTATUS_MPIE (1UL << 7)
#define MIP_MSIP (1UL << 3)
#define MIP_MTIP (1UL << 7)
#define MIP_MEIP (1UL << 11)
#define MCAUSE_INT   (1UL << 63)
#define IRQ_M_SOFT  3
#define IRQ_M_TIMER 7
#define IRQ_M_EXT   11

/* Linker-script symbols */
extern char __bss_start[], __bss_end[], __stack_top[], __free_start[], __ram_end[];

struct trap_frame {
    uint64_t regs[32];              /* x0 slot unused; regs[2] = sp at trap */
    uint64_t mepc, mcause, mtval, pad;
};

/* Programs may define trap_handler(); the weak default reports the trap and
 * exits with EXIT_UNEXPECTED_TRAP. Set f->mepc to resume elsewhere. */
void trap_handler(struct trap_frame *f);
void trap_entry(void);
#define EXIT_UNEXPECTED_TRAP 2

/* ---- CSR access ---- */
#define csr_read(csr) ({ uint64_t v_; __asm__ volatile("csrr %0, " #csr : "=r"(v_)); v_; })
#define csr_write(csr, val) __asm__ volatile("csrw " #csr ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_set(csr, val)   __asm__ volatile("csrs " #csr ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_clear(csr, val) __asm__ volatile("csrc " #csr ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_swap(csr, val) ({ uint64_t v_; __asm__ volatile("csrrw %0, " #csr ", %1" : "=r"(v_) : "rK"((uint64_t)(val)) : "memory"); v_; })

static inline void wfi(void) { __asm__ volatile("wfi" ::: "memory"); }
static inline void irq_enable(void)  { csr_set(mstatus, MSTATUS_MIE); }
static inline void irq_disable(void) { csr_clear(mstatus, MSTATUS_MIE); }

/* ---- MMIO: width matters (UART 8-bit, PLIC 32-bit, CLINT time 64-bit) ---- */
static inline uint8_t  mmio_read8(uintptr_t a)  { return *(volatile uint8_t *)a; }
static inline void     mmio_write8(uintptr_t a, uint8_t v)   { *(volatile uint8_t *)a = v; }
static inline uint32_t mmio_read32(uintptr_t a) { return *(volatile uint32_t *)a; }
static inline void     mmio_write32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint64_t mmio_read64(uintptr_t a) { return *(volatile uint64_t *)a; }
static inline void     mmio_write64(uintptr_t a, uint64_t v) { *(volatile uint64_t *)a = v; }

/* ---- finisher ---- */
__attribute__((noreturn)) void exit_pass(void);
__attribute__((noreturn)) void exit_fail(uint32_t code);   /* code 1..0xffff */
__attribute__((noreturn)) void guest_exit(int code);       /* 0 = pass */

/* ---- UART console ---- */
void uart_putc(char c);
void uart_puts(const char *s);
int  uart_getc(void);               /* -1 if no byte is waiting */
void put_hex(uint64_t v);           /* "0x" + minimal hex digits */
void put_hex64(uint64_t v);         /* "0x" + 16 hex digits */
void put_dec(uint64_t v);
void put_sdec(int64_t v);

/* ---- trap-safe probe ---- */
/* 32-bit load from a possibly unmapped address: returns 0 instead of trapping
 * if the access faults (crt0.S). Only for use before interrupts are enabled. */
uint32_t mmio_probe32(uintptr_t addr);

/* ---- free-page reporting ("balloon", LiveMigration only) ----
 * The runtime probes for the device before main() and, when it is there,
 * reports DRAM from __free_start + guest_free_ram_in_use() (rounded up to a
 * page) to the end of RAM as free. A reported page's contents are discarded
 * and it must not be touched until withdrawn (it then reads as zero). On QEMU
 * there is no device and these calls do nothing. */
#define BALLOON_MAGIC        0x4E4C4142U   /* "BALN" */
#define BALLOON_REG_MAGIC    0x00
#define BALLOON_REG_VERSION  0x04
#define BALLOON_REG_ADDRESS  0x10          /* 64-bit */
#define BALLOON_REG_COUNT    0x18
#define BALLOON_REG_COMMAND  0x1C
#define BALLOON_REG_STATUS   0x20
#define BALLOON_REG_FREE     0x24
#define BALLOON_CMD_REPORT   1
#define BALLOON_CMD_WITHDRAW 2

int balloon_present(void);
/* Page-aligned ranges; return 0 on success (or without a device), -1 if refused. */
int balloon_report(uintptr_t addr, uint64_t bytes);
int balloon_withdraw(uintptr_t addr, uint64_t bytes);
/* Bytes at __free_start the program uses (its working set). Weak, default 0;
 * a program that uses free RAM defines it. */
uint64_t guest_free_ram_in_use(void);
void runtime_init(void);          /* crt0 calls it before main() */

/* ---- CLINT timer ---- */
static inline uint64_t mtime_read(void) { return mmio_read64(CLINT_MTIME); }
static inline void timer_set(uint64_t when) { mmio_write64(CLINT_MTIMECMP, when); }
static inline void timer_disarm(void) { mmio_write64(CLINT_MTIMECMP, ~0UL); }

/* ---- PLIC, context 0 = hart 0 M-mode ---- */
#define PLIC_PRIORITY(irq) (PLIC_BASE + 4UL * (irq))
#define PLIC_PENDING       (PLIC_BASE + 0x1000)
#define PLIC_ENABLE0       (PLIC_BASE + 0x2000)
#define PLIC_THRESHOLD0    (PLIC_BASE + 0x200000)
#define PLIC_CLAIM0        (PLIC_BASE + 0x200004)

static inline void plic_set_priority(unsigned irq, uint32_t prio) { mmio_write32(PLIC_PRIORITY(irq), prio); }
static inline void plic_set_threshold(uint32_t t) { mmio_write32(PLIC_THRESHOLD0, t); }
static inline void plic_enable(unsigned irq)
{
    uintptr_t a = PLIC_ENABLE0 + 4UL * (irq / 32);
    mmio_write32(a, mmio_read32(a) | (1U << (irq % 32)));
}
static inline uint32_t plic_claim(void) { return mmio_read32(PLIC_CLAIM0); }
static inline void plic_complete(uint32_t irq) { mmio_write32(PLIC_CLAIM0, irq); }

/* ---- deterministic PRNG (splitmix64) ---- */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15UL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    return z ^ (z >> 31);
}

/* Sv39 page-table entry bits */
#define PTE_V 1UL
#define PTE_R 2UL
#define PTE_W 4UL
#define PTE_X 8UL
#define PTE_U 16UL
#define PTE_A 64UL
#define PTE_D 128UL

#endif /* __ASSEMBLER__ */
#endif
