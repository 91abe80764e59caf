/* Mostly-idle guest: 100 Hz CLINT timer, WFI in between, "tick N" once per
 * second (every 100 interrupts). The next deadline is always the previous
 * one + 10 ms, never "now + 10 ms", so the tick grid does not drift with
 * interrupt latency. Build parameter SECONDS: exit after this many ticks
 * lines (0 = forever). */
#include "platform.h"

#ifndef SECONDS
#define SECONDS 3
#endif

#define HZ 100
#define PERIOD (MTIME_HZ / HZ)

static uint64_t next_deadline;
static volatile uint64_t interrupts;

void trap_handler(struct trap_frame *f)
{
    if (f->mcause == (MCAUSE_INT | IRQ_M_TIMER)) {
        next_deadline += PERIOD;
        timer_set(next_deadline);
        interrupts++;
        return;
    }
    uart_puts("idle: unexpected trap mcause ");
    put_hex(f->mcause);
    uart_puts(" mepc ");
    put_hex(f->mepc);
    uart_putc('\n');
    exit_fail(EXIT_UNEXPECTED_TRAP);
}

int main(void)
{
    next_deadline = mtime_read() + PERIOD;
    timer_set(next_deadline);
    csr_set(mie, MIP_MTIP);
    irq_enable();

    uint64_t printed = 0;
    for (;;) {
        wfi();
        uint64_t seconds = interrupts / HZ;
        while (printed < seconds) {
            printed++;
            uart_puts("tick ");
            put_dec(printed);
            uart_putc('\n');
            if (SECONDS && printed == SECONDS)
                return 0;
        }
    }
}
