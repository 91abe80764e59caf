/* The console service of the LiveMigration Linux guest (static glibc).
 * The key-value protocol of the bare-metal guests/kv.c, one command per line ('\r' ignored):
 *   SET k v -> OK          GET k -> v | NOTFOUND     DEL k -> OK | NOTFOUND
 *   STATS   -> keys N sets N gets N dels N          QUIT  -> BYE, power off
 *   a too long key (> 64), value (> 64) or line (> 256), a full table, or junk -> ERR
 * and a few system commands:
 *   uptime -> up S.SS s idle S.SS s      free -> MemTotal/MemFree/MemAvailable in KiB
 *   cat /proc/interrupts -> the file      poweroff -> powers the machine off
 *   churn N -> churned N MiB: N MiB (1..1024) written with a pseudo-random pattern and freed again,
 *              so the kernel holds that much dirty free memory (what free page reporting gives the balloon)
 * The console is put in raw mode: no echo, no CR/LF translation, so replies are byte-identical
 * to the bare-metal guest's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <termios.h>
#include <unistd.h>

enum { KEY_MAX = 64, VAL_MAX = 64, LINE_MAX_LEN = 256, BUCKETS = 1024, CAPACITY = 3072 };

struct entry {
    struct entry *next;
    size_t klen, vlen;
    char key[KEY_MAX], val[VAL_MAX];
};

static struct entry *buckets[BUCKETS];
static struct entry pool[CAPACITY];
static struct entry *spare; /* freed entries, reused before the pool */
static size_t pool_used;
static unsigned long long keys, sets, gets, dels;

static unsigned bucket_of(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* 32-bit FNV-1 */
    for (size_t i = 0; i < n; i++)
        h = (h * 16777619u) ^ (unsigned char)k[i];
    return h % BUCKETS;
}

static struct entry **find(const char *k, size_t n)
{
    struct entry **p = &buckets[bucket_of(k, n)];
    while (*p && !((*p)->klen == n && memcmp((*p)->key, k, n) == 0))
        p = &(*p)->next;
    return p;
}

static struct entry *take_entry(void)
{
    if (spare) {
        struct entry *e = spare;
        spare = e->next;
        return e;
    }
    return pool_used < CAPACITY ? &pool[pool_used++] : NULL;
}

static void cat_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("ERR\n");
        return;
    }
    char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
}

static void uptime(void)
{
    double up = 0, idle = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (!f || fscanf(f, "%lf %lf", &up, &idle) != 2) {
        printf("ERR\n");
    } else {
        printf("up %.2f s idle %.2f s\n", up, idle);
    }
    if (f)
        fclose(f);
}

static void free_memory(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) {
        printf("ERR\n");
        return;
    }
    char line[128];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "MemTotal:", 9) || !strncmp(line, "MemFree:", 8) || !strncmp(line, "MemAvailable:", 13))
            fputs(line, stdout);
    fclose(f);
}

static void power_off(void)
{
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    exit(0);
}

static void churn(const char *arg, size_t n)
{
    char digits[8];
    if (n == 0 || n >= sizeof digits) { printf("ERR\n"); return; }
    memcpy(digits, arg, n);
    digits[n] = 0;
    char *end;
    unsigned long mib = strtoul(digits, &end, 10);
    if (*end || mib == 0 || mib > 1024) { printf("ERR\n"); return; }
    size_t len = (size_t)mib << 20;
    uint64_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { printf("ERR\n"); return; }
    uint64_t x = 0x9E3779B97F4A7C15ULL; /* xorshift: incompressible, and the same on every run */
    for (size_t i = 0; i < len / 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = x;
    }
    munmap(p, len);
    printf("churned %lu MiB\n", mib);
}

/* Splits off the first space-separated word of s[0..n): returns its length; rest and restn get what follows one space. */
static size_t word(const char *s, size_t n, const char **rest, size_t *restn, int *more)
{
    const char *sp = memchr(s, ' ', n);
    size_t w = sp ? (size_t)(sp - s) : n;
    *more = sp != NULL;
    *rest = sp ? sp + 1 : s + n;
    *restn = sp ? n - w - 1 : 0;
    return w;
}

static void command(const char *line, size_t n)
{
    if (n == 6 && !memcmp(line, "uptime", 6)) { uptime(); return; }
    if (n == 4 && !memcmp(line, "free", 4)) { free_memory(); return; }
    if (n == 20 && !memcmp(line, "cat /proc/interrupts", 20)) { cat_file("/proc/interrupts"); return; }
    if (n == 8 && !memcmp(line, "poweroff", 8)) power_off();

    const char *arg, *val;
    size_t argn, valn, kn;
    int has_arg, has_val;
    size_t cn = word(line, n, &arg, &argn, &has_arg);
    kn = word(arg, argn, &val, &valn, &has_val);
    int key_ok = has_arg && kn > 0 && kn <= KEY_MAX;
    if (cn == 5 && !memcmp(line, "churn", 5) && has_arg) { churn(arg, argn); return; }

    if (cn == 3 && !memcmp(line, "SET", 3) && key_ok && has_val && valn > 0 && valn <= VAL_MAX) {
        struct entry **p = find(arg, kn);
        if (!*p) {
            struct entry *e = take_entry();
            if (!e) { printf("ERR\n"); return; }
            e->next = NULL;
            e->klen = kn;
            memcpy(e->key, arg, kn);
            *p = e;
            keys++;
        }
        (*p)->vlen = valn;
        memcpy((*p)->val, val, valn);
        sets++;
        printf("OK\n");
    } else if (cn == 3 && !memcmp(line, "GET", 3) && key_ok && !has_val) {
        gets++;
        struct entry *e = *find(arg, kn);
        if (e)
            printf("%.*s\n", (int)e->vlen, e->val);
        else
            printf("NOTFOUND\n");
    } else if (cn == 3 && !memcmp(line, "DEL", 3) && key_ok && !has_val) {
        dels++;
        struct entry **p = find(arg, kn);
        if (!*p) { printf("NOTFOUND\n"); return; }
        struct entry *e = *p;
        *p = e->next;
        e->next = spare;
        spare = e;
        keys--;
        printf("OK\n");
    } else if (cn == 5 && !memcmp(line, "STATS", 5) && !has_arg) {
        printf("keys %llu sets %llu gets %llu dels %llu\n", keys, sets, gets, dels);
    } else if (cn == 4 && !memcmp(line, "QUIT", 4) && !has_arg) {
        printf("BYE\n");
        power_off();
    } else {
        printf("ERR\n");
    }
}

int main(void)
{
    struct termios t;
    if (tcgetattr(0, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(0, TCSANOW, &t);
    }
    setvbuf(stdout, NULL, _IOFBF, 4096);
    printf("kv ready\n");
    fflush(stdout);

    char line[LINE_MAX_LEN];
    size_t len = 0;
    int overflow = 0;
    for (;;) {
        char buf[256];
        ssize_t got = read(0, buf, sizeof buf);
        if (got <= 0)
            power_off();
        for (ssize_t i = 0; i < got; i++) {
            char c = buf[i];
            if (c == '\r')
                continue;
            if (c != '\n') {
                if (len < sizeof line)
                    line[len++] = c;
                else
                    overflow = 1;
                continue;
            }
            if (overflow)
                printf("ERR\n");
            else
                command(line, len);
            len = 0;
            overflow = 0;
        }
        fflush(stdout);
    }
}
