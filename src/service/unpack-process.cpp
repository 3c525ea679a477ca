// unpack_rootfs: runs bulkhead-unpack for one registration and reads its one-line result.
#include "service/unpack-process.h"

#include "base/child-process.h"
#include "base/spawn.h"
#include "ipc/process-watch.h"

#include <charconv>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr const char* import_failed = "cannot register from tar: ";
    constexpr size_t max_result = 4096;

    // A tar comes as a stream of bytes the client could read itself: a directory would be a way
    // out of the unpacking process's chroot, an O_PATH fd something the client may not read.
    Status check_archive_fd(int fd)
    {
        struct stat st;
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fstat(fd, &st) != 0)
            return Error::from_errno(errno, std::string(import_failed) + "cannot inspect the archive's fd");
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
            return Error { -EBADF, std::string(import_failed) + "the archive's fd is not open for reading" };
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
            return Error { -EINVAL,
                std::string(import_failed) + "the archive must be a regular file, a pipe or a socket" };
        return {};
    }

    Result<Fd> create_target(const UnpackJob& job)
    {
        if (::mkdir(job.target.c_str(), 0755) != 0)
            return Error::from_errno(errno, std::string(import_failed) + "cannot create " + job.target);
        Fd dir(::open(job.target.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir)
            return Error::from_errno(errno, std::string(import_failed) + "cannot open " + job.target);
        // mkdir() applies the umask, and the mode is part of what a distribution gets.
        if (fchmod(dir.get(), 0755) != 0 || (job.owner != 0 && fchown(dir.get(), job.owner, job.group) != 0))
            return Error::from_errno(errno, std::string(import_failed) + "cannot prepare " + job.target);
        return dir;
    }

    // What bulkhead-unpack wrote to its result pipe, at most max_result bytes. It has exited.
    std::string read_result(int fd)
    {
        std::string text(max_result, '\0');
        size_t used = 0;
        while (used < text.size()) {
            ssize_t n = ::read(fd, text.data() + used, text.size() - used);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            used += static_cast<size_t>(n);
        }
        text.resize(used);
        return text;
    }

    // An error message from the unpacking process, without control characters (which could reach
    // the user's terminal).
    std::string printable(std::string text)
    {
        for (char& c : text) {
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
                c = '?';
        }
        return text;
    }

    std::string describe(int wait_status)
    {
        if (WIFSIGNALED(wait_status))
            return "killed by signal " + std::to_string(WTERMSIG(wait_status));
        return "exit status " + std::to_string(WEXITSTATUS(wait_status));
    }

    // The process parsed hostile input: its report is read like any other untrusted message.
    Result<uint64_t> parse_result(const std::string& text, int wait_status, const std::string& failed)
    {
        bool exited_ok = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
        size_t newline = text.find('\n');
        if (exited_ok && text.starts_with("ok ") && newline == text.size() - 1) {
            uint64_t skipped = 0;
            auto [end, err] = std::from_chars(text.data() + 3, text.data() + newline, skipped);
            if (err == std::errc() && end == text.data() + newline)
                return skipped;
        }
        if (!exited_ok && text.starts_with("error ") && newline != std::string::npos) {
            int code = 0;
            std::string number = text.substr(6, newline - 6);
            bool parsed = !number.empty() && number.size() <= 5
                && number.find_first_not_of("-0123456789") == std::string::npos;
            if (parsed)
                code = std::stoi(number);
            if (code < 0 && code > -4096)
                return Error { code, failed + printable(text.substr(newline + 1)) };
        }
        return Error { -EIO,
            failed + "its confined process (bulkhead-unpack) ended without a result (" + describe(wait_status)
                + ")" };
    }

    // Who a confined bulkhead-unpack runs as: see unpack_rootfs.
    struct Ids {
        uid_t owner;
        gid_t group;
        std::optional<SubordinateIds> subordinate;
    };

    // Starts bulkhead-unpack with `argv`, `tree` as fd 3, `extra` (if any) as fd 4, stdin `input`
    // (or /dev/null), and resolves with what its result line says. `failed` prefixes errors.
    kj::Promise<Result<uint64_t>> run_confined(kj::UnixEventPort& port, int exe_fd,
        std::vector<std::string> argv, const Ids& ids, int tree, int input, int extra,
        const std::string& failed)
    {
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
            return Result<uint64_t>(Error::from_errno(errno, failed + "cannot create a pipe"));
        Fd result_read(pipe_fds[0]), result_write(pipe_fds[1]);
        Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!null)
            return Result<uint64_t>(Error::from_errno(errno, failed + "cannot open /dev/null"));
        SpawnPlan plan;
        plan.path = "bulkhead-unpack";
        plan.exec_fd = exe_fd;
        plan.argv = std::move(argv);
        plan.fds = { { input >= 0 ? input : null.get(), 0 }, { result_write.get(), 1 }, { null.get(), 2 },
            { tree, 3 } };
        if (extra >= 0)
            plan.fds.push_back({ extra, 4 });
        plan.namespaces = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
        if (ids.owner != 0) {
            plan.namespaces |= CLONE_NEWUSER;
            plan.map_root_to = Credentials { ids.owner, ids.group };
            plan.subordinate = ids.subordinate;
        }
        auto spawned = spawn_process(plan);
        if (!spawned)
            return Result<uint64_t>(Error { spawned.error().code, failed + spawned.error().message });
        result_write = Fd();
        auto child = kj::heap<ChildProcess>(std::move(spawned.value()));
        auto exited = ipc::when_exited(port, child->pidfd());
        return exited
            .then([child = child.get(), result_read = std::move(result_read),
                      failed]() mutable -> Result<uint64_t> {
                int wait_status = child->wait();
                return parse_result(read_result(result_read.get()), wait_status, failed);
            })
            .attach(kj::mv(child));
    }

} // namespace

kj::Promise<Result<uint64_t>> unpack_rootfs(kj::UnixEventPort& port, const UnpackJob& job)
{
    if (Status usable = check_archive_fd(job.archive_fd); !usable)
        return Result<uint64_t>(usable.take_error());
    auto target = create_target(job);
    if (!target)
        return Result<uint64_t>(target.take_error());
    std::vector<std::string> argv = { "bulkhead-unpack" };
    if (job.owner == 0)
        argv.push_back("--keep-owners=" + std::to_string(UINT32_MAX) + ":" + std::to_string(UINT32_MAX));
    else if (job.subordinate)
        argv.push_back("--keep-owners=" + std::to_string(job.subordinate->uid_count) + ":"
            + std::to_string(job.subordinate->gid_count));
    for (uint64_t value : { job.limits.max_bytes, job.limits.max_entries, job.limits.keep_free_bytes })
        argv.push_back(std::to_string(value));
    return run_confined(port, job.unpack_exe_fd, std::move(argv),
        Ids { job.owner, job.group, job.subordinate }, target->get(), job.archive_fd, -1, import_failed);
}

kj::Promise<Status> pack_rootfs(kj::UnixEventPort& port, const PackJob& job)
{
    std::string failed = "cannot export '" + job.name + "': ";
    Fd tree(::open(job.rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!tree)
        return Status(Error::from_errno(errno, failed + "cannot open its root filesystem"));
    int flags = fcntl(job.out_fd, F_GETFL);
    if (flags < 0 || (flags & O_PATH) || (flags & O_ACCMODE) == O_RDONLY)
        return Status(Error { -EBADF, failed + "the output's fd is not open for writing" });
    std::vector<std::string> argv
        = { "bulkhead-unpack", std::string("--pack=") + compression_name(job.compression) };
    return run_confined(port, job.unpack_exe_fd, std::move(argv),
        Ids { job.owner, job.group, job.subordinate }, tree.get(), -1, job.out_fd, failed)
        .then([](Result<uint64_t> packed) -> Status {
            if (!packed)
                return packed.take_error();
            return {};
        });
}

} // namespace bh::service
