/* A polling virtio-blk driver over virtio-mmio version 2 (virtio 1.1 §4.2.2, §5.2), for bare-metal
 * guests: one split virtqueue of 8 entries, one request in flight, three descriptors per request
 * (header, data, status). It finds the device by scanning QEMU virt's eight transports. Under
 * QEMU give -global virtio-mmio.force-legacy=false so the transport is version 2, as ours is. */
#ifndef GUEST_VIRTIO_BLK_H
#define GUEST_VIRTIO_BLK_H
#include "platform.h"

#define VIRTIO_MMIO_BASE   0x10001000UL
#define VIRTIO_MMIO_STRIDE 0x1000UL
#define VIRTIO_MMIO_SLOTS  8
#define VIRTIO_BLK_QSIZE   8
#define VIRTIO_BLK_SECTOR  512

#define VBLK_T_IN    0
#define VBLK_T_OUT   1
#define VBLK_T_FLUSH 4
#define VBLK_T_GET_ID 8
#define VBLK_S_OK     0
#define VBLK_S_IOERR  1
#define VBLK_S_UNSUPP 2

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vblk_req_hdr { uint32_t type, reserved; uint64_t sector; };

struct vblk {
    uintptr_t base;
    uint64_t capacity;      /* sectors */
    uint16_t last_used;
    struct vring_desc desc[VIRTIO_BLK_QSIZE] __attribute__((aligned(16)));
    struct { uint16_t flags, idx, ring[VIRTIO_BLK_QSIZE], event; } avail __attribute__((aligned(2)));
    struct { uint16_t flags, idx; struct { uint32_t id, len; } ring[VIRTIO_BLK_QSIZE]; uint16_t event; } used __attribute__((aligned(4)));
    struct vblk_req_hdr hdr;
    volatile uint8_t status;
};

static inline void vblk_reg_write(struct vblk *d, unsigned reg, uint32_t v) { mmio_write32(d->base + reg, v); }
static inline uint32_t vblk_reg_read(struct vblk *d, unsigned reg) { return mmio_read32(d->base + reg); }

/* Finds and initialises the first virtio-blk; returns 0, or -1 without one. */
static int vblk_init(struct vblk *d)
{
    d->base = 0;
    for (int s = 0; s < VIRTIO_MMIO_SLOTS; s++) {
        uintptr_t b = VIRTIO_MMIO_BASE + s * VIRTIO_MMIO_STRIDE;
        if (mmio_read32(b) == 0x74726976 && mmio_read32(b + 4) == 2 && mmio_read32(b + 8) == 2) d->base = b;
    }
    if (!d->base) return -1;
    vblk_reg_write(d, 0x070, 0);
    vblk_reg_write(d, 0x070, 1 | 2);                   /* ACKNOWLEDGE | DRIVER */
    vblk_reg_write(d, 0x014, 0);
    uint32_t lo = vblk_reg_read(d, 0x010);
    vblk_reg_write(d, 0x024, 0);
    vblk_reg_write(d, 0x020, lo & (1u << 9));           /* FLUSH, when offered */
    vblk_reg_write(d, 0x024, 1);
    vblk_reg_write(d, 0x020, 1);                        /* VERSION_1 */
    vblk_reg_write(d, 0x070, 1 | 2 | 8);                /* FEATURES_OK */
    if (!(vblk_reg_read(d, 0x070) & 8)) return -1;
    vblk_reg_write(d, 0x030, 0);
    if (vblk_reg_read(d, 0x034) < VIRTIO_BLK_QSIZE) return -1;
    vblk_reg_write(d, 0x038, VIRTIO_BLK_QSIZE);
    uint64_t a;
    a = (uintptr_t)d->desc;   vblk_reg_write(d, 0x080, (uint32_t)a); vblk_reg_write(d, 0x084, (uint32_t)(a >> 32));
    a = (uintptr_t)&d->avail; vblk_reg_write(d, 0x090, (uint32_t)a); vblk_reg_write(d, 0x094, (uint32_t)(a >> 32));
    a = (uintptr_t)&d->used;  vblk_reg_write(d, 0x0a0, (uint32_t)a); vblk_reg_write(d, 0x0a4, (uint32_t)(a >> 32));
    d->avail.idx = 0;
    d->last_used = 0;
    vblk_reg_write(d, 0x044, 1);
    vblk_reg_write(d, 0x070, 1 | 2 | 8 | 4);            /* DRIVER_OK */
    d->capacity = (uint64_t)vblk_reg_read(d, 0x100) | ((uint64_t)vblk_reg_read(d, 0x104) << 32);
    return 0;
}

/* One request; data may be 0 bytes (flush). Returns the device's status byte. */
static int vblk_request(struct vblk *d, uint32_t type, uint64_t sector, void *data, uint32_t bytes, int device_writes)
{
    d->hdr.type = type;
    d->hdr.reserved = 0;
    d->hdr.sector = sector;
    d->status = 0xff;
    int n = 0;
    d->desc[n] = (struct vring_desc){ (uintptr_t)&d->hdr, sizeof d->hdr, 1, 1 }; n++;
    if (bytes) { d->desc[n] = (struct vring_desc){ (uintptr_t)data, bytes, (uint16_t)(1 | (device_writes ? 2 : 0)), 2 }; n++; }
    d->desc[n] = (struct vring_desc){ (uintptr_t)&d->status, 1, 2, 0 };
    d->avail.ring[d->avail.idx % VIRTIO_BLK_QSIZE] = 0;
    __asm__ volatile("fence rw, rw" ::: "memory");
    d->avail.idx++;
    __asm__ volatile("fence rw, rw" ::: "memory");
    vblk_reg_write(d, 0x050, 0);
    while (*(volatile uint16_t *)&d->used.idx == d->last_used) __asm__ volatile("" ::: "memory");
    __asm__ volatile("fence rw, rw" ::: "memory");
    d->last_used++;
    vblk_reg_write(d, 0x064, vblk_reg_read(d, 0x060));  /* acknowledge the interrupt */
    return d->status;
}

static inline int vblk_read(struct vblk *d, uint64_t sector, void *buf, uint32_t sectors)
{ return vblk_request(d, VBLK_T_IN, sector, buf, sectors * VIRTIO_BLK_SECTOR, 1); }
static inline int vblk_write(struct vblk *d, uint64_t sector, const void *buf, uint32_t sectors)
{ return vblk_request(d, VBLK_T_OUT, sector, (void *)buf, sectors * VIRTIO_BLK_SECTOR, 0); }
static inline int vblk_flush(struct vblk *d) { return vblk_request(d, VBLK_T_FLUSH, 0, 0, 0, 0); }
static inline int vblk_get_id(struct vblk *d, char id[20]) { return vblk_request(d, VBLK_T_GET_ID, 0, id, 20, 1); }

#endif
