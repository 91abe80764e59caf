/* Fixed-work integer benchmark: mul/div/rem, shifts, data-dependent branches,
 * loads and stores over a small array. Build parameters:
 *   ITERS           iterations (0 = run forever)
 *   PROGRESS_EVERY  with ITERS=0: print a progress line every this many */
#include "platform.h"

#ifndef ITERS
#define ITERS 20000000
#endif
#ifndef PROGRESS_EVERY
#define PROGRESS_EVERY 2000000
#endif

#define N 512                       /* 4 KiB of state: one page, cache-resident */
static uint64_t arr[N];

/* One block of work; returns the updated checksum. noinline keeps the code
 * identical in every variant. */
static __attribute__((noinline)) uint64_t run(uint64_t *seed, uint64_t acc, uint64_t iters)
{
    uint64_t x = *seed;
    for (uint64_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005UL + 1442695040888963407UL;  /* LCG */
        unsigned idx = (unsigned)(x >> 40) & (N - 1);
        uint64_t v = arr[idx];
        if (v & 1)
            acc += (v >> 7) ^ (x << 3);
        else
            acc ^= v * 0x9E3779B97F4A7C15UL;
        uint64_t d = (x >> 33) | 1;      /* nonzero divisor */
        acc += v / d + (acc % 1000003);
        arr[(idx + 1) & (N - 1)] = v + acc;
        acc = (acc << 13) | (acc >> 51);
    }
    *seed = x;
    return acc;
}

int main(void)
{
    uint64_t seed = 42, acc = 0;
    for (unsigned i = 0; i < N; i++)
        arr[i] = i * 0x0101010101010101UL;

    if (ITERS) {
        acc = run(&seed, acc, ITERS);
        for (unsigned i = 0; i < N; i++)
            acc ^= arr[i] + i;
        uart_puts("compute iters ");
        put_dec(ITERS);
        uart_puts(" checksum ");
        put_hex64(acc);
        uart_putc('\n');
        return 0;
    }
    for (uint64_t n = 1;; n++) {
        acc = run(&seed, acc, PROGRESS_EVERY);
        uart_puts("progress ");
        put_dec(n);
        uart_puts(" checksum ");
        put_hex64(acc);
        uart_putc('\n');
    }
}
