/* Disk workload: the disk analogue of dirty.c. Reads the image's first blocks, writes WRITES
 * random runs of sectors (1..16 sectors, unaligned, seeded PRNG) keeping the expected contents
 * of a window in RAM, flushes, reads every written run back and compares, then prints checksums
 * of the whole disk. The same output under QEMU and under ours (and the same image afterwards). */
#include "platform.h"
#include "virtio_blk.h"

#ifndef WRITES
#define WRITES 200
#endif
#ifndef FLUSH_EVERY
#define FLUSH_EVERY 50
#endif
/* A const object, not the macro, in the loop test: with WRITES 0 the macro made `i < 0`, which
 * -Wtype-limits flags though the `WRITES == 0 ||` before it already decides. Same code either way. */
static const uint64_t writes = WRITES;

static struct vblk dev;
static uint8_t buf[16 * VIRTIO_BLK_SECTOR] __attribute__((aligned(16)));
static uint8_t check[16 * VIRTIO_BLK_SECTOR];

static uint64_t fnv(const uint8_t *p, uint64_t n, uint64_t h)
{
    for (uint64_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3UL; }
    return h;
}

static void fail(const char *what, int status)
{
    uart_puts("blk: "); uart_puts(what); uart_puts(" failed, status "); put_dec((uint64_t)status); uart_puts("\n");
    exit_fail(3);
}

int main(void)
{
    if (vblk_init(&dev) != 0) { uart_puts("blk: no virtio-blk device\n"); exit_fail(2); }
    uart_puts("blk: capacity "); put_dec(dev.capacity); uart_puts(" sectors\n");
    char id[21] = { 0 };
    int st = vblk_get_id(&dev, id);
    uart_puts("blk: get-id status "); put_dec((uint64_t)st); uart_puts(" id \""); uart_puts(id); uart_puts("\"\n");

    if ((st = vblk_read(&dev, 0, buf, 16)) != VBLK_S_OK) fail("read of sectors 0..15", st);
    uart_puts("blk: first 8 KiB checksum "); put_hex64(fnv(buf, sizeof buf, 0xcbf29ce484222325UL)); uart_puts("\n");

    uint64_t rng = 0xd15c, sum = 0xcbf29ce484222325UL;
    /* WRITES 0: forever (a migration test's workload), a progress line every PROGRESS_EVERY runs. */
    for (uint64_t i = 0; writes == 0 || i < writes; i++) {
        uint32_t n = 1 + (uint32_t)(rng_next(&rng) % 16);
        uint64_t sector = rng_next(&rng) % (dev.capacity - n + 1);
        for (uint32_t j = 0; j < n * VIRTIO_BLK_SECTOR; j += 8) *(uint64_t *)(buf + j) = rng_next(&rng);
        sum = fnv(buf, n * VIRTIO_BLK_SECTOR, sum);
        if ((st = vblk_write(&dev, sector, buf, n)) != VBLK_S_OK) fail("write", st);
        /* Read it straight back: the data read is the disk's state. */
        if ((st = vblk_read(&dev, sector, check, n)) != VBLK_S_OK) fail("read back", st);
        for (uint32_t j = 0; j < n * VIRTIO_BLK_SECTOR; j++)
            if (check[j] != buf[j]) { uart_puts("blk: read back differs at sector "); put_dec(sector); uart_puts("\n"); exit_fail(4); }
        if ((i + 1) % FLUSH_EVERY == 0 && (st = vblk_flush(&dev)) != VBLK_S_OK) fail("flush", st);
#ifdef PROGRESS_EVERY
        if ((i + 1) % PROGRESS_EVERY == 0) { uart_puts("blk: "); put_dec(i + 1); uart_puts(" runs, checksum "); put_hex64(sum); uart_puts("\n"); }
#endif
    }
    if ((st = vblk_flush(&dev)) != VBLK_S_OK) fail("flush", st);
    uart_puts("blk: wrote "); put_dec(WRITES); uart_puts(" runs, data checksum "); put_hex64(sum); uart_puts("\n");

    /* Beyond the end: the device must refuse it. */
    st = vblk_read(&dev, dev.capacity, buf, 1);
    uart_puts("blk: read past the end status "); put_dec((uint64_t)st); uart_puts("\n");

    uint64_t whole = 0xcbf29ce484222325UL;
    for (uint64_t s = 0; s < dev.capacity; s += 16) {
        uint32_t n = dev.capacity - s < 16 ? (uint32_t)(dev.capacity - s) : 16;
        if ((st = vblk_read(&dev, s, buf, n)) != VBLK_S_OK) fail("read of the disk", st);
        whole = fnv(buf, n * VIRTIO_BLK_SECTOR, whole);
    }
    uart_puts("blk: disk checksum "); put_hex64(whole); uart_puts("\n");
    uart_puts("blk: done\n");
    return 0;
}
