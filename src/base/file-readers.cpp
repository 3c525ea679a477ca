#include "base/file-readers.h"
#include "base/fd.h"

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace bh {

namespace {

    bool is_number(const char* name)
    {
        if (!*name)
            return false;
        for (; *name; ++name)
            if (*name < '0' || *name > '9')
                return false;
        return true;
    }

    // The "pos:" field of /proc/PID/fdinfo/FD.
    std::optional<uint64_t> position(int proc_pid, const char* fd)
    {
        Fd info(::openat(proc_pid, (std::string("fdinfo/") + fd).c_str(), O_RDONLY | O_CLOEXEC));
        char text[256];
        ssize_t n = info ? ::read(info.get(), text, sizeof(text) - 1) : -1;
        if (n <= 0)
            return std::nullopt;
        text[n] = '\0';
        if (std::strncmp(text, "pos:", 4) != 0)
            return std::nullopt;
        return std::strtoull(text + 4, nullptr, 10);
    }

} // namespace

std::optional<uint64_t> furthest_reader_offset(dev_t dev, ino_t ino, uid_t owner, unsigned budget_ms)
{
    timespec start;
    ::clock_gettime(CLOCK_MONOTONIC, &start);
    auto spent_ms = [&start]() {
        timespec now;
        ::clock_gettime(CLOCK_MONOTONIC, &now);
        return (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    };
    std::optional<uint64_t> furthest;
    DIR* proc = ::opendir("/proc");
    if (!proc)
        return furthest;
    const pid_t self = ::getpid();
    while (dirent* process = ::readdir(proc)) {
        if (spent_ms() > budget_ms)
            break;
        if (!is_number(process->d_name) || std::atoi(process->d_name) == self)
            continue;
        Fd dir(::openat(::dirfd(proc), process->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        struct stat st;
        if (!dir || ::fstat(dir.get(), &st) < 0 || st.st_uid != owner)
            continue;
        int fds_fd = ::openat(dir.get(), "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR* fds = fds_fd < 0 ? nullptr : ::fdopendir(fds_fd);
        if (!fds) {
            if (fds_fd >= 0)
                ::close(fds_fd);
            continue;
        }
        while (dirent* fd = ::readdir(fds)) {
            struct stat target;
            if (!is_number(fd->d_name) || ::fstatat(::dirfd(fds), fd->d_name, &target, 0) < 0
                || target.st_dev != dev || target.st_ino != ino)
                continue;
            if (auto pos = position(dir.get(), fd->d_name); pos && (!furthest || *pos > *furthest))
                furthest = pos;
        }
        ::closedir(fds);
    }
    ::closedir(proc);
    return furthest;
}

} // namespace bh
