// Containment of bulkhead-pluginhost and its descendants.
#include "plugin/containment.h"

#include <algorithm>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace bh::host {

Result<Fd> adopt_service_socket(int fd, int type, const char* what)
{
    std::string where = std::string(what) + " on fd " + std::to_string(fd);
    struct stat st { };
    int actual = 0;
    socklen_t size = sizeof(actual);
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) || getsockopt(fd, SOL_SOCKET, SO_TYPE, &actual, &size) < 0
        || actual != type)
        return Error { -EBADF, "no " + where + "; only bulkheadd starts plugin hosts" };
    ucred peer {};
    socklen_t length = sizeof(peer);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) < 0)
        return Error::from_errno(errno, "cannot read the credentials of the " + where);
    if (peer.pid != getppid())
        return Error { -EPERM,
            "the " + where + " does not lead to our parent (peer pid " + std::to_string(peer.pid)
                + "); only bulkheadd starts plugin hosts" };
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return Error::from_errno(errno, "cannot mark the " + where + " close-on-exec");
    return Fd(fd);
}

namespace {

    bool write_file_at(int dir, const char* name, const char* text)
    {
        int fd = openat(dir, name, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return false;
        bool ok = write(fd, text, strlen(text)) == static_cast<ssize_t>(strlen(text));
        close(fd);
        return ok;
    }

    // Closes every fd but `a` and `b` (a < b): at most three close_range calls, where a loop of
    // close() up to 1024 cost a guardian about 1,000 system calls, nearly half of a host's start.
    void close_all_but(int a, int b)
    {
        if (a > 0)
            syscall(SYS_close_range, 0U, static_cast<unsigned>(a) - 1, 0U);
        if (b > a + 1)
            syscall(SYS_close_range, static_cast<unsigned>(a) + 1, static_cast<unsigned>(b) - 1, 0U);
        syscall(SYS_close_range, static_cast<unsigned>(b) + 1, ~0U, 0U);
    }

    // Waits for the host to die, then kills whatever is left in its cgroup (itself included).
    // Runs in a forked copy of a single-threaded process, so it may use anything.
    [[noreturn]] void guard(pid_t host, int cgroup)
    {
        prctl(PR_SET_NAME, "bh-plugin-guard");
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, nullptr);
        if (prctl(PR_SET_PDEATHSIG, SIGUSR1) == 0 && getppid() == host) {
            close_all_but(std::min(STDERR_FILENO, cgroup), std::max(STDERR_FILENO, cgroup));
            int signal = 0;
            while (sigwait(&set, &signal) != 0 || getppid() == host) { }
        }
        write_file_at(cgroup, "cgroup.kill", "1");
        _exit(0);
    }

    // True when we already are in `cgroup` (the service creates hosts inside it): joining again
    // would cost a cgroup-wide RCU synchronization for nothing. Compares our cgroup v2 path
    // with the end of the directory's path.
    bool already_in(int cgroup)
    {
        char link[PATH_MAX];
        ssize_t n = readlink(("/proc/self/fd/" + std::to_string(cgroup)).c_str(), link, sizeof(link) - 1);
        if (n <= 0)
            return false;
        std::string dir(link, static_cast<size_t>(n));
        FILE* file = fopen("/proc/self/cgroup", "re");
        if (!file)
            return false;
        char line[PATH_MAX];
        bool found = false;
        while (!found && fgets(line, sizeof(line), file)) {
            std::string own(line);
            if (own.rfind("0::/", 0) != 0 || own.size() < 6) // not v2, or the root
                continue;
            own = own.substr(3, own.find_last_not_of('\n') - 2);
            found = dir.size() > own.size() && dir.compare(dir.size() - own.size(), own.size(), own) == 0;
        }
        fclose(file);
        return found;
    }

} // namespace

Status contain_descendants(Fd cgroup)
{
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        return Error::from_errno(errno, "cannot set the parent-death signal");
    if (getppid() != parent || parent == 1)
        return Error { -ESRCH, "the service exited while the plugin host started" };
    if (!cgroup)
        return Error { -EBADF, "no cgroup on fd 4; only bulkheadd starts plugin hosts" };
    if (!already_in(cgroup.get()) && !write_file_at(cgroup.get(), "cgroup.procs", "0"))
        return Error::from_errno(errno, "cannot join the plugin's cgroup");
    pid_t host = getpid();
    pid_t guardian = fork(); // we are single-threaded here: nothing of ours can be mid-lock
    if (guardian < 0)
        return Error::from_errno(errno, "cannot start the plugin's guardian");
    if (guardian == 0)
        guard(host, cgroup.get());
    return {};
}

Status harden(bool core_dumps, int highest_kept)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return Error::from_errno(errno, "cannot set no_new_privs");
    // Set either way: a host forked from the template inherits its non-dumpable state.
    if (prctl(PR_SET_DUMPABLE, core_dumps ? 1 : 0, 0, 0, 0) < 0)
        return Error::from_errno(errno, "cannot set whether the host is dumpable");
    rlimit none { 0, 0 };
    if (!core_dumps && setrlimit(RLIMIT_CORE, &none) < 0)
        return Error::from_errno(errno, "cannot disable core dumps");
    if (syscall(SYS_close_range, static_cast<unsigned>(highest_kept) + 1, ~0U, 0U) < 0)
        return Error::from_errno(errno, "cannot close inherited fds");
    return {};
}

void scrub_loader_environment()
{
    std::vector<std::string> names;
    for (char** entry = environ; *entry; ++entry)
        if (std::strncmp(*entry, "LD_", 3) == 0)
            names.emplace_back(*entry, std::strcspn(*entry, "="));
    for (const auto& name : names)
        unsetenv(name.c_str());
}

} // namespace bh::host
