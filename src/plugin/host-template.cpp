// The host template's side: read a request, fork a host into its cgroup, answer with its pidfd.
#include "plugin/host-template.h"

#include "base/log.h"
#include "ipc/packet.h"
#include "plugin/containment.h"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <linux/sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bh::host {

namespace {

    constexpr int service_fd = 3;

    // Where the forked host's command line goes: the template's argv strings (the kernel shows
    // /proc/PID/cmdline from there). Set before any fork, read-only after.
    kj::ArrayPtr<char> g_arguments;

    // "bulkhead-pluginhost NAME", as an exec'd host's command line, so ps names the plugin and
    // nothing mistakes a host for the template. In place, in the template's argv strings: moving
    // them (PR_SET_MM) would need CAP_SYS_RESOURCE, which root may not have in a container.
    void rename_as_host(const std::string& name)
    {
        std::string line
            = std::string("bulkhead-pluginhost") + '\0' + name.substr(0, max_template_name) + '\0';
        if (line.size() <= g_arguments.size()) {
            std::memcpy(g_arguments.begin(), line.data(), line.size());
            std::memset(g_arguments.begin() + line.size(), 0, g_arguments.size() - line.size());
        }
        prctl(PR_SET_NAME, "bulkhead-plugin"); // what the exec'd binary's name gives
    }

    // In the forked host: the request's fds become 0 to 6, nothing else stays open.
    [[noreturn]] void become_host(
        HostMain host_main, const std::string& name, bool core_dumps, const int* fds)
    {
        static constexpr int targets[host_template_fds] = { 0, 1, 3, 4, 5, 6 };
        // First above every source and target, so no dup2 below overwrites a source; as low as
        // that allows: the service may already have lowered our RLIMIT_NOFILE (max_open_files).
        int above = 7;
        for (unsigned i = 0; i < host_template_fds; ++i)
            above = std::max(above, fds[i] + 1);
        int moved[host_template_fds];
        for (unsigned i = 0; i < host_template_fds; ++i)
            if ((moved[i] = fcntl(fds[i], F_DUPFD, above)) < 0)
                _exit(127);
        for (unsigned i = 0; i < host_template_fds; ++i)
            if (dup2(moved[i], targets[i]) < 0)
                _exit(127);
        if (dup2(1, 2) < 0 || syscall(SYS_close_range, 7U, ~0U, 0U) < 0)
            _exit(127);
        rename_as_host(name);
        signal(SIGPIPE, SIG_DFL); // as after an exec; host_main sets what it wants
        host_main(name, core_dumps);
        _exit(0); // host_main never returns
    }

    // One request: the new host's pid and pidfd, or a negative errno.
    int fork_host(HostMain host_main, ipc::Packet& request, const char* bytes, int& pidfd)
    {
        if (request.size < 1 || request.size > 1 + max_template_name
            || request.fds.size() != host_template_fds || (bytes[0] != 'C' && bytes[0] != '-'))
            return -EINVAL;
        bool core_dumps = bytes[0] == 'C';
        std::string name(bytes + 1, request.size - 1);
        int fds[host_template_fds];
        for (unsigned i = 0; i < host_template_fds; ++i)
            fds[i] = request.fds[i].get();
        clone_args args {};
        args.flags = CLONE_PARENT | CLONE_PIDFD | CLONE_INTO_CGROUP;
        args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
        args.cgroup = static_cast<uint64_t>(fds[3]);
        long pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid < 0)
            return -errno;
        if (pid == 0)
            become_host(host_main, name, core_dumps, fds);
        return static_cast<int>(pid);
    }

} // namespace

std::vector<std::string> host_template_argv()
{
    // The third argument is room for the host's command line: spaces, which ps shows as nothing.
    return { "bulkhead-pluginhost", "--template", std::string(max_template_name, ' ') };
}

void run_host_template(HostMain host_main, kj::ArrayPtr<char> arguments)
{
    g_arguments = arguments;
    auto service = adopt_service_socket(service_fd, SOCK_SEQPACKET, "template socket");
    if (!service) {
        log_error("bulkhead-pluginhost --template: " + service.error().message);
        _exit(2);
    }
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent || parent == 1)
        _exit(2);
    prctl(PR_SET_NAME, "bh-host-template");
    // Not dumpable (no ptrace by others); every host sets what its plugin's configuration asks.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (syscall(SYS_close_range, 4U, ~0U, 0U) < 0)
        _exit(2);
    signal(SIGPIPE, SIG_IGN); // an answer to a service that went away is not a reason to die
    for (;;) {
        char bytes[1 + max_template_name];
        auto request = ipc::receive_packet(
            service_fd, kj::arrayPtr(bytes, sizeof(bytes)).asBytes(), host_template_fds);
        if (request && request->size == 0)
            _exit(0); // the service is done with us
        if (!request && request.error().code != -EMSGSIZE)
            _exit(1); // the socket broke: the service will spawn hosts itself
        int pidfd = -1;
        int32_t answer = request ? fork_host(host_main, request.value(), bytes, pidfd) : request.error().code;
        Fd owned(pidfd);
        int passed = owned.get();
        auto fds = owned ? kj::arrayPtr(&passed, 1) : kj::ArrayPtr<const int>();
        if (!ipc::send_packet(
                service_fd, kj::arrayPtr(reinterpret_cast<const kj::byte*>(&answer), sizeof(answer)), fds))
            _exit(1);
    }
}

} // namespace bh::host
