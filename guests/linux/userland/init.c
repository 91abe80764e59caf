/* /init of the LiveMigration Linux guest (PID 1, static glibc).
 * Mounts proc, sys and devtmpfs, takes the console, prints the banner with the kernel version and
 * the boot time it saw (/proc/uptime: seconds since the kernel started its clock), then runs the
 * console service /bin/kv and powers the machine off when it ends. With an ext4 disk on /dev/vda
 * (a virtio-blk drive), it mounts it on /data first and tells kv to keep its keys there; any other
 * disk, or none, changes nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void mount_or_warn(const char *src, const char *dir, const char *type)
{
    mkdir(dir, 0755);
    if (mount(src, dir, type, 0, NULL) != 0 && errno != EBUSY)
        fprintf(stderr, "init: mount %s on %s: %s\n", type, dir, strerror(errno));
}

/* The initramfs carries /dev/console; if the kernel could not open it, open it now. */
static void take_console(void)
{
    if (fcntl(1, F_GETFD) != -1)
        return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
}

/* True when /dev/vda holds an ext4 superblock (magic 0xEF53 at byte 1080): a blank test disk is left alone,
 * so the kernel prints no mount error for it. */
static int has_ext4_disk(void)
{
    int fd = open("/dev/vda", O_RDONLY);
    if (fd < 0)
        return 0;
    unsigned char magic[2];
    int ok = pread(fd, magic, 2, 1080) == 2 && magic[0] == 0x53 && magic[1] == 0xEF;
    close(fd);
    return ok;
}

static double uptime_seconds(void)
{
    double up = -1;
    FILE *f = fopen("/proc/uptime", "r");
    if (f) {
        if (fscanf(f, "%lf", &up) != 1)
            up = -1;
        fclose(f);
    }
    return up;
}

int main(void)
{
    mount_or_warn("devtmpfs", "/dev", "devtmpfs");
    take_console();
    mount_or_warn("proc", "/proc", "proc");
    mount_or_warn("sysfs", "/sys", "sysfs");

    int data = 0;
    if (has_ext4_disk()) {
        /* The machine has no RTC: the clock starts at 1970 + uptime, and ext4 stamps a deleted inode's dtime
         * with it; 0 there (a delete in the first second, as under QEMU) reads to e2fsck as corruption. A
         * nominal epoch (2026-01-01, the build's timestamp) added to it keeps times sane and deterministic. */
        struct timespec now;
        if (clock_gettime(CLOCK_REALTIME, &now) == 0 && now.tv_sec < 1767225600) {
            now.tv_sec += 1767225600;
            clock_settime(CLOCK_REALTIME, &now);
        }
        mkdir("/data", 0755);
        if (mount("/dev/vda", "/data", "ext4", 0, NULL) == 0)
            data = 1;
        else
            fprintf(stderr, "init: mount /dev/vda on /data: %s\n", strerror(errno));
    }

    struct utsname u;
    uname(&u);
    printf("LM Linux guest: %s %s %s, booted in %.3f s\n", u.sysname, u.release, u.version, uptime_seconds());
    fflush(stdout);

    pid_t pid = fork();
    if (pid == 0) {
        if (data)
            execl("/bin/kv", "kv", "/data", (char *)NULL);
        else
            execl("/bin/kv", "kv", (char *)NULL);
        fprintf(stderr, "init: exec /bin/kv: %s\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (pid > 0 && waitpid(-1, &status, 0) != pid) {
        /* PID 1 reaps every orphan; only the console service's end matters */
    }
    sync();
    if (data)
        umount("/data");
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}
