/* Demo guest: a key-value server on the UART with interrupt-driven RX.
 * Commands, one per line ('\n' ends a line, '\r' is ignored):
 *   SET k v -> OK          GET k -> v | NOTFOUND     DEL k -> OK | NOTFOUND
 *   STATS   -> keys N sets N gets N dels N          QUIT  -> BYE, exit pass
 *   anything else (or a too long key/value/line, or a full table) -> ERR
 * The value is the rest of the line after the key and may contain spaces. */
#include <string.h>
#include "platform.h"

#define MAX_KEY   64
#define MAX_VAL   64
#define MAX_LINE  256
#define SLOTS     4096              /* power of two, open addressing */
#define MAX_KEYS  3072              /* keep probe chains short */
#define RX_SIZE   1024              /* power of two */

/* ---- RX ring: the interrupt handler produces, main consumes ---- */
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint32_t rx_head, rx_tail;
static volatile int rx_paused;      /* ring was full: RX interrupt masked */

static void uart_rx_irq(void)
{
    while (mmio_read8(UART_BASE + UART_LSR) & UART_LSR_DR) {
        if (rx_head - rx_tail == RX_SIZE) {
            /* Leave the byte in the UART and stop the (level) interrupt;
             * main unmasks it once it has made room. */
            mmio_write8(UART_BASE + UART_IER, 0);
            rx_paused = 1;
            return;
        }
        rx_buf[rx_head % RX_SIZE] = mmio_read8(UART_BASE + UART_RBR);
        rx_head++;
    }
}

void trap_handler(struct trap_frame *f)
{
    if (f->mcause == (MCAUSE_INT | IRQ_M_EXT)) {
        uint32_t irq;
        while ((irq = plic_claim()) != 0) {
            if (irq == UART_IRQ)
                uart_rx_irq();
            plic_complete(irq);
        }
        return;
    }
    uart_puts("kv: unexpected trap mcause ");
    put_hex(f->mcause);
    uart_puts(" mepc ");
    put_hex(f->mepc);
    uart_putc('\n');
    exit_fail(EXIT_UNEXPECTED_TRAP);
}

/* Blocks (in WFI) until a byte is available. */
static uint8_t rx_get(void)
{
    for (;;) {
        /* Check-then-sleep with interrupts masked: WFI still wakes on a
         * pending interrupt, and enabling MIE afterwards takes it. This
         * closes the race where a byte arrives between check and WFI. */
        irq_disable();
        if (rx_head == rx_tail)
            wfi();
        irq_enable();
        if (rx_head != rx_tail)
            break;
    }
    uint8_t c = rx_buf[rx_tail % RX_SIZE];
    rx_tail++;
    if (rx_paused) {
        rx_paused = 0;
        mmio_write8(UART_BASE + UART_IER, UART_IER_RDI);
    }
    return c;
}

/* ---- hash table ---- */
enum { EMPTY, USED, TOMB };
struct slot {
    uint8_t state, klen, vlen;
    char key[MAX_KEY], val[MAX_VAL];
};
static struct slot table[SLOTS];
static uint64_t nkeys, nsets, ngets, ndels;

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325UL;  /* FNV-1a */
    while (n--)
        h = (h ^ (uint8_t)*k++) * 0x100000001b3UL;
    return h;
}

/* Returns the slot holding key, or NULL; *insert gets the first reusable
 * slot on the probe path (NULL if the table has none). */
static struct slot *lookup(const char *k, size_t n, struct slot **insert)
{
    struct slot *free_slot = NULL;
    uint64_t i = hash(k, n);
    for (unsigned probes = 0; probes < SLOTS; probes++, i++) {
        struct slot *s = &table[i % SLOTS];
        if (s->state == EMPTY) {
            if (!free_slot)
                free_slot = s;
            break;
        }
        if (s->state == TOMB) {
            if (!free_slot)
                free_slot = s;
        } else if (s->klen == n && memcmp(s->key, k, n) == 0) {
            return s;
        }
    }
    if (insert)
        *insert = free_slot;
    return NULL;
}

/* ---- commands ---- */
static void reply(const char *s) { uart_puts(s); }

static void handle(char *line, size_t len)
{
    /* Split "CMD rest": the first token, then everything after one space. */
    size_t cmdlen = 0;
    while (cmdlen < len && line[cmdlen] != ' ')
        cmdlen++;
    char *arg = line + cmdlen + (cmdlen < len);
    size_t arglen = len - cmdlen - (cmdlen < len);
    int has_arg = cmdlen < len;

    /* Key = first token of arg; rest = after one more space. */
    size_t klen = 0;
    while (klen < arglen && arg[klen] != ' ')
        klen++;
    int has_rest = klen < arglen;
    char *rest = arg + klen + has_rest;
    size_t restlen = arglen - klen - has_rest;

#define IS(name) (cmdlen == sizeof(name) - 1 && memcmp(line, name, cmdlen) == 0)
    if (IS("SET") && has_arg && has_rest && klen && klen <= MAX_KEY &&
        restlen && restlen <= MAX_VAL) {
        struct slot *ins, *s = lookup(arg, klen, &ins);
        if (!s) {
            if (!ins || nkeys == MAX_KEYS) {
                reply("ERR\n");
                return;
            }
            s = ins;
            s->state = USED;
            s->klen = (uint8_t)klen;
            memcpy(s->key, arg, klen);
            nkeys++;
        }
        s->vlen = (uint8_t)restlen;
        memcpy(s->val, rest, restlen);
        nsets++;
        reply("OK\n");
    } else if (IS("GET") && has_arg && !has_rest && klen && klen <= MAX_KEY) {
        ngets++;
        struct slot *s = lookup(arg, klen, NULL);
        if (!s) {
            reply("NOTFOUND\n");
            return;
        }
        for (unsigned i = 0; i < s->vlen; i++)
            uart_putc(s->val[i]);
        uart_putc('\n');
    } else if (IS("DEL") && has_arg && !has_rest && klen && klen <= MAX_KEY) {
        ndels++;
        struct slot *s = lookup(arg, klen, NULL);
        if (!s) {
            reply("NOTFOUND\n");
            return;
        }
        s->state = TOMB;
        nkeys--;
        reply("OK\n");
    } else if (IS("STATS") && !has_arg) {
        uart_puts("keys ");
        put_dec(nkeys);
        uart_puts(" sets ");
        put_dec(nsets);
        uart_puts(" gets ");
        put_dec(ngets);
        uart_puts(" dels ");
        put_dec(ndels);
        uart_putc('\n');
    } else if (IS("QUIT") && !has_arg) {
        reply("BYE\n");
        exit_pass();
    } else {
        reply("ERR\n");
    }
#undef IS
}

int main(void)
{
    /* No FCR write: toggling the FIFO enable resets the FIFOs on a 16550,
     * which could drop input that arrived before we got here. */
    plic_set_priority(UART_IRQ, 1);
    plic_enable(UART_IRQ);
    plic_set_threshold(0);
    mmio_write8(UART_BASE + UART_IER, UART_IER_RDI);
    csr_set(mie, MIP_MEIP);
    irq_enable();

    uart_puts("kv ready\n");

    static char line[MAX_LINE];
    size_t len = 0;
    int overflow = 0;
    for (;;) {
        char c = (char)rx_get();
        if (c == '\r')
            continue;
        if (c == '\n') {
            if (overflow)
                reply("ERR\n");
            else
                handle(line, len);
            len = 0;
            overflow = 0;
        } else if (len < MAX_LINE) {
            line[len++] = c;
        } else {
            overflow = 1;
        }
    }
}
