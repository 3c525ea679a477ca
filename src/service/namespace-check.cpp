// Checking what an agent says about a process against what the service can observe itself.
#include "service/namespace-check.h"

#include <fcntl.h>
#include <fstream>
#include <linux/nsfs.h>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace bh::service {

namespace {

    // The "Pid:" and "NSpid:" lines of a pidfd's fdinfo: its pid in our namespace (-1 once it
    // ended) and in each namespace from ours down to its own.
    struct PidfdInfo {
        pid_t pid = 0;
        std::vector<pid_t> ns_pids;
    };

    Result<PidfdInfo> read_pidfd_info(int pidfd)
    {
        std::ifstream in("/proc/self/fdinfo/" + std::to_string(pidfd));
        if (!in)
            return Error::from_errno(errno, "cannot read the fdinfo of a pidfd");
        PidfdInfo info;
        bool has_pid = false;
        for (std::string line; std::getline(in, line);) {
            std::istringstream fields(line);
            std::string key;
            fields >> key;
            if (key == "Pid:") {
                has_pid = static_cast<bool>(fields >> info.pid);
            } else if (key == "NSpid:") {
                for (pid_t pid; fields >> pid;)
                    info.ns_pids.push_back(pid);
            }
        }
        if (!has_pid)
            return Error { -EBADF, "the fd is not a pidfd" };
        if (info.pid <= 0 || info.ns_pids.empty())
            return Error { -ESRCH, "the process ended before it could be checked" };
        return info;
    }

    bool same_file(int a, int b)
    {
        struct stat sa, sb;
        return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    }

    Result<Fd> open_namespace_of(pid_t pid)
    {
        std::string path = "/proc/" + std::to_string(pid) + "/ns/pid";
        Fd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!ns)
            return Error::from_errno(errno, "cannot open " + path);
        return ns;
    }

    // The pidfd still names a live process, so the pid read from it was not reused meanwhile.
    Status still_alive(int pidfd)
    {
        if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) < 0)
            return Error::from_errno(errno, "the process ended before it could be checked");
        return {};
    }

    struct ProcessNamespace {
        PidfdInfo info;
        Fd ns;
    };

    // The PID namespace of the process behind `pidfd`, opened through /proc by its pid, then
    // checked to still be that process's (the pidfd still names a live process).
    Result<ProcessNamespace> pid_namespace_of(int pidfd)
    {
        auto info = read_pidfd_info(pidfd);
        if (!info)
            return info.take_error();
        auto ns = open_namespace_of(info->pid);
        if (!ns)
            return ns.take_error();
        BH_TRY(still_alive(pidfd));
        return ProcessNamespace { std::move(info.value()), std::move(ns.value()) };
    }

} // namespace

Result<Fd> open_pid_namespace(int pidfd)
{
    auto process = pid_namespace_of(pidfd);
    if (!process)
        return process.take_error();
    return std::move(process->ns);
}

Result<VerifiedInit> verify_distribution_init(int pidfd, int parent_pidns)
{
    auto process = pid_namespace_of(pidfd);
    if (!process)
        return process.take_error();
    const PidfdInfo& info = process->info;
    Fd& ns = process->ns;
    Fd parent(::ioctl(ns.get(), NS_GET_PARENT));
    // EPERM: its namespace is the service's own (no parent we may see); anything else but the
    // VM's namespace as its parent is a process outside the VM, or inside it but not an init.
    if (!parent || !same_file(parent.get(), parent_pidns) || info.ns_pids.back() != 1
        || info.ns_pids.size() < 2)
        return Error { -EPERM,
            "process " + std::to_string(info.pid) + " is not the init of a PID namespace of this VM" };
    struct stat st;
    if (fstat(ns.get(), &st) < 0)
        return Error::from_errno(errno, "cannot inspect a PID namespace");
    return VerifiedInit { info.pid, static_cast<uint32_t>(info.ns_pids[info.ns_pids.size() - 2]),
        static_cast<uint64_t>(st.st_ino) };
}

} // namespace bh::service
