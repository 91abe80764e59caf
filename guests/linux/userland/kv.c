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
 * to the bare-metal guest's.
 *
 * `kv DIR` (init passes /data when an ext4 disk is mounted there) keeps the keys on disk: every SET
 * and DEL is appended to DIR/kv.log and fdatasync'd before its OK is printed, so an acknowledged
 * write survives a power-off, a crash or a migration. At start the log is read back (up to the
 * first torn or damaged record: one that was never acknowledged) and rewritten compacted; it is
 * compacted again when it grows past LOG_COMPACT bytes. A record:
 *   op ('S' | 'D') klen vlen (1 byte each) key[klen] val[vlen] fnv1a32(all before, little endian) */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
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

enum { RECORD_MAX = 3 + KEY_MAX + VAL_MAX + 4, LOG_COMPACT = 4 << 20 };
static const char *data_dir; /* NULL: keys in memory only */
static int log_fd = -1;
static size_t log_bytes;

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

static uint32_t fnv1a(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static size_t encode(unsigned char *r, char op, const char *k, size_t kn, const char *v, size_t vn)
{
    r[0] = (unsigned char)op;
    r[1] = (unsigned char)kn;
    r[2] = (unsigned char)vn;
    memcpy(r + 3, k, kn);
    memcpy(r + 3 + kn, v, vn);
    size_t n = 3 + kn + vn;
    uint32_t h = fnv1a(r, n);
    for (int i = 0; i < 4; i++)
        r[n + i] = (unsigned char)(h >> (8 * i));
    return n + 4;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", data_dir, name);
}

/* Rewrites the log as one SET per live key (bucket order), durable before it replaces the old one. */
static int compact(void)
{
    char tmp[128], final[128];
    path_in(tmp, sizeof tmp, "kv.log.new");
    path_in(final, sizeof final, "kv.log");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    size_t total = 0;
    unsigned char r[RECORD_MAX];
    for (unsigned b = 0; b < BUCKETS; b++)
        for (struct entry *e = buckets[b]; e; e = e->next) {
            size_t n = encode(r, 'S', e->key, e->klen, e->val, e->vlen);
            if (write_all(fd, r, n) != 0) {
                close(fd);
                return -1;
            }
            total += n;
        }
    if (fdatasync(fd) != 0 || close(fd) != 0 || rename(tmp, final) != 0)
        return -1;
    int dir = open(data_dir, O_RDONLY | O_DIRECTORY);
    if (dir >= 0) {
        fsync(dir); /* the rename itself */
        close(dir);
    }
    if (log_fd >= 0)
        close(log_fd);
    log_fd = open(final, O_WRONLY | O_APPEND);
    log_bytes = total;
    return log_fd >= 0 ? 0 : -1;
}

/* Appends one record and makes it durable: only then may the command answer OK. */
static int persist(char op, const char *k, size_t kn, const char *v, size_t vn)
{
    if (!data_dir)
        return 0;
    unsigned char r[RECORD_MAX];
    size_t n = encode(r, op, k, kn, v, vn);
    if (log_fd < 0 || write_all(log_fd, r, n) != 0 || fdatasync(log_fd) != 0)
        return -1;
    log_bytes += n;
    if (log_bytes > LOG_COMPACT)
        compact(); /* a failure leaves the longer log, still complete */
    return 0;
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
    if (data_dir) {
        close(log_fd);
        umount(data_dir); /* a clean file system: the next mount has no journal to recover */
    }
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

/* SET: 0, or -1 with nothing changed (table full, or the record could not be made durable). */
static int put(const char *k, size_t kn, const char *v, size_t vn, int durable)
{
    struct entry **p = find(k, kn);
    struct entry *e = *p;
    if (!e) {
        e = take_entry();
        if (!e)
            return -1;
    }
    if (durable && persist('S', k, kn, v, vn) != 0) {
        if (!*p) {
            e->next = spare;
            spare = e;
        }
        return -1;
    }
    if (!*p) {
        e->next = NULL;
        e->klen = kn;
        memcpy(e->key, k, kn);
        *p = e;
        keys++;
    }
    e->vlen = vn;
    memcpy(e->val, v, vn);
    return 0;
}

/* DEL: 0, 1 when the key is not there, -1 when the record could not be made durable (key kept). */
static int del(const char *k, size_t kn, int durable)
{
    struct entry **p = find(k, kn);
    if (!*p)
        return 1;
    if (durable && persist('D', k, kn, NULL, 0) != 0)
        return -1;
    struct entry *e = *p;
    *p = e->next;
    e->next = spare;
    spare = e;
    keys--;
    return 0;
}

/* Replays DIR/kv.log into the table, up to the first torn or damaged record; returns how many records
 * applied, or (size_t)-1 when the file cannot be read whole. */
static size_t load(void)
{
    char path[128];
    path_in(path, sizeof path, "kv.log");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno == ENOENT ? 0 : (size_t)-1;
    struct stat st;
    size_t size = fstat(fd, &st) == 0 ? (size_t)st.st_size : 0;
    unsigned char *buf = size ? malloc(size) : NULL;
    size_t got = 0;
    while (buf && got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got < size) { /* unreadable: compacting now would drop what it holds */
        free(buf);
        return (size_t)-1;
    }
    size_t at = 0, records = 0;
    while (at + 7 <= got) {
        unsigned char *r = buf + at;
        size_t kn = r[1], vn = r[2], n = 3 + kn + vn;
        if (kn == 0 || kn > KEY_MAX || vn > VAL_MAX || (r[0] != 'S' && r[0] != 'D') || at + n + 4 > got)
            break;
        uint32_t h = fnv1a(r, n);
        if (r[n] != (unsigned char)h || r[n + 1] != (unsigned char)(h >> 8) || r[n + 2] != (unsigned char)(h >> 16) ||
            r[n + 3] != (unsigned char)(h >> 24))
            break;
        if (r[0] == 'S' ? put((char *)r + 3, kn, (char *)r + 3 + kn, vn, 0) != 0 : del((char *)r + 3, kn, 0) < 0)
            break;
        records++;
        at += n + 4;
    }
    free(buf);
    return records;
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
        if (put(arg, kn, val, valn, 1) != 0) { printf("ERR\n"); return; }
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
        int r = del(arg, kn, 1);
        printf(r == 0 ? "OK\n" : r == 1 ? "NOTFOUND\n" : "ERR\n");
    } else if (cn == 5 && !memcmp(line, "STATS", 5) && !has_arg) {
        printf("keys %llu sets %llu gets %llu dels %llu\n", keys, sets, gets, dels);
    } else if (cn == 4 && !memcmp(line, "QUIT", 4) && !has_arg) {
        printf("BYE\n");
        power_off();
    } else {
        printf("ERR\n");
    }
}

int main(int argc, char **argv)
{
    struct termios t;
    if (tcgetattr(0, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(0, TCSANOW, &t);
    }
    setvbuf(stdout, NULL, _IOFBF, 4096);
    if (argc > 1) {
        data_dir = argv[1];
        size_t records = load();
        if (records == (size_t)-1) {
            /* Keep the log as it is and append to it: the next start may read it. */
            char path[128];
            path_in(path, sizeof path, "kv.log");
            log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
            printf("kv: cannot read %s/kv.log whole; appending to it as it is\n", data_dir);
        } else {
            if (compact() != 0)
                printf("kv: cannot write %s/kv.log\n", data_dir);
            printf("kv: %llu keys from %s/kv.log (%zu records)\n", keys, data_dir, records);
        }
    }
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
