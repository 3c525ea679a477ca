// The VM/distribution agent: spawning programs, attaching mounts, starting distribution inits.
#include "vm/agent.h"

#include "base/spawn.h"
#include "ipc/fd-cap.h"
#include "ipc/process-watch.h"
#include "vm/distro-conf.h"
#include "vm/mounts.h"

#include <array>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sched.h>
#include <sstream>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh::vm {

namespace {

    constexpr const char* default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    struct User {
        uid_t uid = 0;
        gid_t gid = 0;
        std::string name = "root";
        std::string home = "/root";
        std::string shell; // empty: none given
    };

    // Finds `wanted` (a name or a numeric uid) in this root's /etc/passwd.
    // Whether `id` has a host id in this process's user namespace (`which`: "uid_map" or "gid_map").
    bool id_is_mapped(const char* which, uint32_t id)
    {
        std::ifstream map(std::string("/proc/self/") + which);
        uint64_t inside = 0, outside = 0, count = 0;
        while (map >> inside >> outside >> count) {
            if (id >= inside && id - inside < count)
                return true;
        }
        return false;
    }

    // A user of the distribution's /etc/passwd the VM cannot become says why, not EINVAL from setuid.
    Status check_mapped(const User& user)
    {
        if (id_is_mapped("uid_map", user.uid) && id_is_mapped("gid_map", user.gid))
            return {};
        return Error { -EINVAL,
            "cannot run as '" + user.name + "' (uid " + std::to_string(user.uid) + ", gid "
                + std::to_string(user.gid)
                + "): this VM's user namespace maps only root; a range for the VM's user in the host's "
                  "/etc/subuid and /etc/subgid maps more" };
    }

    Result<User> lookup_user(const std::string& wanted)
    {
        std::ifstream passwd("/etc/passwd");
        std::string line;
        while (std::getline(passwd, line)) {
            std::vector<std::string> fields;
            std::stringstream stream(line);
            for (std::string field; std::getline(stream, field, ':');)
                fields.push_back(field);
            if (fields.size() < 6 || (fields[0] != wanted && fields[2] != wanted))
                continue;
            char* end = nullptr;
            unsigned long uid = std::strtoul(fields[2].c_str(), &end, 10);
            unsigned long gid = std::strtoul(fields[3].c_str(), nullptr, 10);
            return User { static_cast<uid_t>(uid), static_cast<gid_t>(gid), fields[0], fields[5],
                fields.size() > 6 ? fields[6] : "" };
        }
        return Error { -ENOENT, "no user '" + wanted + "' in the distribution's /etc/passwd" };
    }

    // Resolves a program name without a slash through PATH, as a shell would.
    Result<std::string> resolve_program(const std::string& path)
    {
        if (path.find('/') != std::string::npos)
            return path;
        std::stringstream dirs(default_path);
        for (std::string dir; std::getline(dirs, dir, ':');) {
            std::string candidate = dir + "/" + path;
            if (::access(candidate.c_str(), X_OK) == 0)
                return candidate;
        }
        return Error { -ENOENT, "cannot execute '" + path + "': not found in " + default_path };
    }

    std::vector<std::string> to_strings(capnp::List<capnp::Text>::Reader list)
    {
        std::vector<std::string> out;
        for (auto item : list)
            out.emplace_back(item.cStr());
        return out;
    }

    std::vector<std::string> environment_for(const User& user, capnp::List<capnp::Text>::Reader extra)
    {
        std::vector<std::string> env = { std::string("PATH=") + default_path, "HOME=" + user.home,
            "USER=" + user.name, "LOGNAME=" + user.name };
        for (auto entry : extra) {
            std::string text = entry.cStr();
            if (text.find('=') != std::string::npos && text.find('=') > 0)
                env.push_back(text);
        }
        return env;
    }

    // A process this agent started; dropping the capability kills it if it still runs.
    void fail_outcome(proto::Outcome::Builder outcome, const Error& error);

    class Process final : public proto::Process::Server {
    public:
        Process(Reaper& reaper, pid_t pid, Fd pidfd)
            : m_reaper(reaper)
            , m_pid(pid)
            , m_pidfd(std::move(pidfd))
        {
        }
        ~Process()
        {
            if (!m_reaper.has_exited(m_pid))
                syscall(SYS_pidfd_send_signal, m_pidfd.get(), SIGKILL, nullptr, 0);
            m_reaper.forget(m_pid);
        }

    protected:
        kj::Promise<void> wait(WaitContext context) override
        {
            // A wait in progress holds this Process: unless the service can cancel it, dropping
            // the capability (a `run` whose client left) would not end the program.
            context.allowCancellation();
            return m_reaper.wait_for(m_pid).then(
                [context](int status) mutable { context.getResults().setWaitStatus(status); });
        }

        kj::Promise<void> signal(SignalContext context) override
        {
            int signal = context.getParams().getSignal();
            if (signal <= 0 || signal > SIGRTMAX)
                return fail_outcome(context.getResults().initOutcome(),
                           { -EINVAL, "no signal " + std::to_string(signal) }),
                       kj::READY_NOW;
            if (!m_reaper.has_exited(m_pid)
                && syscall(SYS_pidfd_send_signal, m_pidfd.get(), signal, nullptr, 0) < 0 && errno != ESRCH)
                fail_outcome(context.getResults().initOutcome(),
                    Error::from_errno(errno, "cannot signal the program"));
            return kj::READY_NOW;
        }

    private:
        Reaper& m_reaper;
        pid_t m_pid;
        Fd m_pidfd;
    };

    void fail_outcome(proto::Outcome::Builder outcome, const Error& error)
    {
        ipc::set_outcome(outcome, error, "Bulkhead/Vm/Agent");
    }

} // namespace

kj::Promise<void> Reaper::run()
{
    return m_port.onSignal(SIGCHLD).then([this](siginfo_t) {
        reap_all();
        return run();
    });
}

void Reaper::reap_all()
{
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        auto it = m_watched.find(pid);
        if (it == m_watched.end())
            continue;
        it->second.status = status;
        if (it->second.fulfiller)
            it->second.fulfiller->fulfill(kj::cp(status));
    }
}

kj::Promise<int> Reaper::wait_for(pid_t pid)
{
    auto& watched = m_watched.at(pid);
    if (watched.status)
        return *watched.status;
    auto paf = kj::newPromiseAndFulfiller<int>();
    watched.fulfiller = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
}

bool Reaper::has_exited(pid_t pid) const
{
    auto it = m_watched.find(pid);
    return it == m_watched.end() || it->second.status.has_value();
}

Agent::Agent(AgentRole role, Reaper& reaper, Fd root_tree)
    : m_role(role)
    , m_reaper(reaper)
    , m_root_tree(std::move(root_tree))
{
}

kj::Promise<void> Agent::version(VersionContext context)
{
    context.getResults().setMajor(proto::AGENT_MAJOR);
    return kj::READY_NOW;
}

Status Agent::setup_vm(proto::VmConfig::Reader config)
{
    BH_TRY(
        build_vm_root({ config.getHostname().cStr(), config.getHostNetwork(), config.getStaging().cStr() }));
    std::string custom_init = config.getCustomInit().cStr();
    if (custom_init.empty())
        return {};
    // The custom init must be PID 1, so this agent steps aside into a child and serves from there.
    if (::access(custom_init.c_str(), X_OK) < 0)
        return Error::from_errno(errno, "cannot use '" + custom_init + "' as the VM's init");
    pid_t pid = ::fork();
    if (pid < 0)
        return Error::from_errno(errno, "cannot start the VM's custom init");
    if (pid > 0) {
        // The init gets none of our fds: holding the service's socket (fd 3, placed without
        // CLOEXEC) would hide the agent's death from the service, whose calls would then hang.
        ::close_range(3, ~0U, 0);
        char* argv[] = { const_cast<char*>(custom_init.c_str()), nullptr };
        char* envp[] = { const_cast<char*>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nullptr };
        ::execve(custom_init.c_str(), argv, envp);
        ::_exit(127);
    }
    return {};
}

kj::Promise<void> Agent::setup(SetupContext context)
{
    if (m_set_up) {
        fail_outcome(context.getResults().initOutcome(), { -EALREADY, "the agent is already set up" });
        return kj::READY_NOW;
    }
    m_set_up = true;
    Status status = m_role == AgentRole::Vm
        ? setup_vm(context.getParams().getConfig())
        : build_distribution_root(std::move(m_root_tree), context.getParams().getConfig().getNatDns().cStr());
    if (!status)
        fail_outcome(context.getResults().initOutcome(), status.error());
    else if (m_role == AgentRole::Distribution)
        run_boot_command();
    return kj::READY_NOW;
}

// The distribution's [boot] command, started once its root is built: `sh -c COMMAND` as root, in
// /, its stdio /dev/null, reaped as any orphan. A conf that does not parse is told on stderr (the
// service's journal), and the distribution starts all the same.
void Agent::run_boot_command()
{
    auto conf = read_distro_conf();
    if (!conf) {
        std::fprintf(stderr, "bulkhead-vminit: no boot command: %s\n", conf.error().message.c_str());
        return;
    }
    if (conf->boot_command.empty())
        return;
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null)
        return;
    SpawnPlan plan {
        .path = "/bin/sh",
        .argv = { "sh", "-c", conf->boot_command },
        .env = { std::string("PATH=") + default_path, "HOME=/root", "USER=root", "LOGNAME=root" },
        .fds = { { null.get(), 0 }, { null.get(), 1 }, { null.get(), 2 } },
        .cwd = "/",
    };
    auto child = spawn_process(plan);
    if (!child) {
        std::fprintf(
            stderr, "bulkhead-vminit: cannot run the boot command: %s\n", child.error().message.c_str());
        return;
    }
    (void)child->detach(); // not watched: the reaper takes it as any orphan
}

kj::Promise<void> Agent::mount(MountContext context)
{
    // Only staged trees: they arrive locked (proto/vm.capnp, VmConfig.staging).
    auto params = context.getParams();
    Status status = attach_staged(params.getStaged().cStr(), params.getVmPath().cStr(), params.getReadOnly());
    if (!status)
        fail_outcome(context.getResults().initOutcome(), status.error());
    return kj::READY_NOW;
}

namespace {

    // A new pseudo-terminal of this namespace's devpts (/dev/ptmx), of `size`: its master, and its
    // slave (opened through the master, no path looked up) owned by `user`, as login makes it.
    Result<std::array<Fd, 2>> open_terminal(proto::TerminalSize::Reader size, const User& user)
    {
        Fd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!master)
            return Error::from_errno(errno, "cannot open a pseudo-terminal (/dev/ptmx)");
        if (::unlockpt(master.get()) < 0)
            return Error::from_errno(errno, "cannot unlock a pseudo-terminal");
        Fd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave)
            return Error::from_errno(errno, "cannot open a pseudo-terminal's terminal end");
        winsize window {};
        window.ws_row = size.getRows();
        window.ws_col = size.getColumns();
        if (window.ws_row > 0 && window.ws_col > 0 && ::ioctl(master.get(), TIOCSWINSZ, &window) < 0)
            return Error::from_errno(errno, "cannot set a pseudo-terminal's size");
        // The user's alone (0600): not writable by the group, as devpts' mode=0620 would leave it.
        if (((user.uid != 0 || user.gid != 0) && ::fchown(slave.get(), user.uid, user.gid) < 0)
            || ::fchmod(slave.get(), 0600) < 0)
            return Error::from_errno(errno, "cannot give a pseudo-terminal to " + user.name);
        return std::array<Fd, 2> { std::move(master), std::move(slave) };
    }

    // A listening unix socket in a directory of its own, over which a program hands the master
    // end of a pseudo-terminal it made (crun's --console-socket: one connection, one message
    // carrying the fd). Removed with this object. Thread affinity: the agent's event loop.
    class ConsoleSocket {
    public:
        static Result<kj::Own<ConsoleSocket>> open(kj::UnixEventPort& port)
        {
            char dir[] = "/tmp/bulkhead-console.XXXXXX";
            if (!::mkdtemp(dir))
                return Error::from_errno(errno, "cannot make a directory for a console socket");
            auto socket = kj::heap<ConsoleSocket>(port, dir);
            sockaddr_un address {};
            address.sun_family = AF_UNIX;
            std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket->path().c_str());
            socket->m_listener = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
            if (!socket->m_listener
                || ::bind(socket->m_listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address))
                    < 0
                || ::listen(socket->m_listener.get(), 1) < 0)
                return Error::from_errno(errno, "cannot listen on a console socket");
            socket->m_observer = kj::heap<kj::UnixEventPort::FdObserver>(
                port, socket->m_listener.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
            return socket;
        }
        ConsoleSocket(kj::UnixEventPort& port, std::string dir)
            : m_port(port)
            , m_dir(std::move(dir))
        {
        }
        ~ConsoleSocket()
        {
            m_observer = nullptr; // before the fds it watches close
            m_connection_observer = nullptr;
            ::unlink(path().c_str());
            ::rmdir(m_dir.c_str());
        }
        std::string path() const { return m_dir + "/socket"; }

        // The fd handed over, once it came.
        kj::Promise<Result<Fd>> receive()
        {
            auto now = poll();
            if (!now)
                return Result<Fd>(now.take_error());
            if (now.value())
                return Result<Fd>(std::move(*now.value()));
            auto& observer = m_connection_observer ? *m_connection_observer : *m_observer;
            return observer.whenBecomesReadable().then([this]() { return receive(); });
        }
        // The fd handed over if it is here already; nothing if not.
        Result<std::optional<Fd>> poll()
        {
            if (!m_connection) {
                m_connection
                    = Fd(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (!m_connection) {
                    if (errno == EAGAIN || errno == EINTR)
                        return std::optional<Fd>();
                    return Error::from_errno(errno, "cannot accept on the console socket");
                }
                m_connection_observer = kj::heap<kj::UnixEventPort::FdObserver>(
                    m_port, m_connection.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
            }
            for (;;) {
                char data[64];
                iovec iov { data, sizeof(data) };
                alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
                msghdr message {};
                message.msg_iov = &iov;
                message.msg_iovlen = 1;
                message.msg_control = control;
                message.msg_controllen = sizeof(control);
                ssize_t n = ::recvmsg(m_connection.get(), &message, MSG_CMSG_CLOEXEC);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                    return std::optional<Fd>();
                if (n < 0)
                    return Error::from_errno(errno, "cannot read the console socket");
                std::optional<Fd> first;
                for (cmsghdr* c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
                    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    for (size_t i = 0; i < count; ++i) {
                        int fd;
                        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        Fd received(fd); // any beyond the first close here
                        if (!first)
                            first = std::move(received);
                    }
                }
                if (first)
                    return first;
                if (n == 0)
                    return Error { -EPIPE,
                        "the program closed its console socket without handing a terminal over" };
            }
        }

    private:
        kj::UnixEventPort& m_port;
        std::string m_dir;
        Fd m_listener;
        Fd m_connection;
        kj::Own<kj::UnixEventPort::FdObserver> m_observer;
        kj::Own<kj::UnixEventPort::FdObserver> m_connection_observer;
    };

} // namespace

kj::Promise<void> Agent::spawn(SpawnContext context)
{
    auto request = context.getParams().getRequest();
    auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(3);
    // With a terminal the agent opens, the program's stdio is the terminal: no fds were sent.
    auto fd_of = [tty = request.hasTerminal() && !request.getConsoleSocket()](proto::Fd::Client fd) {
        return tty ? kj::Promise<Result<Fd>>(Result<Fd>(Fd())) : ipc::unwrap_fd(kj::mv(fd));
    };
    fds.add(fd_of(request.getStdin()));
    fds.add(fd_of(request.getStdout()));
    fds.add(fd_of(request.getStderr()));
    return kj::joinPromises(fds.finish())
        .then([this, context](kj::Array<Result<Fd>> stdio) mutable -> kj::Promise<void> {
            auto request = context.getParams().getRequest();
            auto failed = [&context](const Error& error) {
                fail_outcome(context.getResults().initOutcome(), error);
                return kj::Promise<void>(kj::READY_NOW);
            };
            for (auto& fd : stdio) {
                if (!fd)
                    return failed(fd.error());
            }
            User user;
            std::string wanted = request.hasUser() ? request.getUser().cStr() : "";
            if (wanted.empty() && request.getDefaultUser() && m_role == AgentRole::Distribution) {
                auto conf = read_distro_conf();
                if (!conf)
                    return failed({ conf.error().code,
                        conf.error().message + " (it names the default user; run -u USER runs as another)" });
                wanted = conf->default_user;
            }
            if (!wanted.empty()) {
                auto found = lookup_user(wanted);
                if (!found && request.getUser().size() == 0)
                    return failed({ found.error().code,
                        found.error().message + " (/etc/bulkhead.conf names it as the default user)" });
                if (!found)
                    return failed(found.error());
                user = found.value();
                if (Status mapped = check_mapped(user); !mapped)
                    return failed(mapped.error());
            }
            std::string path = request.getPath().cStr();
            std::vector<std::string> argv = to_strings(request.getArgv());
            if (request.getLoginShell()) {
                if (user.shell.empty())
                    if (auto named = lookup_user(user.name))
                        user.shell = named->shell;
                path = user.shell.empty() ? "/bin/sh" : user.shell;
                argv = { "-" + path.substr(path.rfind('/') + 1) };
            }
            std::string cwd = request.getCwd().cStr();
            if (!cwd.empty() && cwd.front() != '/')
                return failed({ -EINVAL, "the directory '" + cwd + "' is not absolute" });
            if (!cwd.empty()) {
                struct stat st;
                if (::stat(cwd.c_str(), &st) < 0)
                    return failed(Error::from_errno(errno, "cannot start in '" + cwd + "'"));
                if (!S_ISDIR(st.st_mode))
                    return failed({ -ENOTDIR, "cannot start in '" + cwd + "': not a directory" });
            }
            auto program = resolve_program(path);
            if (!program)
                return failed(program.error());
            SpawnPlan plan {
                .path = program.value(),
                .argv = std::move(argv),
                .env = environment_for(user, request.getEnv()),
                .fds = { { stdio[0]->get(), 0 }, { stdio[1]->get(), 1 }, { stdio[2]->get(), 2 } },
                .cwd = !cwd.empty()                          ? cwd
                    : ::access(user.home.c_str(), X_OK) == 0 ? user.home
                                                             : "/",
            };
            std::array<Fd, 2> terminal; // master, slave; our slave closes once the program has its own
            kj::Own<ConsoleSocket> console;
            if (request.getConsoleSocket()) {
                if (!request.hasTerminal())
                    return failed({ -EINVAL, "a console socket is for a terminal" });
                auto opened = ConsoleSocket::open(m_reaper.port());
                if (!opened)
                    return failed(opened.error());
                console = kj::mv(opened.value());
                plan.env.push_back("BULKHEAD_CONSOLE_SOCKET=" + console->path());
            } else if (request.hasTerminal()) {
                auto opened = open_terminal(request.getTerminal(), user);
                if (!opened)
                    return failed(opened.error());
                terminal = std::move(opened.value());
                plan.fds = { { terminal[1].get(), 0 }, { terminal[1].get(), 1 }, { terminal[1].get(), 2 } };
                plan.controlling_terminal = true;
            }
            if (user.uid != 0 || user.gid != 0)
                plan.run_as = Credentials { user.uid, user.gid };
            auto child = spawn_process(plan);
            if (!child)
                return failed(child.error());
            pid_t pid = child->pid();
            m_reaper.watch(pid);
            context.getResults().setPid(pid);
            if (terminal[0])
                context.getResults().setTerminal(ipc::wrap_fd(std::move(terminal[0])));
            if (!console) {
                context.getResults().setProcess(kj::heap<Process>(m_reaper, pid, child->detach()));
                return kj::READY_NOW;
            }
            // The answer waits for the terminal, or for the program's end without one (what it sent
            // before it ended still counts). Dropped meanwhile, the Process kills the program.
            auto ended = ipc::when_exited(m_reaper.port(), child->pidfd());
            proto::Process::Client process = kj::heap<Process>(m_reaper, pid, child->detach());
            auto size = request.getTerminal();
            winsize window {};
            window.ws_row = size.getRows();
            window.ws_col = size.getColumns();
            auto& socket = *console;
            return socket.receive()
                .exclusiveJoin(ended.then([&socket]() -> Result<Fd> {
                    auto now = socket.poll();
                    if (now && now.value())
                        return std::move(*now.value());
                    return Error { -ECHILD, "the program ended without handing a terminal over" };
                }))
                .then([context, process, window](Result<Fd> master) mutable {
                    context.getResults().setProcess(process);
                    if (!master)
                        return; // its errors went to its stderr; the service sees no terminal
                    if (window.ws_row > 0 && window.ws_col > 0)
                        ::ioctl(master->get(), TIOCSWINSZ, &window);
                    context.getResults().setTerminal(ipc::wrap_fd(std::move(master.value())));
                })
                .attach(kj::mv(console));
        });
}

kj::Promise<void> Agent::startDistribution(StartDistributionContext context)
{
    if (m_role != AgentRole::Vm) {
        fail_outcome(
            context.getResults().initOutcome(), { -EPERM, "only the VM's init starts distributions" });
        return kj::READY_NOW;
    }
    auto params = context.getParams();
    auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(2);
    fds.add(ipc::unwrap_fd(params.getRootTree()));
    fds.add(ipc::unwrap_fd(params.getChannel()));
    return kj::joinPromises(fds.finish()).then([this, context](kj::Array<Result<Fd>> fds) mutable {
        auto results = context.getResults();
        for (auto& fd : fds) {
            if (!fd)
                return fail_outcome(results.initOutcome(), fd.error());
        }
        std::string name = context.getParams().getName().cStr();
        SpawnPlan plan {
            .path = "/proc/self/exe",
            .argv = { "bulkhead-vminit", "distribution", name },
            .fds = { { fds[1]->get(), 3 }, { fds[0]->get(), 4 } },
            .namespaces = CLONE_NEWNS | CLONE_NEWPID,
        };
        auto child = spawn_process(plan);
        if (!child)
            return fail_outcome(results.initOutcome(), child.error());
        struct stat ns;
        std::string ns_path = "/proc/" + std::to_string(child->pid()) + "/ns/pid";
        if (::stat(ns_path.c_str(), &ns) < 0)
            return fail_outcome(results.initOutcome(), Error::from_errno(errno, "cannot read " + ns_path));
        m_reaper.watch(child->pid());
        results.setInitPid(child->pid());
        results.setPidNamespace(ns.st_ino);
        results.setPidfd(ipc::wrap_fd(child->detach()));
    });
}

kj::Promise<void> Agent::unmount(UnmountContext context)
{
    if (m_role != AgentRole::Vm) {
        fail_outcome(context.getResults().initOutcome(), { -EPERM, "only the VM's init unmounts" });
        return kj::READY_NOW;
    }
    Status status = detach_mount(context.getParams().getVmPath().cStr());
    if (!status)
        fail_outcome(context.getResults().initOutcome(), status.error());
    return kj::READY_NOW;
}

} // namespace bh::vm
