/* /init of the LiveMigration Linux guest (PID 1, static glibc).
 * Mounts proc, sys and devtmpfs, takes the console, prints the banner with the kernel version and
 * the boot time it saw (/proc/uptime: seconds since the kernel started its clock), then runs the
 * console service /bin/kv and powers the machine off when it ends. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
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

    struct utsname u;
    uname(&u);
    printf("LM Linux guest: %s %s %s, booted in %.3f s\n", u.sysname, u.release, u.version, uptime_seconds());
    fflush(stdout);

    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/kv", "kv", (char *)NULL);
        fprintf(stderr, "init: exec /bin/kv: %s\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (pid > 0 && waitpid(-1, &status, 0) != pid) {
        /* PID 1 reaps every orphan; only the console service's end matters */
    }
    sync();
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}
