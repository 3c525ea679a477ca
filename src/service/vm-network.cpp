// start_nat_network: pasta for one VM, and the wait for it to be ready.
#include "service/vm-network.h"

#include "config/config.h"

#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr size_t max_report = 4096; // what pasta may print before it is ready
    constexpr auto ready_deadline = 10 * kj::SECONDS;

    // Where Debian installs pasta (package passt); the service never looks in a PATH of the caller's.
    Result<std::string> find_pasta()
    {
        for (const char* path : { "/usr/bin/pasta", "/usr/local/bin/pasta", "/bin/pasta" }) {
            if (::access(path, X_OK) == 0)
                return std::string(path);
        }
        return Error { -ENOENT,
            "vm.network = \"nat\" needs pasta, which is not installed (Debian package passt); install it, "
            "or choose network = \"none\" in bulkhead.toml" };
    }

    // pasta opens the tun device as the user it runs as; standard hosts let everyone (udev makes
    // it 0666: a tun device only ever reaches namespaces its opener already controls).
    Status check_tun_open_to_users()
    {
        struct stat st { };
        if (::stat("/dev/net/tun", &st) < 0)
            return Error::from_errno(errno, "cannot use /dev/net/tun, which pasta needs");
        if ((st.st_mode & (S_IROTH | S_IWOTH)) != (S_IROTH | S_IWOTH)) {
            char mode[8];
            std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
            return Error { -EACCES,
                std::string("/dev/net/tun is not open to users (mode ") + mode
                    + "): pasta, which runs as the VM's user, cannot make the VM's interface; standard hosts "
                      "have it 0666 (udev)" };
        }
        return {};
    }

    Result<Fd> open_namespace(pid_t pid, const char* kind)
    {
        std::string path = "/proc/" + std::to_string(pid) + "/ns/" + kind;
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd)
            return Error::from_errno(errno, std::string("cannot open the VM's ") + kind + " namespace");
        return fd;
    }

    // pasta writes its pid (the --pid file, which is this pipe) once the VM's interface is
    // configured; before that, only errors. The last line of digits is the signal; EOF first
    // means it failed, and what it printed says why.
    class ReadyWatch {
    public:
        explicit ReadyWatch(kj::Own<kj::AsyncInputStream> pipe)
            : m_pipe(kj::mv(pipe))
        {
        }

        kj::Promise<Status> run()
        {
            return m_pipe->tryRead(m_buffer, 1, sizeof(m_buffer))
                .then([this](size_t n) -> kj::Promise<Status> {
                    if (n == 0)
                        return Status(failed());
                    for (size_t i = 0; i < n; ++i) {
                        if (m_buffer[i] != '\n') {
                            if (m_text.size() < max_report)
                                m_text.push_back(m_buffer[i]);
                            continue;
                        }
                        std::string line = m_text.substr(m_line_start);
                        if (!line.empty() && line.find_first_not_of("0123456789") == std::string::npos)
                            return Status();
                        if (m_text.size() < max_report) // newlines count too: the text stays bounded
                            m_text.push_back('\n');
                        m_line_start = m_text.size();
                    }
                    return run();
                });
        }

    private:
        Error failed() const
        {
            // pasta's own messages, without its complaints about the missing syslog socket.
            std::string said;
            size_t start = 0;
            while (start < m_text.size()) {
                size_t end = std::min(m_text.find('\n', start), m_text.size());
                std::string line = m_text.substr(start, end - start);
                start = end + 1;
                if (line.empty() || line.find("to syslog") != std::string::npos)
                    continue;
                for (char& c : line)
                    c = (c < 0x20 || c == 0x7f) ? '?' : c;
                said += (said.empty() ? "" : "; ") + line;
            }
            return Error { -ENETUNREACH,
                "pasta could not connect the VM to the network (vm.network = \"nat\")"
                    + (said.empty() ? std::string() : ": " + said) };
        }

        kj::Own<kj::AsyncInputStream> m_pipe;
        char m_buffer[512];
        std::string m_text;
        size_t m_line_start = 0;
    };

} // namespace

Result<NatNetwork> start_nat_network(kj::LowLevelAsyncIoProvider& provider, kj::Timer& timer,
    const ChildProcess& init, int pid_namespace, const VmCgroup& cgroup, std::optional<Credentials> user)
{
    auto pasta = find_pasta();
    if (!pasta)
        return pasta.take_error();
    if (user)
        BH_TRY(check_tun_open_to_users());
    auto netns = open_namespace(init.pid(), "net");
    if (!netns)
        return netns.take_error();
    Fd userns;
    if (user) {
        auto opened = open_namespace(init.pid(), "user");
        if (!opened)
            return opened.take_error();
        userns = std::move(opened.value());
    }
    int report[2];
    if (::pipe2(report, O_CLOEXEC) < 0)
        return Error::from_errno(errno, "cannot start pasta: cannot create a pipe");
    Fd report_read(report[0]), report_write(report[1]);
    // Reopened by pasta as its --pid file, with the user's ids when it runs as the user.
    if (user && ::fchown(report_write.get(), user->uid, user->gid) < 0)
        return Error::from_errno(errno, "cannot start pasta: cannot hand it its pipe");
    Fd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null_fd)
        return Error::from_errno(errno, "cannot start pasta: cannot open /dev/null");
    SpawnPlan plan {
        .path = pasta.value(),
        .argv = { "pasta", "--config-net", "--foreground", "--quiet", "--stderr", "--runas", "0", "--netns",
            "/proc/self/fd/3", "--pid", "/proc/self/fd/2",
            // Nothing forwarded between the host's ports and the VM's, either way.
            "--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none", "--address",
            nat_vm_address, "--netmask", "24", "--gateway", nat_host_address, "--dns-forward",
            nat_dns_address },
        .env = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin" },
        .fds = { { null_fd.get(), 0 }, { null_fd.get(), 1 }, { report_write.get(), 2 }, { netns->get(), 3 } },
        .join_user_namespace = userns ? userns.get() : -1,
        .join_pid_namespace = pid_namespace,
    };
    auto started = cgroup.spawn(std::move(plan));
    if (!started)
        return Error { started.error().code, "cannot start pasta: " + started.error().message };
    report_write.reset();
    auto watch = kj::heap<ReadyWatch>(
        provider.wrapInputFd(report_read.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP));
    auto ready = watch->run().attach(kj::mv(watch));
    auto bounded = timer.timeoutAfter(ready_deadline, kj::mv(ready)).catch_([](kj::Exception&& e) -> Status {
        return Error { -ETIMEDOUT,
            std::string("pasta did not connect the VM to the network in time (") + e.getDescription().cStr()
                + ")" };
    });
    return NatNetwork { std::move(started.value()), kj::mv(bounded) };
}

} // namespace bh::service
