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
