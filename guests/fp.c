/* Fixed-work F/D workload: double matrix multiply (fused multiply-add), a
 * single-precision n-body-style step (div, sqrt), conversions to and from
 * integers, min/max/sign injection, and a slice in every rounding mode.
 * Prints a checksum of every result's bits and the accumulated fflags, so
 * QEMU and our machine must agree bit for bit. Build parameters:
 *   ITERS  outer iterations */
#include "platform.h"

#ifndef ITERS
#define ITERS 2000
#endif

#define N 12
static double a[N][N], b[N][N], c[N][N];
#define P 32
static float px[P], py[P], vx[P], vy[P];

static inline uint64_t dbits(double v) { union { double d; uint64_t u; } x = { v }; return x.u; }
static inline uint32_t fbits(float v) { union { float f; uint32_t u; } x = { v }; return x.u; }

static inline double fmax_d(double x, double y) { double r; __asm__("fmax.d %0, %1, %2" : "=f"(r) : "f"(x), "f"(y)); return r; }
static inline double fmin_d(double x, double y) { double r; __asm__("fmin.d %0, %1, %2" : "=f"(r) : "f"(x), "f"(y)); return r; }
static inline void set_frm(unsigned rm) { __asm__ volatile("fsrm %0" :: "r"(rm)); }
static inline uint64_t read_fflags(void) { uint64_t f; __asm__ volatile("frflags %0" : "=r"(f)); return f; }

static __attribute__((noinline)) uint64_t matmul(void)
{
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = c[i][j] * 0.5;
            for (int k = 0; k < N; k++)
                s = __builtin_fma(a[i][k], b[k][j], s);
            c[i][j] = s;
        }
    uint64_t h = 0;
    for (int i = 0; i < N; i++) h = (h * 31) ^ dbits(c[i][i]);
    return h;
}

static __attribute__((noinline)) uint64_t nbody(void)
{
    for (int i = 0; i < P; i++) {
        float fx = 0, fy = 0;
        for (int j = 0; j < P; j++) {
            float dx = px[j] - px[i], dy = py[j] - py[i];
            float d2 = dx * dx + dy * dy + 0.01f;
            float inv = 1.0f / (d2 * __builtin_sqrtf(d2));
            fx = __builtin_fmaf(dx, inv, fx);
            fy = __builtin_fmaf(dy, inv, fy);
        }
        vx[i] += fx * 0.001f;
        vy[i] += fy * 0.001f;
    }
    uint64_t h = 0;
    for (int i = 0; i < P; i++) {
        px[i] += vx[i];
        py[i] += vy[i];
        h = (h * 33) ^ fbits(px[i]) ^ ((uint64_t)fbits(vy[i]) << 32);
    }
    return h;
}

static __attribute__((noinline)) uint64_t conversions(uint64_t seed)
{
    uint64_t h = 0;
    for (int i = 0; i < 64; i++) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        double d = (double)(int64_t)seed / 3.0;
        float f = (float)d;
        h += (uint64_t)(int64_t)d ^ (uint64_t)(int32_t)f ^ (uint64_t)(seed >> 40);
        double m = fmax_d(d, -d) - fmin_d((double)f, d);
        h ^= dbits(__builtin_copysign(m, d)) + (uint64_t)(uint32_t)(float)(seed >> 11);
    }
    return h;
}

static __attribute__((noinline)) uint64_t rounding_modes(void)
{
    uint64_t h = 0;
    for (unsigned rm = 0; rm <= 4; rm++) {
        set_frm(rm);
        double x = 1.0 / 3.0, y = 0.1;
        float fx = 2.0f / 3.0f;
        for (int i = 0; i < 16; i++) {
            x = __builtin_fma(x, 1.0000001, y);
            y = __builtin_sqrt(x + y) / 7.0;
            fx = fx * 1.1f - 0.3f;
        }
        h = (h * 131) ^ dbits(x) ^ dbits(y) ^ fbits(fx);
    }
    set_frm(0);
    return h;
}

static __attribute__((noinline)) uint64_t work(void)
{
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            a[i][j] = (i * 7 + j * 3) % 11 * 0.125 - 0.5;
            b[i][j] = (i == j) ? 0.5 : (i - j) * 0.0625;
            c[i][j] = 0;
        }
    for (int i = 0; i < P; i++) {
        px[i] = (float)(i % 8) * 1.5f;
        py[i] = (float)(i / 8) * 1.25f + (float)i * 0.01f;
        vx[i] = vy[i] = 0;
    }
    uint64_t h = 0;
    for (unsigned it = 0; it < ITERS; it++) {
        h = (h << 7 | h >> 57) ^ matmul();
        h = (h << 5 | h >> 59) ^ nbody();
        if ((it & 15) == 0) h ^= conversions(h) ^ rounding_modes();
    }
    return h;
}

int main(void)
{
    __asm__ volatile("csrs mstatus, %0" :: "r"(0x6000UL)); /* mstatus.FS = Dirty: FP is off after reset */
    uint64_t h = work();
    uart_puts("fp iters ");
    put_dec(ITERS);
    uart_puts(" checksum ");
    put_hex64(h);
    uart_puts(" fflags ");
    put_hex(read_fflags());
    uart_puts("\n");
    return 0;
}
