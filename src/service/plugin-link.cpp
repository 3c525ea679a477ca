// PluginLink implementations: a bulkhead-pluginhost process, or the plugin loaded in-process.
#include "service/plugin-link.h"

#include "base/log.h"
#include "base/spawn.h"
#include "ipc/fd-cap.h"
#include "ipc/process-watch.h"
#include "plugin/hook-codec.h"
#include "service/host-cgroup.h"

#include <bulkhead/plugin_api.h>
#include <fcntl.h>
#include <proto/plugin_host.capnp.h>
#include <set>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr size_t max_text = 4096;

    // The sealed, verified copy a runtime loads, in both isolation modes. Here, on the loop: it
    // reads and hashes one local, root-owned file, and it keeps libcrypto out of the hosts.
    Result<Fd> verified_copy(const PluginConfig& config, const Integrity& integrity)
    {
        auto memfd = open_verified(config.path, integrity);
        if (!memfd)
            return Error { memfd.error().code, "plugin '" + config.name + "': " + memfd.error().message };
        return memfd;
    }
    constexpr size_t max_argv = 4096;
    // The hooks a host reaches through methods added in protocol 2.2 (the container and image
    // hooks): a host answering initialize with an older minor lacks them, so they are never sent.
    constexpr uint32_t hooks_since_minor_2 = (1u << static_cast<uint32_t>(host::Hook::container_started))
        | (1u << static_cast<uint32_t>(host::Hook::container_stopping))
        | (1u << static_cast<uint32_t>(host::Hook::image_created))
        | (1u << static_cast<uint32_t>(host::Hook::image_deleted));
    // A host whose connection broke gets this long to exit by itself before we SIGKILL it, so a
    // crash is reported with its own signal rather than ours.
    constexpr auto exit_grace = 2 * kj::SECONDS;
    // Forwarded stderr: lines longer than this are cut, and at most this many lines a second are
    // logged per plugin; the rest are counted, so a flood costs the service little.
    constexpr size_t max_line = 4096;
    constexpr unsigned max_lines_per_second = 1000;

    // --- The plugin's calls back: validated, then served by the service ----------------------

    // A process the plugin's host holds: dropping the capability drops the handle, which kills it.
    class ContainerProcessServer final : public proto::ContainerProcess::Server {
    public:
        explicit ContainerProcessServer(kj::Own<host::ProcessHandle> handle)
            : m_handle(kj::mv(handle))
        {
        }

    protected:
        kj::Promise<void> exitCode(ExitCodeContext context) override
        {
            return m_handle->exit_code().then([context](Result<int> code) mutable {
                if (!code)
                    return context.getResults().setCode(code.error().code);
                context.getResults().setExitCode(code.value());
            });
        }

    private:
        kj::Own<host::ProcessHandle> m_handle;
    };

    // A host that sends something malformed is cut off: `violation` kills it and blames it.
    class CallbackServer final : public proto::PluginHostCallback::Server {
    public:
        CallbackServer(host::CallTarget& target, kj::Function<void(std::string)> violation)
            : m_target(target)
            , m_violation(kj::mv(violation))
        {
        }

    protected:
        kj::Promise<void> mountFolder(MountFolderContext context) override
        {
            auto params = context.getParams();
            if (params.getVmPath().size() > max_text || params.getName().size() > max_text
                || params.getHostPath().size() > max_text)
                return reject("a mount_folder path or name longer than 4096 bytes");
            return m_target
                .mount_folder(params.getSession(), params.getHostPath().cStr(), params.getVmPath().cStr(),
                    params.getReadOnly(), params.getName().cStr())
                .then([context](int code) mutable { context.getResults().setCode(code); });
        }

        kj::Promise<void> executeBinary(ExecuteBinaryContext context) override
        {
            auto params = context.getParams();
            std::optional<Uuid> distro;
            if (params.hasDistribution()) {
                distro = host::uuid_of(params.getDistribution());
                if (!distro)
                    return reject("a distribution id that is not 16 bytes");
            }
            if (params.getPath().size() > max_text || params.getArgv().size() > max_argv)
                return reject("an execute_binary path or argv over the limits");
            std::vector<std::string> argv;
            for (auto arg : params.getArgv()) {
                if (arg.size() > max_text)
                    return reject("an execute_binary argument longer than 4096 bytes");
                argv.emplace_back(arg.cStr());
            }
            return m_target.execute(params.getSession(), distro, params.getPath().cStr(), std::move(argv))
                .then([context](Result<Fd> socket) mutable {
                    auto results = context.getResults();
                    if (!socket)
                        return results.setCode(socket.error().code);
                    results.setSocket(ipc::wrap_fd(std::move(socket.value())));
                });
        }

        kj::Promise<void> containerMountFolder(ContainerMountFolderContext context) override
        {
            auto params = context.getParams();
            if (params.getHostPath().size() > max_text || params.getMountpoint().size() > max_text)
                return reject("a container_mount_folder path longer than 4096 bytes");
            std::pair<uint32_t, std::string> key { params.getSession(), params.getMountpoint().cStr() };
            return m_target
                .container_mount(params.getSession(), params.getHostPath().cStr(),
                    params.getMountpoint().cStr(), params.getReadOnly())
                .then([this, context, key](int code) mutable {
                    if (code == 0)
                        m_mounts.insert(key);
                    context.getResults().setCode(code);
                });
        }

        // Only what this host mounted: a plugin never takes another's mount (or the session's
        // storage) away.
        kj::Promise<void> containerUnmountFolder(ContainerUnmountFolderContext context) override
        {
            auto params = context.getParams();
            if (params.getMountpoint().size() > max_text)
                return reject("a container_unmount_folder path longer than 4096 bytes");
            std::pair<uint32_t, std::string> key { params.getSession(), params.getMountpoint().cStr() };
            if (!m_mounts.contains(key)) {
                context.getResults().setCode(-ENOENT);
                return kj::READY_NOW;
            }
            return m_target.container_unmount(key.first, key.second)
                .then([this, context, key](int code) mutable {
                    if (code == 0 || code == BH_E_SESSION_NOT_FOUND || code == BH_E_VM_NOT_RUNNING)
                        m_mounts.erase(key);
                    context.getResults().setCode(code);
                });
        }

        // Cancelled with its host: a program started for a host that died meanwhile is dropped,
        // which kills it.
        kj::Promise<void> containerCreateProcess(ContainerCreateProcessContext context) override
        {
            context.allowCancellation();
            auto params = context.getParams();
            if (params.getExecutable().size() > max_text || params.getArgv().size() > max_argv
                || params.getEnv().size() > max_argv)
                return reject("a container_create_process executable, argv or envp over the limits");
            std::vector<std::string> argv, env;
            for (auto arg : params.getArgv()) {
                if (arg.size() > max_text)
                    return reject("a container_create_process argument longer than 4096 bytes");
                argv.emplace_back(arg.cStr());
            }
            for (auto var : params.getEnv()) {
                if (var.size() > max_text)
                    return reject("a container_create_process variable longer than 4096 bytes");
                env.emplace_back(var.cStr());
            }
            return m_target
                .create_process(
                    params.getSession(), params.getExecutable().cStr(), std::move(argv), std::move(env))
                .then([context](Result<host::ProcessStart> started) mutable {
                    auto results = context.getResults();
                    if (!started)
                        return results.setCode(started.error().code);
                    results.setStdin(ipc::wrap_fd(std::move(started->stdio[0])));
                    results.setStdout(ipc::wrap_fd(std::move(started->stdio[1])));
                    results.setStderr(ipc::wrap_fd(std::move(started->stdio[2])));
                    results.setExit(ipc::wrap_fd(std::move(started->exit)));
                    results.setProcess(kj::heap<ContainerProcessServer>(kj::mv(started->handle)));
                });
        }

    private:
        kj::Promise<void> reject(std::string why)
        {
            m_violation("sent " + why);
            return KJ_EXCEPTION(FAILED, "invalid request from the plugin host", why);
        }

        host::CallTarget& m_target;
        kj::Function<void(std::string)> m_violation;
        std::set<std::pair<uint32_t, std::string>> m_mounts; // what this host mounted, by session
    };

    // --- stderr forwarding -------------------------------------------------------------------

    class StderrForwarder {
    public:
        StderrForwarder(kj::Own<kj::AsyncInputStream> pipe, std::string name)
            : m_pipe(kj::mv(pipe))
            , m_name(std::move(name))
        {
        }

        kj::Promise<void> run()
        {
            return m_pipe->tryRead(m_buffer, 1, sizeof(m_buffer)).then([this](size_t n) -> kj::Promise<void> {
                if (n == 0) {
                    flush_partial();
                    return kj::READY_NOW;
                }
                consume(m_buffer, n); // not a StringPtr: the chunk is not NUL-terminated
                return run();
            });
        }

    private:
        void consume(const char* data, size_t n)
        {
            for (size_t i = 0; i < n; ++i) {
                if (data[i] == '\n') {
                    emit();
                } else if (m_line.size() < max_line) {
                    m_line.push_back(data[i]);
                }
            }
        }

        void flush_partial()
        {
            if (!m_line.empty())
                emit();
        }

        void emit()
        {
            time_t now = time(nullptr);
            if (now != m_window) {
                if (m_dropped > 0)
                    log_warning(
                        "plugin " + m_name + ": " + std::to_string(m_dropped) + " lines of output suppressed",
                        LogContext { .plugin = m_name });
                m_window = now;
                m_lines = 0;
                m_dropped = 0;
            }
            if (++m_lines <= max_lines_per_second)
                log_info("plugin " + m_name + ": " + m_line, LogContext { .plugin = m_name });
            else
                ++m_dropped;
            m_line.clear();
        }

        kj::Own<kj::AsyncInputStream> m_pipe;
        std::string m_name;
        char m_buffer[16384];
        std::string m_line;
        time_t m_window = 0;
        unsigned m_lines = 0;
        unsigned m_dropped = 0;
    };

    std::string describe_exit(int status)
    {
        if (WIFSIGNALED(status))
            return std::string("killed by signal SIG") + sigabbrev_np(WTERMSIG(status));
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }

    // --- A plugin in its own host process -----------------------------------------------------

    class ProcessLink final : public PluginLink {
    public:
        ProcessLink(PluginEnvironment& env, const PluginConfig& config, host::CallTarget& calls,
            HostCgroup cgroup, ChildProcess host, Fd channel, Fd output)
            : m_env(env)
            , m_config(config)
            , m_cgroup(std::move(cgroup))
            , m_host(std::move(host))
            , m_connection(kj::heap<ipc::Connection>(
                  env.provider, std::move(channel), capnp::rpc::twoparty::Side::CLIENT))
            , m_client(m_connection->bootstrap().castAs<proto::PluginHost>())
            , m_callback(kj::heap<CallbackServer>(calls, [this](std::string why) { blame(std::move(why)); }))
            , m_output(kj::heap<StderrForwarder>(
                  env.provider.wrapInputFd(output.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP),
                  config.name))
            , m_forwarding(m_output->run().eagerlyEvaluate([name = config.name](kj::Exception&& e) {
                log_warning(
                    "plugin " + name + ": its output is no longer forwarded: " + e.getDescription().cStr());
            }))
            , m_death(watch().fork())
        {
        }

        kj::Promise<Result<uint32_t>> load(Integrity integrity) override
        {
            auto memfd = verified_copy(m_config, integrity);
            if (!memfd)
                return Result<uint32_t>(memfd.error());
            auto request = m_client.initializeRequest();
            request.setPlugin(ipc::wrap_fd(std::move(memfd.value())));
            request.setMajor(proto::PLUGIN_HOST_MAJOR);
            request.setMinor(proto::PLUGIN_HOST_MINOR);
            request.setPluginPath(m_config.path);
            request.setPluginName(m_config.name);
            bh_version v = host::parse_version(m_env.service_version.c_str());
            auto version = request.initServiceVersion();
            version.setMajor(v.major);
            version.setMinor(v.minor);
            version.setRevision(v.revision);
            request.setCallback(kj::mv(m_callback));
            return abandon_on_failure(request.send()).then([](auto reply) -> Result<uint32_t> {
                BH_TRY(ipc::to_status(reply.getOutcome()));
                if (reply.getMajor() != proto::PLUGIN_HOST_MAJOR)
                    return Error { -EPROTONOSUPPORT,
                        "the plugin host speaks protocol " + std::to_string(reply.getMajor())
                            + ".x, the service " + std::to_string(proto::PLUGIN_HOST_MAJOR) + ".x" };
                uint32_t hooks = reply.getHooks();
                return reply.getMinor() < 2 ? hooks & ~hooks_since_minor_2 : hooks;
            });
        }

        kj::Promise<host::HookOutcome> call(host::HookCall call) override
        {
            switch (call.hook) {
            case host::Hook::vm_started: {
                auto request = m_client.onVmStartedRequest();
                host::encode_session(call.session, request.initSession());
                request.setCustomConfigFlags(call.custom_config_flags);
                return outcome_of(request.send());
            }
            case host::Hook::vm_stopping: {
                auto request = m_client.onVmStoppingRequest();
                host::encode_session(call.session, request.initSession());
                return outcome_of(request.send());
            }
            case host::Hook::distribution_started:
                return distro_call(m_client.onDistributionStartedRequest(), call);
            case host::Hook::distribution_stopping:
                return distro_call(m_client.onDistributionStoppingRequest(), call);
            case host::Hook::distribution_registered:
                return distro_call(m_client.onDistributionRegisteredRequest(), call);
            case host::Hook::distribution_unregistered:
                return distro_call(m_client.onDistributionUnregisteredRequest(), call);
            case host::Hook::container_session_created:
                return container_call(m_client.onContainerSessionCreatedRequest(), call);
            case host::Hook::container_session_stopping:
                return container_call(m_client.onContainerSessionStoppingRequest(), call);
            case host::Hook::container_vm_started:
                return container_call(m_client.onContainerVmStartedRequest(), call);
            case host::Hook::container_vm_stopping:
                return container_call(m_client.onContainerVmStoppingRequest(), call);
            case host::Hook::container_started:
                return text_call(m_client.onContainerStartedRequest(), call);
            case host::Hook::container_stopping:
                return text_call(m_client.onContainerStoppingRequest(), call);
            case host::Hook::image_created:
                return text_call(m_client.onImageCreatedRequest(), call);
            case host::Hook::image_deleted:
                return text_call(m_client.onImageDeletedRequest(), call);
            }
            return KJ_EXCEPTION(FAILED, "unknown hook");
        }

        pid_t pid() const override { return m_host.pid(); }
        kj::Promise<std::string> on_death() override { return m_death.addBranch(); }
        void terminate() override
        {
            m_killed_by_us = true;
            (void)m_host.kill(SIGKILL);
        }

    private:
        template<typename Request>
        kj::Promise<host::HookOutcome> distro_call(Request request, const host::HookCall& call)
        {
            host::encode_session(call.session, request.initSession());
            host::encode_distro(call.distro, request.initDistribution());
            return outcome_of(request.send());
        }

        template<typename Request>
        kj::Promise<host::HookOutcome> container_call(Request request, const host::HookCall& call)
        {
            host::encode_container(call.container, request.initSession());
            return outcome_of(request.send());
        }

        template<typename Request>
        kj::Promise<host::HookOutcome> text_call(Request request, const host::HookCall& call)
        {
            host::encode_container(call.container, request.initSession());
            request.setText(call.text);
            return outcome_of(request.send());
        }

        template<typename Reply> kj::Promise<host::HookOutcome> outcome_of(Reply reply)
        {
            return abandon_on_failure(kj::mv(reply)).then([](auto response) {
                return host::decode_outcome(response.getResult());
            });
        }

        // A call that fails while the host lives on (it answered with an exception) still means
        // a broken host: unless it dies by itself within the grace period, it is killed.
        template<typename T> kj::Promise<capnp::Response<T>> abandon_on_failure(capnp::RemotePromise<T> reply)
        {
            return reply.catch_([this](kj::Exception&& e) -> kj::Promise<capnp::Response<T>> {
                std::string why = e.getDescription().cStr();
                if (m_call_error.empty())
                    m_call_error = why;
                m_abandon = m_env.timer.afterDelay(exit_grace)
                                .then([this, why]() { blame("failed a call (" + why + ")"); })
                                .eagerlyEvaluate(nullptr);
                return kj::mv(e);
            });
        }

        // The host is dead once its process exits, or its connection drops and it then exits
        // (within the grace period, or by our SIGKILL).
        kj::Promise<std::string> watch()
        {
            auto broke = m_connection->on_disconnect().then([this]() {
                return ipc::when_exited(m_env.port, m_host.pidfd())
                    .exclusiveJoin(m_env.timer.afterDelay(exit_grace).then([this]() {
                        m_killed_by_us = true;
                        (void)m_host.kill(SIGKILL);
                        return ipc::when_exited(m_env.port, m_host.pidfd());
                    }));
            });
            auto exited = ipc::when_exited(m_env.port, m_host.pidfd()).exclusiveJoin(kj::mv(broke));
            return exited.then([this]() { return drain(); }).then([this]() {
                auto status = m_host.try_wait();
                std::string cause = status ? describe_exit(*status) : std::string("ended");
                if (status && WIFEXITED(*status) && !m_call_error.empty())
                    cause = "lost its connection (" + m_call_error + ") and " + cause;
                if (!m_blame.empty())
                    cause = m_blame + "; " + (m_killed_by_us ? "killed" : cause);
                else if (m_killed_by_us)
                    cause = "broke its connection and was killed";
                return cause;
            });
        }

        // Kills what the plugin left running and waits (bounded) until it is gone, so a failed
        // operation returns only once nothing of the plugin remains.
        kj::Promise<void> drain(unsigned attempts = 100)
        {
            m_cgroup.kill();
            if (!m_cgroup.populated() || attempts == 0) {
                if (Status removed = m_cgroup.remove(); !removed)
                    log_warning(removed.error().message);
                return kj::READY_NOW;
            }
            return m_env.timer.afterDelay(20 * kj::MILLISECONDS).then([this, attempts]() {
                return drain(attempts - 1);
            });
        }

        void blame(std::string why)
        {
            if (m_blame.empty())
                m_blame = std::move(why);
            m_killed_by_us = true;
            (void)m_host.kill(SIGKILL);
        }

        PluginEnvironment& m_env;
        PluginConfig m_config;
        HostCgroup m_cgroup; // destroyed after m_host is reaped
        ChildProcess m_host;
        kj::Own<ipc::Connection> m_connection;
        proto::PluginHost::Client m_client;
        proto::PluginHostCallback::Client m_callback;
        kj::Own<StderrForwarder> m_output;
        kj::Promise<void> m_forwarding;
        std::string m_blame;
        std::string m_call_error; // the first call that failed, for the cause
        bool m_killed_by_us = false;
        kj::Promise<void> m_abandon = nullptr;
        kj::ForkedPromise<std::string> m_death;
    };

    // --- A plugin inside the service ---------------------------------------------------------

    class InProcessLink final : public PluginLink {
    public:
        InProcessLink(const PluginConfig& config, kj::UnixEventPort& port)
            : m_config(config)
            , m_runtime(kj::heap<host::PluginRuntime>(config.name, port))
        {
        }

        kj::Promise<Result<uint32_t>> load(Integrity integrity) override
        {
            auto memfd = verified_copy(m_config, integrity);
            if (!memfd)
                return Result<uint32_t>(memfd.error());
            return m_runtime->load(std::move(memfd.value()), m_config.path);
        }
        kj::Promise<host::HookOutcome> call(host::HookCall call) override
        {
            return m_runtime->run(std::move(call));
        }
        pid_t pid() const override { return 0; }
        kj::Promise<std::string> on_death() override { return kj::NEVER_DONE; }
        // Its process is ours: what can be ended is its hook thread's queue (an entry point or a
        // hook stuck past its deadline keeps the thread, but nothing queued behind it ever runs).
        void terminate() override { m_runtime->abandon(); }

    private:
        PluginConfig m_config;
        kj::Own<host::PluginRuntime> m_runtime;
    };

    Status limit_host(pid_t pid, const PluginConfig& config)
    {
        if (config.memory_limit_mb > 0) {
            rlimit limit { config.memory_limit_mb << 20, config.memory_limit_mb << 20 };
            if (prlimit(pid, RLIMIT_AS, &limit, nullptr) < 0)
                return Error::from_errno(errno, "RLIMIT_AS");
        }
        if (config.max_open_files > 0) {
            rlimit limit { config.max_open_files, config.max_open_files };
            if (prlimit(pid, RLIMIT_NOFILE, &limit, nullptr) < 0)
                return Error::from_errno(errno, "RLIMIT_NOFILE");
        }
        return {};
    }

    Result<std::array<Fd, 2>> socket_pair()
    {
        int fds[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
            return Error::from_errno(errno, "cannot create a plugin host socket pair");
        return std::array<Fd, 2> { Fd(fds[0]), Fd(fds[1]) };
    }

    Result<std::array<Fd, 2>> output_pipe()
    {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return Error::from_errno(errno, "cannot create a plugin host output pipe");
        return std::array<Fd, 2> { Fd(fds[0]), Fd(fds[1]) };
    }

} // namespace

Result<kj::Own<PluginLink>> start_plugin_host(
    PluginEnvironment& env, const PluginConfig& config, host::CallTarget& calls)
{
    auto sockets = socket_pair();
    auto pipe = output_pipe();
    Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!sockets || !pipe || !null)
        return !sockets ? sockets.take_error()
            : !pipe     ? pipe.take_error()
                        : Error::from_errno(errno, "cannot open /dev/null");
    auto cgroup = HostCgroup::create(config.name);
    if (!cgroup)
        return Error { cgroup.error().code,
            "cannot contain plugin '" + config.name + "': " + cgroup.error().message };
    if (config.max_processes > 0)
        if (Status limited = cgroup->limit_processes(config.max_processes); !limited)
            return Error { limited.error().code,
                "cannot limit plugin '" + config.name + "': " + limited.error().message };
    SpawnPlan plan;
    plan.path = "bulkhead-pluginhost";
    plan.exec_fd = env.host_exe_fd;
    plan.argv = { "bulkhead-pluginhost", config.name };
    if (config.core_dumps)
        plan.argv.push_back("--core-dumps");
    plan.env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
    plan.fds = { { null.get(), 0 }, { (*pipe)[1].get(), 1 }, { (*pipe)[1].get(), 2 },
        { (*sockets)[1].get(), 3 }, { cgroup->fd(), 4 } };
    plan.die_with_parent = true;
    plan.cgroup_fd = cgroup->fd(); // born contained: no migration (the host checks, see containment)
    auto host = spawn_process(plan);
    if (!host)
        return Error { host.error().code,
            "cannot start the host of plugin '" + config.name + "': " + host.error().message };
    log_info("plugin '" + config.name + "': host started (pid " + std::to_string(host->pid()) + ")",
        LogContext { .plugin = config.name, .plugin_pid = host->pid() });
    // Before initialize, so before any plugin code: the limits the plugin lives with.
    if (Status limited = limit_host(host->pid(), config); !limited)
        return Error { limited.error().code,
            "cannot limit the host of plugin '" + config.name + "': " + limited.error().message };
    return kj::Own<PluginLink>(kj::heap<ProcessLink>(env, config, calls, std::move(cgroup.value()),
        std::move(host.value()), std::move((*sockets)[0]), std::move((*pipe)[0])));
}

kj::Own<PluginLink> load_in_process(const PluginConfig& config, kj::UnixEventPort& port)
{
    return kj::heap<InProcessLink>(config, port);
}

} // namespace bh::service
