/* A small program to debug: a global counter written in a few places by a
 * couple of functions, so tests can break on a function, watch the counter
 * and reverse-continue to the write that changed it. */
#include "platform.h"

volatile uint64_t counter;          /* written by bump(), scale() and main() */
volatile uint64_t history[8];

static __attribute__((noinline)) void bump(uint64_t by)
{
    counter = counter + by;
}

static __attribute__((noinline)) uint64_t scale(uint64_t factor)
{
    uint64_t v = counter * factor;
    counter = v;
    return v;
}

int main(void)
{
    counter = 1;
    for (unsigned i = 0; i < 8; i++) {
        bump(i + 1);
        history[i] = counter;
    }
    scale(3);
    bump(100);
    uart_puts("debugme counter ");
    put_dec(counter);
    uart_putc('\n');
    return 0;
}
