/* bh-test-helper: the few things the integration tests (tests/integration) need that a shell
 * cannot do itself, so that no test depends on an interpreter. Every wait here is on an event
 * (a socket, inotify, a pidfd), with a deadline; nothing sleeps in a polling loop.
 *
 *   ready-wait SOCKET SECONDS    binds an sd_notify datagram socket at SOCKET, prints "listening"
 *                                once it is bound, then "READY" when a datagram holds the line
 *                                READY=1 (exit 0); exit 1 without READY=1 within SECONDS.
 *   wait-lines FILE N SECONDS    waits (inotify) until FILE exists and has at least N lines;
 *                                exit 1 after SECONDS without.
 *   wait-grep FILE N ERE SECONDS waits (inotify) until at least N lines of FILE match the POSIX
 *                                extended regular expression ERE (as grep -cE counts them); exit 1
 *                                after SECONDS without.
 *   wait-exit [--reaped] SECONDS PID...
 *                                opens a pidfd for every PID (a pid that is gone already counts
 *                                as exited) and prints "watching"; then waits until every one has
 *                                exited (with --reaped: and its parent has reaped it, so not even
 *                                a zombie is left) and prints "gone", or after SECONDS prints
 *                                "alive PID..." and exits 1. The pidfds name the processes, not
 *                                their numbers: a number reused later by another process is not
 *                                mistaken for them, so a test watches before it ends them.
 *   swap SECONDS-BETWEEN-BATCHES TARGET GOOD OTHER [TARGET GOOD OTHER...]
 *                                until SIGTERM: renames a hard link of GOOD, then of OTHER, over
 *                                each TARGET in turn (rename(2): a TARGET always names one whole
 *                                file); on SIGTERM prints how many renames it made and exits 0.
 *   stranger-host PROGRAM        runs "PROGRAM stranger" with fd 3 a socketpair end whose peer is
 *                                not PROGRAM's parent (a grandchild of the socket's owner); exits
 *                                with PROGRAM's exit status.
 *   garbage SOCKET               connects to a stream socket three times: sends 64 KiB of random
 *                                bytes, then zeros and 0xff, then nothing; closes each.
 *   journal SOCKET FILE SECONDS  a stand-in for journald's native socket: binds a datagram socket
 *                                at SOCKET, prints "listening", then appends each datagram (an
 *                                entry, KEY=VALUE lines) and an empty line to FILE; exits 0
 *                                after SECONDS.
 *   hold SOCKET N MILLISECONDS   holds N connections to SOCKET open, then closes them all.
 *   hostile-tars DIR             writes the hostile archives dotdot, absolute, outward, hardlink
 *                                and device (.tar) into DIR.
 */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char* prog = "bh-test-helper";

static void die(const char* what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
    exit(2);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until the deadline, at least 0. */
static int left_ms(long long deadline)
{
    long long left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

static struct sockaddr_un unix_address(const char* path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "%s: socket path too long: %s\n", prog, path);
        exit(2);
    }
    strcpy(addr.sun_path, path);
    return addr;
}

static int ready_wait(const char* path, double seconds)
{
    struct sockaddr_un addr = unix_address(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0)
        die(path);
    printf("listening\n");
    fflush(stdout);
    long long deadline = now_ms() + (long long)(seconds * 1000);
    char buf[4097];
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, left_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll");
        if (n == 0)
            return 1;
        ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
        if (got < 0)
            die("recv");
        buf[got] = '\0';
        for (char *line = buf, *end; line; line = end ? end + 1 : NULL) {
            end = strchr(line, '\n');
            if (end)
                *end = '\0';
            if (strcmp(line, "READY=1") == 0) {
                printf("READY\n");
                return 0;
            }
        }
    }
}

static int journal(const char* path, const char* file, double seconds)
{
    struct sockaddr_un addr = unix_address(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0)
        die(path);
    int out = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0)
        die(file);
    printf("listening\n");
    fflush(stdout);
    long long deadline = now_ms() + (long long)(seconds * 1000);
    static char buf[65537];
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, left_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll");
        if (n == 0)
            return 0;
        ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
        if (got < 0)
            die("recv");
        buf[got++] = '\n';
        if (write(out, buf, (size_t)got) != got)
            die(file);
    }
}

/* Lines of a file counted as it grows: only what was appended since the last look is read. A file
 * that was replaced or truncated is counted again from its start. */
struct line_counter {
    const regex_t* re; /* NULL: every line counts */
    int fd;
    dev_t dev;
    ino_t ino;
    off_t offset;
    long lines;
    char partial[65536]; /* the last line so far, not yet ended by a newline */
    size_t partial_len;
};

static int line_counts(const struct line_counter* c, const char* line, size_t len)
{
    if (!c->re)
        return 1;
    char buf[sizeof(c->partial) + 1];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    return regexec(c->re, buf, 0, NULL, 0) == 0;
}

/* The lines counted so far, with the unfinished last line counted as grep would; -1: no file. */
static long count_more(struct line_counter* c, const char* path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    if (c->fd < 0 || st.st_dev != c->dev || st.st_ino != c->ino || st.st_size < c->offset) {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (c->fd < 0)
            return -1;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        c->offset = 0;
        c->lines = 0;
        c->partial_len = 0;
    }
    char buf[65536];
    ssize_t got;
    while ((got = pread(c->fd, buf, sizeof(buf), c->offset)) > 0) {
        c->offset += got;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] == '\n') {
                c->lines += line_counts(c, c->partial, c->partial_len);
                c->partial_len = 0;
            } else if (c->partial_len < sizeof(c->partial)) {
                c->partial[c->partial_len++] = buf[i];
            }
        }
    }
    return c->lines + (c->partial_len > 0 && line_counts(c, c->partial, c->partial_len));
}

static int wait_count(const char* path, long want, const regex_t* re, double seconds)
{
    long long deadline = now_ms() + (long long)(seconds * 1000);
    static struct line_counter counter;
    counter.re = re;
    counter.fd = -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char* slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in < 0)
        die("inotify_init1");
    /* The directory: the file appearing or being replaced; the file: lines appended to it. */
    if (inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO) < 0)
        die(dir);
    for (;;) {
        /* Again each time: a file replaced since is another inode, to be watched too. */
        (void)inotify_add_watch(in, path, IN_MODIFY);
        if (count_more(&counter, path) >= want)
            return 0;
        struct pollfd p = { .fd = in, .events = POLLIN };
        int n = poll(&p, 1, left_ms(deadline));
        if (n < 0 && errno != EINTR)
            die("poll");
        if (n == 0)
            return count_more(&counter, path) >= want ? 0 : 1;
        char events[8192];
        while (read(in, events, sizeof(events)) > 0) { }
    }
}

static int wait_grep(const char* path, long want, const char* pattern, double seconds)
{
    static regex_t re;
    int err = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
    if (err != 0) {
        char message[256];
        regerror(err, &re, message, sizeof(message));
        fprintf(stderr, "%s: bad regular expression '%s': %s\n", prog, pattern, message);
        exit(2);
    }
    return wait_count(path, want, &re, seconds);
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Whether the process of PIDFD has been reaped (a zombie still takes a signal). */
static int reaped(int pidfd)
{
    return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 && errno == ESRCH;
}

static int wait_exit(int want_reaped, double seconds, int count, char** pids)
{
    long long deadline = now_ms() + (long long)(seconds * 1000);
    struct pollfd* fds = calloc((size_t)count + 1, sizeof(*fds));
    for (int i = 0; i < count; i++) {
        fds[i].fd = pidfd_open_((pid_t)atoi(pids[i]));
        if (fds[i].fd < 0 && errno != ESRCH)
            die("pidfd_open");
        fds[i].events = POLLIN;
    }
    printf("watching\n");
    fflush(stdout);
    for (;;) {
        int alive = 0;
        for (int i = 0; i < count; i++) {
            if (fds[i].fd < 0)
                continue;
            /* A pidfd is readable once its process has exited (a zombie, or reaped). */
            struct pollfd p = { .fd = fds[i].fd, .events = POLLIN };
            if (poll(&p, 1, 0) > 0 && (!want_reaped || reaped(fds[i].fd))) {
                close(fds[i].fd);
                fds[i].fd = -1;
            } else {
                alive++;
            }
        }
        if (alive == 0) {
            printf("gone\n");
            return 0;
        }
        if (left_ms(deadline) == 0) {
            printf("alive");
            for (int i = 0; i < count; i++)
                if (fds[i].fd >= 0)
                    printf(" %s", pids[i]);
            printf("\n");
            return 1;
        }
        /* Wait for an exit; a zombie's reaping raises no event, so while only zombies are left
         * (--reaped), look again every 20 ms: its new parent reaps it within moments. */
        int zombies_only = 1;
        for (int i = 0; i < count; i++) {
            struct pollfd p = { .fd = fds[i].fd, .events = POLLIN };
            if (fds[i].fd >= 0 && poll(&p, 1, 0) == 0)
                zombies_only = 0;
        }
        int timeout = left_ms(deadline);
        if (zombies_only && timeout > 20)
            timeout = 20;
        for (int i = 0; i < count; i++) {
            /* Only the still running ones: an exited one's pidfd stays readable. */
            struct pollfd p = { .fd = fds[i].fd, .events = POLLIN };
            fds[i].events = fds[i].fd >= 0 && poll(&p, 1, 0) == 0 ? POLLIN : 0;
        }
        if (poll(fds, (nfds_t)count, timeout) < 0 && errno != EINTR)
            die("poll");
    }
}

static volatile sig_atomic_t stop;
static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static int swap(double pause_s, int count, char** triples)
{
    struct sigaction sa = { .sa_handler = on_term };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int slots = count / 3;
    char(*tmp)[PATH_MAX] = calloc((size_t)slots, PATH_MAX);
    for (int s = 0; s < slots; s++) {
        const char* target = triples[3 * s];
        const char* slash = strrchr(target, '/');
        int dirlen = slash ? (int)(slash - target) : 0;
        snprintf(tmp[s], PATH_MAX, "%.*s/.swap-%d.so", dirlen, target, s);
    }
    unsigned long renames = 0;
    struct timespec pause
        = { .tv_sec = (time_t)pause_s, .tv_nsec = (long)((pause_s - (double)(time_t)pause_s) * 1e9) };
    while (!stop) {
        for (int s = 0; s < slots && !stop; s++) {
            const char* source = triples[3 * s + 1 + renames % 2];
            unlink(tmp[s]);
            if (link(source, tmp[s]) < 0)
                die(source);
            if (rename(tmp[s], triples[3 * s]) < 0)
                die(triples[3 * s]);
        }
        renames++;
        /* Now and then a short pause, so that a small machine keeps a core for the service. */
        if (renames % 64 == 0)
            nanosleep(&pause, NULL);
    }
    printf("%lu\n", renames * (unsigned long)slots);
    return 0;
}

static int stranger_host(const char* program)
{
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
        die("socketpair");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        pid_t grandchild = fork();
        if (grandchild < 0)
            die("fork");
        if (grandchild == 0) {
            if (dup2(pair[1], 3) < 0)
                die("dup2");
            execl(program, program, "stranger", (char*)NULL);
            die(program);
        }
        int status;
        waitpid(grandchild, &status, 0);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int connect_to(const char* path)
{
    struct sockaddr_un addr = unix_address(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0)
        die(path);
    return fd;
}

static int garbage(const char* path)
{
    static char random_bytes[65536], zeros_ff[72];
    if (getrandom(random_bytes, sizeof(random_bytes), 0) != (ssize_t)sizeof(random_bytes))
        die("getrandom");
    memset(zeros_ff + 8, 0xff, 64);
    struct {
        const char* data;
        size_t size;
    } payloads[] = { { random_bytes, sizeof(random_bytes) }, { zeros_ff, sizeof(zeros_ff) }, { "", 0 } };
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        int fd = connect_to(path);
        for (size_t sent = 0; sent < payloads[i].size;) {
            ssize_t n = send(fd, payloads[i].data + sent, payloads[i].size - sent, MSG_NOSIGNAL);
            if (n <= 0)
                break; /* the service may hang up first: that is its right */
            sent += (size_t)n;
        }
        close(fd);
    }
    return 0;
}

static int hold(const char* path, int count, int ms)
{
    int* fds = calloc((size_t)count, sizeof(int));
    for (int i = 0; i < count; i++)
        fds[i] = connect_to(path);
    struct timespec pause = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    nanosleep(&pause, NULL);
    for (int i = 0; i < count; i++)
        close(fds[i]);
    return 0;
}

enum member_kind { REGULAR, SYMLINK, HARDLINK, CHARDEV };

static void write_tar(const char* dir, const char* name, int count, const char* const* names,
    const enum member_kind* kinds, const char* const* targets)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.tar", dir, name);
    struct archive* a = archive_write_new();
    archive_write_set_format_ustar(a);
    if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, archive_error_string(a));
        exit(2);
    }
    for (int i = 0; i < count; i++) {
        struct archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_perm(e, 0644);
        switch (kinds[i]) {
        case REGULAR:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, 1);
            break;
        case SYMLINK:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, targets[i]);
            break;
        case HARDLINK:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, targets[i]);
            break;
        case CHARDEV:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdevmajor(e, 1);
            archive_entry_set_rdevminor(e, 3);
            break;
        }
        if (archive_write_header(a, e) != ARCHIVE_OK) {
            fprintf(stderr, "%s: %s: %s: %s\n", prog, path, names[i], archive_error_string(a));
            exit(2);
        }
        if (kinds[i] == REGULAR)
            archive_write_data(a, "x", 1);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static int hostile_tars(const char* dir)
{
    const enum member_kind two_files[] = { REGULAR, REGULAR }, file[] = { REGULAR }, symlink_[] = { SYMLINK },
                           hardlink[] = { HARDLINK }, device[] = { CHARDEV };
    write_tar(dir, "dotdot", 2, (const char*[]) { "etc/os-release", "../escape" }, two_files, NULL);
    write_tar(dir, "absolute", 1, (const char*[]) { "/etc/evil" }, file, NULL);
    write_tar(dir, "outward", 1, (const char*[]) { "etc/up" }, symlink_, (const char*[]) { "../../../etc" });
    write_tar(
        dir, "hardlink", 1, (const char*[]) { "etc/shadow" }, hardlink, (const char*[]) { "/etc/shadow" });
    write_tar(dir, "device", 1, (const char*[]) { "dev/mem" }, device, NULL);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: %s "
        "ready-wait|wait-lines|wait-grep|wait-exit|swap|stranger-host|garbage|hold|journal|hostile-tars "
        "ARGS "
        "(see the source's first comment)\n",
        prog);
    exit(2);
}

int main(int argc, char** argv)
{
    if (argc < 2)
        usage();
    const char* cmd = argv[1];
    if (strcmp(cmd, "ready-wait") == 0 && argc == 4)
        return ready_wait(argv[2], atof(argv[3]));
    if (strcmp(cmd, "wait-lines") == 0 && argc == 5)
        return wait_count(argv[2], atol(argv[3]), NULL, atof(argv[4]));
    if (strcmp(cmd, "wait-grep") == 0 && argc == 6)
        return wait_grep(argv[2], atol(argv[3]), argv[4], atof(argv[5]));
    if (strcmp(cmd, "wait-exit") == 0 && argc >= 4 && strcmp(argv[2], "--reaped") == 0)
        return wait_exit(1, atof(argv[3]), argc - 4, argv + 4);
    if (strcmp(cmd, "wait-exit") == 0 && argc >= 3)
        return wait_exit(0, atof(argv[2]), argc - 3, argv + 3);
    if (strcmp(cmd, "swap") == 0 && argc >= 6 && (argc - 3) % 3 == 0)
        return swap(atof(argv[2]), argc - 3, argv + 3);
    if (strcmp(cmd, "stranger-host") == 0 && argc == 3)
        return stranger_host(argv[2]);
    if (strcmp(cmd, "garbage") == 0 && argc == 3)
        return garbage(argv[2]);
    if (strcmp(cmd, "journal") == 0 && argc == 5)
        return journal(argv[2], argv[3], atof(argv[4]));
    if (strcmp(cmd, "hold") == 0 && argc == 5)
        return hold(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (strcmp(cmd, "hostile-tars") == 0 && argc == 3)
        return hostile_tars(argv[2]);
    usage();
}
