/* Memory-dirtying workload: random 8-byte read-modify-writes over a working
 * set in the free RAM after the image (zero at power-on, never cleared by the
 * runtime, so untouched pages stay zero pages). Every write folds the old
 * value into a running checksum, so any memory corruption (e.g. a page lost
 * in migration) changes the printed output. Build parameters:
 *   WS_BYTES        working set size, a power of two
 *   HOT_BYTES       if set: 90% of writes go to a hot region of this size
 *                   placed before the WS_BYTES (cold) region
 *   WRITES          number of writes (0 = forever)
 *   PROGRESS_EVERY  with WRITES=0: print a progress line every this many */
#include "platform.h"

#ifndef WS_BYTES
#define WS_BYTES (4UL << 20)
#endif
#ifndef HOT_BYTES
#define HOT_BYTES 0UL
#endif
#ifndef WRITES
#define WRITES 2000000UL
#endif
#ifndef PROGRESS_EVERY
#define PROGRESS_EVERY 1000000UL
#endif

#define RESERVED_TOP (1UL << 20)    /* keep the last MiB of RAM unused */

_Static_assert((WS_BYTES & (WS_BYTES - 1)) == 0, "WS_BYTES must be a power of two");
_Static_assert((HOT_BYTES & (HOT_BYTES - 1)) == 0, "HOT_BYTES must be a power of two");

static inline uint64_t mix(uint64_t acc, uint64_t old)
{
    return (acc ^ old) * 0x100000001B3UL + 1;
}

/* Free RAM this program uses; the runtime reports the rest to the balloon. */
uint64_t guest_free_ram_in_use(void) { return HOT_BYTES + WS_BYTES; }

int main(void)
{
    uint64_t *hot = (uint64_t *)__free_start;
    uint64_t *cold = (uint64_t *)(__free_start + HOT_BYTES);
    if ((uintptr_t)cold + WS_BYTES > (uintptr_t)__ram_end - RESERVED_TOP) {
        uart_puts("dirty: working set does not fit in RAM\n");
        return 1;
    }
    const uint64_t cold_mask = WS_BYTES / 8 - 1;
    const uint64_t hot_mask = HOT_BYTES ? HOT_BYTES / 8 - 1 : 0;

    uint64_t seed = 0x5eed, acc = 0;
    for (uint64_t n = 1; WRITES == 0 || n <= WRITES; n++) {
        uint64_t r = rng_next(&seed);
        uint64_t *p;
        if (HOT_BYTES && (r >> 32) % 10 != 0)
            p = &hot[r & hot_mask];
        else
            p = &cold[r & cold_mask];
        uint64_t old = *p;
        *p = old + r;
        acc = mix(acc, old);
        if (WRITES == 0 && n % PROGRESS_EVERY == 0) {
            uart_puts("progress ");
            put_dec(n / PROGRESS_EVERY);
            uart_puts(" checksum ");
            put_hex64(acc);
            uart_putc('\n');
        }
    }

    /* Finite runs: fold the final contents of the whole working set too. */
    uint64_t sum = 0;
    for (uint64_t i = 0; i <= cold_mask; i++)
        sum = mix(sum, cold[i]);
    uart_puts("dirty ws ");
    put_dec(WS_BYTES);
    uart_puts(" writes ");
    put_dec(WRITES);
    uart_puts(" acc ");
    put_hex64(acc);
    uart_puts(" checksum ");
    put_hex64(sum);
    uart_putc('\n');
    return 0;
}
