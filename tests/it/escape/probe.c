/*
 * The attacker inside the container, for tests/it/escape.rs.
 *
 * Each subcommand tries one way out of (or into) den's container and
 * prints what the kernel said: `OK` when the attempt worked, else the
 * errno's name (`EPERM`, `ENOSYS`, ...). The test decides what is
 * expected. Built static by the test (`cc -static`), so it runs in a
 * busybox image without a libc.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errno_name(int err)
{
    switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case EROFS: return "EROFS";
    case ENOKEY: return "ENOKEY";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOTDIR: return "ENOTDIR";
    case EXDEV: return "EXDEV";
    case EFBIG: return "EFBIG";
    default: {
        static char text[32];
        snprintf(text, sizeof text, "errno%d", err);
        return text;
    }
    }
}

/* Prints OK for a non-negative result, else errno's name. */
static int report(long result)
{
    puts(result >= 0 ? "OK" : errno_name(errno));
    return 0;
}

/* The descriptors this process holds, beyond the one listing them. */
static int list_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return report(-1);
    struct dirent *entry;
    int first = 1;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.' || atoi(entry->d_name) == dirfd(dir))
            continue;
        printf(first ? "%s" : " %s", entry->d_name);
        first = 0;
    }
    putchar('\n');
    closedir(dir);
    return 0;
}

/*
 * The /proc/<pid>/fd walk: for every descriptor of pid that is a
 * directory, climb to its filesystem's root and try to create `name`
 * in `subdir` there. Prints OK if any write landed.
 */
static int fd_walk(const char *pid, const char *subdir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    DIR *dir = opendir(path);
    if (!dir)
        return report(-1);
    struct dirent *entry;
    int landed = 0;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        char target[4096];
        snprintf(target, sizeof target,
                 "/proc/%s/fd/%s/../../../../../../../../../../%s/%s", pid,
                 entry->d_name, subdir, name);
        int fd = open(target, O_WRONLY | O_CREAT, 0644);
        if (fd >= 0) {
            landed = 1;
            close(fd);
        }
    }
    closedir(dir);
    puts(landed ? "OK" : "EACCES");
    return 0;
}

/* Creates `name` through inherited descriptor `fd` (a directory). */
static int write_through_fd(int fd, const char *name)
{
    return report(openat(fd, name, O_WRONLY | O_CREAT, 0644));
}

static int read_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return report(-1);
    char buf[64];
    long n = read(fd, buf, sizeof buf);
    close(fd);
    return report(n);
}

static int trace(const char *pid)
{
    return report(ptrace(PTRACE_SEIZE, atoi(pid), 0, 0));
}

/* Looks for a `user` key by description in the session keyring. */
static int keyring_search(const char *description)
{
    return report(syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING,
                          "user", description, 0));
}

static int unmount(const char *path)
{
    return report(umount2(path, MNT_DETACH));
}

static int remount_rw(const char *path)
{
    return report(mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL));
}

static int mount_proc(const char *path)
{
    return report(mount("proc", path, "proc", 0, NULL));
}

/* A new user and mount namespace, then the umount there. */
static int nested_unmount(const char *path)
{
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
        return report(-1);
    return report(umount2(path, MNT_DETACH));
}

static int raw_syscall(const char *name)
{
    if (!strcmp(name, "io_uring_setup")) {
        char params[120] = {0};
        return report(syscall(SYS_io_uring_setup, 1, params));
    }
    if (!strcmp(name, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(name, "perf_event_open")) {
        struct perf_event_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.size = sizeof attr;
        attr.type = PERF_TYPE_SOFTWARE;
        attr.config = PERF_COUNT_SW_CPU_CLOCK;
        attr.exclude_kernel = 1;
        return report(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    }
    if (!strcmp(name, "keyctl"))
        return report(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID,
                              KEY_SPEC_SESSION_KEYRING, 0));
    if (!strcmp(name, "add_key"))
        return report(syscall(SYS_add_key, "user", "den-probe", "x", 1,
                              KEY_SPEC_PROCESS_KEYRING));
    if (!strcmp(name, "userfaultfd"))
        return report(syscall(SYS_userfaultfd, 0));
    if (!strcmp(name, "fsopen"))
        return report(syscall(SYS_fsopen, "tmpfs", 0));
    if (!strcmp(name, "open_by_handle_at"))
        return report(syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0));
    if (!strcmp(name, "unshare_user"))
        return report(unshare(CLONE_NEWUSER));
    fprintf(stderr, "probe: unknown syscall %s\n", name);
    return 2;
}

/* A 32-bit syscall (getpid through int 0x80) from this 64-bit process. */
static int foreign_arch(void)
{
#if defined(__x86_64__)
    long result;
    __asm__ volatile("int $0x80" : "=a"(result) : "a"(20L) : "memory");
    return report(result < 0 ? (errno = -result, -1) : result);
#else
    puts("unsupported");
    return 0;
#endif
}

static int tcp_connect(const char *address, const char *port)
{
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0)
        return report(-1);
    struct timeval timeout = {.tv_sec = 5};
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, address, &to.sin_addr);
    return report(connect(sock, (struct sockaddr *)&to, sizeof to));
}

/* Listens on TCP `port` of every address. */
static int tcp_bind(const char *port)
{
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0)
        return report(-1);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    return report(bind(sock, (struct sockaddr *)&at, sizeof at));
}

/* One ICMP echo through an unprivileged ICMP socket; OK on the reply. */
static int ping(const char *address)
{
    int sock = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    if (sock < 0)
        return report(-1);
    struct timeval timeout = {.tv_sec = 5};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in to = {.sin_family = AF_INET};
    inet_pton(AF_INET, address, &to.sin_addr);
    unsigned char echo[16] = {8}; /* type 8: echo request; the kernel sets id and checksum */
    if (sendto(sock, echo, sizeof echo, 0, (struct sockaddr *)&to, sizeof to) < 0)
        return report(-1);
    unsigned char reply[64];
    return report(recv(sock, reply, sizeof reply, 0));
}

/* Writes `mib` MiB of non-zero bytes into `path`; OK if all landed. */
static int fill(const char *path, const char *mib)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return report(-1);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    for (long i = 0; i < atol(mib); i++) {
        if (write(fd, chunk, sizeof chunk) != (long)sizeof chunk) {
            int err = errno ? errno : ENOSPC;
            close(fd);
            unlink(path);
            errno = err;
            return report(-1);
        }
    }
    close(fd);
    unlink(path);
    return report(0);
}

/* Forks up to `count` sleeping children; OK if all started. */
static int fork_many(const char *count)
{
    long wanted = atol(count), started = 0;
    pid_t *children = calloc(wanted, sizeof *children);
    int err = 0;
    for (; started < wanted; started++) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        children[started] = pid;
    }
    for (long i = 0; i < started; i++)
        kill(children[i], SIGKILL);
    while (wait(NULL) > 0)
        ;
    errno = err;
    return report(started == wanted ? 0 : -1);
}

/*
 * Host side of the keyring attack: a new session keyring holding a
 * `user` key named `description`, then exec `argv` in it.
 */
static int with_session_key(const char *description, char **argv)
{
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 ||
        syscall(SYS_add_key, "user", description, "secret", 6,
                KEY_SPEC_SESSION_KEYRING) < 0) {
        perror("probe: with-session-key");
        return 2;
    }
    execvp(argv[0], argv);
    perror("probe: exec");
    return 2;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "fds") && argc == 2)
        return list_fds();
    if (!strcmp(what, "fd-walk") && argc == 5)
        return fd_walk(argv[2], argv[3], argv[4]);
    if (!strcmp(what, "write-through-fd") && argc == 4)
        return write_through_fd(atoi(argv[2]), argv[3]);
    if (!strcmp(what, "read") && argc == 3)
        return read_file(argv[2]);
    if (!strcmp(what, "ptrace") && argc == 3)
        return trace(argv[2]);
    if (!strcmp(what, "keyring-search") && argc == 3)
        return keyring_search(argv[2]);
    if (!strcmp(what, "umount") && argc == 3)
        return unmount(argv[2]);
    if (!strcmp(what, "remount-rw") && argc == 3)
        return remount_rw(argv[2]);
    if (!strcmp(what, "mount-proc") && argc == 3)
        return mount_proc(argv[2]);
    if (!strcmp(what, "nested-umount") && argc == 3)
        return nested_unmount(argv[2]);
    if (!strcmp(what, "syscall") && argc == 3)
        return raw_syscall(argv[2]);
    if (!strcmp(what, "foreign-arch") && argc == 2)
        return foreign_arch();
    if (!strcmp(what, "connect") && argc == 4)
        return tcp_connect(argv[2], argv[3]);
    if (!strcmp(what, "bind") && argc == 3)
        return tcp_bind(argv[2]);
    if (!strcmp(what, "ping") && argc == 3)
        return ping(argv[2]);
    if (!strcmp(what, "fill") && argc == 4)
        return fill(argv[2], argv[3]);
    if (!strcmp(what, "fork") && argc == 3)
        return fork_many(argv[2]);
    if (!strcmp(what, "with-session-key") && argc >= 4)
        return with_session_key(argv[2], argv + 3);
    fprintf(stderr, "usage: probe <attack> [args]\n");
    return 2;
}
