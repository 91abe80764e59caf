/* Console, finisher and default trap handler. */
#include "platform.h"

void uart_putc(char c)
{
    while (!(mmio_read8(UART_BASE + UART_LSR) & UART_LSR_THRE))
        ;
    mmio_write8(UART_BASE + UART_THR, (uint8_t)c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

int uart_getc(void)
{
    if (!(mmio_read8(UART_BASE + UART_LSR) & UART_LSR_DR))
        return -1;
    return mmio_read8(UART_BASE + UART_RBR);
}

static void put_hex_digits(uint64_t v, int min_digits)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v || n < min_digits);
    uart_puts("0x");
    while (n)
        uart_putc(buf[--n]);
}

void put_hex(uint64_t v)   { put_hex_digits(v, 1); }
void put_hex64(uint64_t v) { put_hex_digits(v, 16); }

void put_dec(uint64_t v)
{
    char buf[20];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        uart_putc(buf[--n]);
}

void put_sdec(int64_t v)
{
    if (v < 0) {
        uart_putc('-');
        put_dec(-(uint64_t)v);
    } else {
        put_dec((uint64_t)v);
    }
}

/* Wait for the transmitter to drain so no output is lost when the machine
 * stops, then poke the finisher. */
static void __attribute__((noreturn)) finish(uint32_t value)
{
#ifdef PRINT_INSTRET
    /* Debug aid: with `qemu -icount shift=0` this is the exact count. */
    uint64_t n = csr_read(minstret);
    uart_puts("instret ");
    put_dec(n);
    uart_putc('\n');
#endif
    while (!(mmio_read8(UART_BASE + UART_LSR) & UART_LSR_TEMT))
        ;
    for (;;) {
        mmio_write32(FINISHER_BASE, value);
        wfi();
    }
}

void exit_pass(void) { finish(0x5555); }
void exit_fail(uint32_t code) { finish(((code ? code : 1) << 16) | 0x3333); }

void guest_exit(int code)
{
    if (code == 0)
        exit_pass();
    exit_fail((uint32_t)code & 0xffff);
}

__attribute__((weak)) void trap_handler(struct trap_frame *f)
{
    uart_puts("unexpected trap mcause ");
    put_hex(f->mcause);
    uart_puts(" mepc ");
    put_hex(f->mepc);
    uart_puts(" mtval ");
    put_hex(f->mtval);
    uart_putc('\n');
    exit_fail(EXIT_UNEXPECTED_TRAP);
}

/* ---- free-page reporting ---- */

static int balloon_ok;

int balloon_present(void) { return balloon_ok; }

__attribute__((weak)) uint64_t guest_free_ram_in_use(void) { return 0; }

static int balloon_command(uint32_t cmd, uintptr_t addr, uint64_t bytes)
{
    if (!balloon_ok || bytes == 0)
        return 0;
    if ((addr | bytes) & 4095)
        return -1;
    mmio_write64(BALLOON_BASE + BALLOON_REG_ADDRESS, addr);
    mmio_write32(BALLOON_BASE + BALLOON_REG_COUNT, (uint32_t)(bytes >> 12));
    mmio_write32(BALLOON_BASE + BALLOON_REG_COMMAND, cmd);
    return mmio_read32(BALLOON_BASE + BALLOON_REG_STATUS) == 0 ? 0 : -1;
}

int balloon_report(uintptr_t addr, uint64_t bytes) { return balloon_command(BALLOON_CMD_REPORT, addr, bytes); }
int balloon_withdraw(uintptr_t addr, uint64_t bytes) { return balloon_command(BALLOON_CMD_WITHDRAW, addr, bytes); }

/* Called by crt0 before main(). */
void runtime_init(void)
{
    balloon_ok = mmio_probe32(BALLOON_BASE + BALLOON_REG_MAGIC) == BALLOON_MAGIC
              && mmio_read32(BALLOON_BASE + BALLOON_REG_VERSION) >= 1;
    uintptr_t from = (uintptr_t)__free_start + guest_free_ram_in_use();
    from = (from + 4095) & ~(uintptr_t)4095;
    if (from < (uintptr_t)__ram_end)
        balloon_report(from, (uintptr_t)__ram_end - from);
}
