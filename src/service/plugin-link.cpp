// PluginLink implementations: a bulkhead-pluginhost process, or the plugin loaded in-process.
#include "service/plugin-link.h"

#include "base/log.h"
#include "base/spawn.h"
#include "ipc/fd-cap.h"
#include "ipc/packet.h"
#include "ipc/process-watch.h"
#include "plugin/call-lanes.h"
#include "plugin/hook-codec.h"
#include "plugin/host-template.h"
#include "service/host-cgroup.h"

#include <bulkhead/plugin_api.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <deque>
#include <fcntl.h>
#include <list>
#include <poll.h>
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

    // What a call lane's request is answered with: the code, and execute_binary's socket.
    struct LaneReply {
        int code = 0;
        Fd fd;
    };

    // The plugin's calls, from its host's connection (PluginHostCallback) and from its call lanes
    // alike: validated here, then served by the service. A host that sends something malformed is
    // cut off: `violation` kills it and blames it.
    class CallbackServer final : public proto::PluginHostCallback::Server {
    public:
        CallbackServer(host::CallTarget& target, kj::Function<void(std::string)> violation)
            : m_target(target)
            , m_violation(kj::mv(violation))
        {
        }

        // One request of a call lane. Everything is read from `request` before this returns.
        kj::Promise<LaneReply> serve_lane(proto::CallRequest::Reader request)
        {
            auto code = [](kj::Promise<int> promise) {
                return promise.then([](int code) { return LaneReply { code }; });
            };
            uint32_t session = request.getSession();
            switch (request.which()) {
            case proto::CallRequest::MOUNT_FOLDER: {
                auto args = request.getMountFolder();
                return code(
                    mount(session, args.getHostPath(), args.getVmPath(), args.getReadOnly(), args.getName()));
            }
            case proto::CallRequest::EXECUTE_BINARY: {
                auto args = request.getExecuteBinary();
                return execute(
                    session, args.hasDistribution(), args.getDistribution(), args.getPath(), args.getArgv())
                    .then([](Result<Fd> socket) {
                        if (!socket)
                            return LaneReply { socket.error().code };
                        return LaneReply { 0, std::move(socket.value()) };
                    });
            }
            case proto::CallRequest::CONTAINER_MOUNT_FOLDER: {
                auto args = request.getContainerMountFolder();
                return code(
                    container_mount(session, args.getHostPath(), args.getMountpoint(), args.getReadOnly()));
            }
            case proto::CallRequest::CONTAINER_UNMOUNT_FOLDER:
                return code(container_unmount(session, request.getContainerUnmountFolder()));
            }
            return reject("a call lane request of an unknown kind");
        }

    protected:
        kj::Promise<void> mountFolder(MountFolderContext context) override
        {
            auto params = context.getParams();
            return mount(params.getSession(), params.getHostPath(), params.getVmPath(), params.getReadOnly(),
                params.getName())
                .then([context](int code) mutable { context.getResults().setCode(code); });
        }

        kj::Promise<void> executeBinary(ExecuteBinaryContext context) override
        {
            auto params = context.getParams();
            return execute(params.getSession(), params.hasDistribution(), params.getDistribution(),
                params.getPath(), params.getArgv())
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
            return container_mount(
                params.getSession(), params.getHostPath(), params.getMountpoint(), params.getReadOnly())
                .then([context](int code) mutable { context.getResults().setCode(code); });
        }

        kj::Promise<void> containerUnmountFolder(ContainerUnmountFolderContext context) override
        {
            auto params = context.getParams();
            return container_unmount(params.getSession(), params.getMountpoint())
                .then([context](int code) mutable { context.getResults().setCode(code); });
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
        kj::Promise<int> mount(uint32_t session, capnp::Text::Reader host_path, capnp::Text::Reader vm_path,
            bool read_only, capnp::Text::Reader name)
        {
            if (vm_path.size() > max_text || name.size() > max_text || host_path.size() > max_text)
                return reject("a mount_folder path or name longer than 4096 bytes");
            return m_target.mount_folder(session, host_path.cStr(), vm_path.cStr(), read_only, name.cStr());
        }

        kj::Promise<Result<Fd>> execute(uint32_t session, bool has_distro, capnp::Data::Reader distro_id,
            capnp::Text::Reader path, capnp::List<capnp::Text>::Reader args)
        {
            std::optional<Uuid> distro;
            if (has_distro) {
                distro = host::uuid_of(distro_id);
                if (!distro)
                    return reject("a distribution id that is not 16 bytes");
            }
            if (path.size() > max_text || args.size() > max_argv)
                return reject("an execute_binary path or argv over the limits");
            std::vector<std::string> argv;
            for (auto arg : args) {
                if (arg.size() > max_text)
                    return reject("an execute_binary argument longer than 4096 bytes");
                argv.emplace_back(arg.cStr());
            }
            return m_target.execute(session, distro, path.cStr(), std::move(argv));
        }

        kj::Promise<int> container_mount(
            uint32_t session, capnp::Text::Reader host_path, capnp::Text::Reader mountpoint, bool read_only)
        {
            if (host_path.size() > max_text || mountpoint.size() > max_text)
                return reject("a container_mount_folder path longer than 4096 bytes");
            std::pair<uint32_t, std::string> key { session, mountpoint.cStr() };
            return m_target.container_mount(session, host_path.cStr(), mountpoint.cStr(), read_only)
                .then([this, key](int code) {
                    if (code == 0)
                        m_mounts.insert(key);
                    return code;
                });
        }

        // Only what this host mounted: a plugin never takes another's mount (or the session's
        // storage) away.
        kj::Promise<int> container_unmount(uint32_t session, capnp::Text::Reader mountpoint)
        {
            if (mountpoint.size() > max_text)
                return reject("a container_unmount_folder path longer than 4096 bytes");
            std::pair<uint32_t, std::string> key { session, mountpoint.cStr() };
            if (!m_mounts.contains(key))
                return -ENOENT;
            return m_target.container_unmount(key.first, key.second).then([this, key](int code) {
                if (code == 0 || code == BH_E_SESSION_NOT_FOUND || code == BH_E_VM_NOT_RUNNING)
                    m_mounts.erase(key);
                return code;
            });
        }

        kj::Exception reject(std::string why)
        {
            m_violation("sent " + why);
            return KJ_EXCEPTION(FAILED, "invalid request from the plugin host", why);
        }

        host::CallTarget& m_target;
        kj::Function<void(std::string)> m_violation;
        std::set<std::pair<uint32_t, std::string>> m_mounts; // what this host mounted, by session
    };

    // --- Lanes (proto/plugin_host.capnp, "Lanes") --------------------------------------------

    // An exception whose description is `why` alone (KJ_EXCEPTION would prefix "expression = ").
    kj::Exception lane_failure(std::string why, kj::Exception::Type type = kj::Exception::Type::FAILED)
    {
        return kj::Exception(type, __FILE__, __LINE__, kj::heapString(why));
    }

    // The service's end of a host's hook lane: hooks written in order, answers read in order.
    // Thread affinity: the service's loop. A host that closes the lane, or answers what was not
    // asked or cannot be read, fails every hook in flight and every later one (the link then
    // treats the host as broken).
    class HookLane {
    public:
        HookLane(kj::LowLevelAsyncIoProvider& provider, Fd socket)
            : m_stream(provider.wrapSocketFd(socket.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP))
            , m_reading(read().eagerlyEvaluate([this](kj::Exception&& e) { fail(kj::mv(e)); }))
        {
        }

        kj::Promise<host::HookOutcome> call(const host::HookCall& call)
        {
            KJ_IF_MAYBE (why, m_broken)
                return kj::cp(*why);
            auto message = kj::heap<capnp::MallocMessageBuilder>(256);
            host::encode_hook_request(call, message->initRoot<proto::HookRequest>());
            auto answer = kj::newPromiseAndFulfiller<host::HookOutcome>();
            m_waiting.push_back(kj::mv(answer.fulfiller));
            m_writing = m_writing
                            .then([this, message = kj::mv(message)]() mutable {
                                auto& builder = *message;
                                return capnp::writeMessage(*m_stream, builder).attach(kj::mv(message));
                            })
                            .eagerlyEvaluate([this](kj::Exception&& e) { fail(kj::mv(e)); });
            return kj::mv(answer.promise);
        }

        // The host's connection broke: the hook in flight and every later one fail at once, so
        // no answer the host still sends on the lane can let an operation go on.
        void cut(std::string why) { fail(lane_failure(std::move(why), kj::Exception::Type::DISCONNECTED)); }

    private:
        kj::Promise<void> read()
        {
            return capnp::tryReadMessage(*m_stream, ipc::receive_options())
                .then([this](kj::Maybe<kj::Own<capnp::MessageReader>> message) -> kj::Promise<void> {
                    KJ_IF_MAYBE (reader, message) {
                        if (m_waiting.empty())
                            return KJ_EXCEPTION(FAILED, "the plugin host answered a hook nobody sent");
                        auto outcome = host::decode_outcome((*reader)->getRoot<proto::HookResult>());
                        auto waiting = kj::mv(m_waiting.front());
                        m_waiting.pop_front();
                        waiting->fulfill(kj::mv(outcome));
                        return read();
                    }
                    return KJ_EXCEPTION(DISCONNECTED, "the plugin host closed its hook lane");
                });
        }

        void fail(kj::Exception&& e)
        {
            if (m_broken == nullptr)
                m_broken = kj::cp(e);
            for (auto& waiting : m_waiting)
                waiting->reject(kj::cp(e));
            m_waiting.clear();
        }

        kj::Own<kj::AsyncIoStream> m_stream;
        std::deque<kj::Own<kj::PromiseFulfiller<host::HookOutcome>>> m_waiting; // sent, not answered
        kj::Maybe<kj::Exception> m_broken;
        kj::Promise<void> m_writing = kj::READY_NOW; // the last write queued
        kj::Promise<void> m_reading;
    };

    // The service's ends of a host's call lanes: the registry, where the host's threads send a
    // lane each, and every lane registered, served on the loop. Thread affinity: the service's loop.
    // What a host may do here is bounded: max_call_lanes lanes, requests of at most
    // max_request_bytes, no fds with them, one answer outstanding per lane. Anything else is a
    // violation, and the host is killed.
    class CallLanes {
    public:
        CallLanes(kj::UnixEventPort& port, Fd registry, CallbackServer& server,
            kj::Function<void(std::string)> violation)
            : m_port(port)
            , m_registry(std::move(registry))
            , m_server(server)
            , m_violation(kj::mv(violation))
            , m_registry_observer(port, m_registry.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ)
            , m_tasks(m_errors)
            , m_accepting(accept().eagerlyEvaluate([this](kj::Exception&& e) {
                m_violation(std::string("broke its call lane registry (") + e.getDescription().cStr() + ")");
            }))
        {
        }

    private:
        struct Lane {
            Lane(kj::UnixEventPort& port, Fd lane)
                : socket(std::move(lane))
                , observer(port, socket.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ)
            {
            }
            Fd socket;
            kj::UnixEventPort::FdObserver observer;
        };

        // The largest request a host can send in one packet (its socket buffer), with room.
        static constexpr size_t max_request_bytes = 512 * 1024;

        kj::Promise<void> accept()
        {
            kj::byte byte;
            auto packet = ipc::receive_packet(m_registry.get(), kj::arrayPtr(&byte, 1), 1, MSG_DONTWAIT);
            if (!packet && packet.error().code == -EAGAIN)
                return m_registry_observer.whenBecomesReadable().then([this]() { return accept(); });
            if (!packet)
                return lane_failure(packet.error().message);
            if (packet->size == 0)
                return kj::READY_NOW; // the host is going away
            if (packet->fds.size() != 1)
                return KJ_EXCEPTION(FAILED, "a registration without a lane");
            Fd socket = std::move(packet->fds.front());
            int domain = 0, type = 0;
            socklen_t size = sizeof(int);
            if (getsockopt(socket.get(), SOL_SOCKET, SO_DOMAIN, &domain, &size) < 0 || domain != AF_UNIX
                || getsockopt(socket.get(), SOL_SOCKET, SO_TYPE, &type, &size) < 0 || type != SOCK_SEQPACKET)
                return KJ_EXCEPTION(FAILED, "a lane that is not a Unix SOCK_SEQPACKET socket");
            if (m_lanes.size() >= host::max_call_lanes)
                return lane_failure("more than " + std::to_string(host::max_call_lanes) + " call lanes");
            if (m_buffer.size() == 0)
                m_buffer = ipc::packet_buffer(max_request_bytes); // untouched pages cost nothing
            auto lane = m_lanes.insert(m_lanes.end(), kj::heap<Lane>(m_port, std::move(socket)));
            m_tasks.add(serve(**lane).then([this, lane]() { m_lanes.erase(lane); },
                [this, lane](kj::Exception&& e) {
                    m_lanes.erase(lane);
                    m_violation(std::string("broke a call lane (") + e.getDescription().cStr() + ")");
                }));
            return accept();
        }

        // Answers the lane's requests one at a time, until the thread that owns it exits.
        kj::Promise<void> serve(Lane& lane)
        {
            auto packet = ipc::receive_packet(lane.socket.get(), m_buffer.asBytes(), 0, MSG_DONTWAIT);
            if (!packet && packet.error().code == -EAGAIN)
                return lane.observer.whenBecomesReadable().then([this, &lane]() { return serve(lane); });
            if (!packet)
                return lane_failure(packet.error().message);
            if (packet->size == 0)
                return kj::READY_NOW; // its thread exited
            if (packet->size % sizeof(capnp::word) != 0)
                return KJ_EXCEPTION(FAILED, "a request that is not whole words");
            kj::Promise<LaneReply> reply = nullptr;
            KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                             capnp::FlatArrayMessageReader reader(
                                 m_buffer.slice(0, packet->size / sizeof(capnp::word)),
                                 ipc::receive_options());
                             reply = m_server.serve_lane(reader.getRoot<proto::CallRequest>());
                         })) {
                return kj::mv(*e);
            }
            return reply.then([this, &lane](LaneReply answer) -> kj::Promise<void> {
                capnp::MallocMessageBuilder message(16);
                message.initRoot<proto::CallReply>().setCode(answer.code);
                int fd = answer.fd.get();
                auto fds = answer.fd ? kj::arrayPtr(&fd, 1) : kj::ArrayPtr<const int>();
                if (Status sent = ipc::send_message(lane.socket.get(), message, fds, MSG_DONTWAIT); !sent) {
                    if (sent.error().code == -EPIPE || sent.error().code == -ECONNRESET)
                        return kj::READY_NOW; // its thread is gone
                    return lane_failure("its answer cannot be sent: " + sent.error().message);
                }
                // The thread sends its next request only once it has read this answer, so the
                // lane is empty now: wait for it to become readable, without a receive that
                // would only say EAGAIN (one system call per call saved). The wait is armed
                // before the loop polls again, so the next request's edge cannot be missed. A
                // host that sends a request before reading its answer breaks that and stalls
                // only its own lane.
                return lane.observer.whenBecomesReadable().then([this, &lane]() { return serve(lane); });
            });
        }

        struct LogErrors final : kj::TaskSet::ErrorHandler {
            void taskFailed(kj::Exception&& e) override
            {
                log_error(
                    std::string("a plugin call lane failed unexpectedly: ") + e.getDescription().cStr());
            }
        };

        kj::UnixEventPort& m_port;
        Fd m_registry;
        CallbackServer& m_server;
        kj::Function<void(std::string)> m_violation;
        kj::Array<capnp::word> m_buffer; // every lane's request is read here, then copied out
        std::list<kj::Own<Lane>> m_lanes;
        kj::UnixEventPort::FdObserver m_registry_observer;
        LogErrors m_errors;
        kj::TaskSet m_tasks; // before m_lanes is destroyed: every task refers to a lane
        kj::Promise<void> m_accepting;
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
            HostCgroup cgroup, ChildProcess host, Fd channel, Fd output, Fd hook_lane, Fd call_registry)
            : m_env(env)
            , m_config(config)
            , m_cgroup(std::move(cgroup))
            , m_host(std::move(host))
            , m_connection(kj::heap<ipc::Connection>(
                  env.provider, std::move(channel), capnp::rpc::twoparty::Side::CLIENT))
            , m_client(m_connection->bootstrap().castAs<proto::PluginHost>())
            , m_callback(serve_calls(calls))
            , m_hook_lane(kj::heap<HookLane>(env.provider, std::move(hook_lane)))
            , m_call_lanes(kj::heap<CallLanes>(env.port, std::move(call_registry), *m_callback_server,
                  [this](std::string why) { blame(std::move(why)); }))
            , m_output(kj::heap<StderrForwarder>(
                  env.provider.wrapInputFd(output.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP),
                  config.name))
            , m_forwarding(m_output->run().eagerlyEvaluate([name = config.name](kj::Exception&& e) {
                log_warning(
                    "plugin " + name + ": its output is no longer forwarded: " + e.getDescription().cStr());
            }))
            , m_death(watch().fork())
            , m_cutting_lanes(m_connection->on_disconnect()
                                  .then([this]() {
                                      m_hook_lane->cut("the plugin host's connection broke");
                                      m_call_lanes = nullptr; // its threads' calls fail with -ESHUTDOWN
                                  })
                                  .eagerlyEvaluate(nullptr))
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
            request.setCallback(m_callback); // a copy: the call lanes are served by it too
            using Reply = capnp::Response<proto::PluginHost::InitializeResults>;
            return abandon_on_failure(kj::Promise<Reply>(request.send()))
                .then([this](Reply reply) -> Result<uint32_t> {
                    BH_TRY(ipc::to_status(reply.getOutcome()));
                    if (reply.getMajor() != proto::PLUGIN_HOST_MAJOR)
                        return Error { -EPROTONOSUPPORT,
                            "the plugin host speaks protocol " + std::to_string(reply.getMajor())
                                + ".x, the service " + std::to_string(proto::PLUGIN_HOST_MAJOR) + ".x" };
                    m_hooks_on_lane = reply.getHookLane();
                    uint32_t hooks = reply.getHooks();
                    return reply.getMinor() < 2 ? hooks & ~hooks_since_minor_2 : hooks;
                });
        }

        kj::Promise<host::HookOutcome> call(host::HookCall call) override
        {
            if (m_hooks_on_lane)
                return abandon_on_failure(m_hook_lane->call(call));
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
        // The plugin's calls, served for the connection (m_callback) and the call lanes alike.
        proto::PluginHostCallback::Client serve_calls(host::CallTarget& calls)
        {
            auto server = kj::heap<CallbackServer>(calls, [this](std::string why) { blame(std::move(why)); });
            m_callback_server = server.get();
            return kj::mv(server);
        }

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

        template<typename T> kj::Promise<host::HookOutcome> outcome_of(capnp::RemotePromise<T> reply)
        {
            return abandon_on_failure(kj::Promise<capnp::Response<T>>(kj::mv(reply))).then([](auto response) {
                return host::decode_outcome(response.getResult());
            });
        }

        // A call that fails while the host lives on (it answered with an exception, or its hook
        // lane broke) still means a broken host: unless it dies by itself within the grace period,
        // it is killed.
        template<typename T> kj::Promise<T> abandon_on_failure(kj::Promise<T> reply)
        {
            return reply.catch_([this](kj::Exception&& e) -> kj::Promise<T> {
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
        CallbackServer* m_callback_server = nullptr; // owned by m_callback, set with it
        proto::PluginHostCallback::Client m_callback;
        kj::Own<HookLane> m_hook_lane;
        kj::Own<CallLanes> m_call_lanes;
        bool m_hooks_on_lane = false; // the host said so in its answer to initialize
        kj::Own<StderrForwarder> m_output;
        kj::Promise<void> m_forwarding;
        std::string m_blame;
        std::string m_call_error; // the first call that failed, for the cause
        bool m_killed_by_us = false;
        kj::Promise<void> m_abandon = nullptr;
        kj::ForkedPromise<std::string> m_death;
        // The lanes live no longer than the connection: a host is one peer, whichever socket
        // it speaks on.
        kj::Promise<void> m_cutting_lanes;
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

    Result<std::array<Fd, 2>> socket_pair(int type = SOCK_STREAM)
    {
        int fds[2];
        if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) < 0)
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

// The service's end of the host template (plugin/host-template.h). Thread affinity: the
// service's loop, which also spawned it (its parent-death signal is tied to that thread).
class HostTemplate {
public:
    static Result<std::shared_ptr<HostTemplate>> start(int host_exe_fd)
    {
        int ends[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) < 0)
            return Error::from_errno(errno, "cannot create the host template's socket pair");
        Fd ours(ends[0]), theirs(ends[1]);
        Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!null)
            return Error::from_errno(errno, "cannot open /dev/null");
        SpawnPlan plan;
        plan.path = "bulkhead-pluginhost";
        plan.exec_fd = host_exe_fd;
        plan.argv = host::host_template_argv();
        plan.env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
        plan.fds = { { null.get(), 0 }, { STDOUT_FILENO, 1 }, { STDERR_FILENO, 2 }, { theirs.get(), 3 } };
        plan.die_with_parent = true;
        auto process = spawn_process(plan);
        if (!process)
            return Error { process.error().code,
                "cannot start the host template: " + process.error().message };
        log_info("plugin host template started (pid " + std::to_string(process->pid()) + ")");
        auto made = std::make_shared<HostTemplate>();
        made->m_process = std::move(process.value());
        made->m_socket = std::move(ours);
        return made;
    }

    // A host forked for `name`, with `fds` (host_template_fds of them, in the template's order).
    // Blocks the loop for the template's answer: a clone3 of a small single-threaded process,
    // well under a millisecond; a template that does not answer within 5 s is given up.
    Result<ChildProcess> fork_host(
        const std::string& name, bool core_dumps, std::array<int, host::host_template_fds> fds)
    {
        std::string request = (core_dumps ? "C" : "-") + name.substr(0, host::max_template_name);
        BH_TRY(ipc::send_packet(m_socket.get(),
            kj::arrayPtr(reinterpret_cast<const kj::byte*>(request.data()), request.size()),
            kj::arrayPtr(fds.data(), fds.size())));
        pollfd ready { m_socket.get(), POLLIN, 0 };
        int polled;
        do
            polled = poll(&ready, 1, 5000);
        while (polled < 0 && errno == EINTR);
        if (polled <= 0)
            return Error { -ETIMEDOUT, "the host template did not answer within 5 s" };
        int32_t answer = 0;
        auto packet = ipc::receive_packet(
            m_socket.get(), kj::arrayPtr(reinterpret_cast<kj::byte*>(&answer), sizeof(answer)), 1);
        if (!packet)
            return packet.take_error();
        if (packet->size != sizeof(answer))
            return Error { -EPROTO, "the host template closed its socket" };
        if (answer <= 0 || packet->fds.size() != 1)
            return Error { answer < 0 ? answer : -EPROTO,
                std::string("the host template could not fork a host: ")
                    + strerror(answer < 0 ? -answer : EPROTO) };
        return ChildProcess(answer, std::move(packet->fds.front()));
    }

    pid_t pid() const { return m_process.pid(); }

private:
    ChildProcess m_process; // killed and reaped with the last environment that holds it
    Fd m_socket;
};

pid_t host_template_pid(const PluginEnvironment& env)
{
    return env.host_template ? env.host_template->pid() : 0;
}

Result<kj::Own<PluginLink>> start_plugin_host(
    PluginEnvironment& env, const PluginConfig& config, host::CallTarget& calls)
{
    auto sockets = socket_pair();
    auto hook_lane = socket_pair();
    auto registry = socket_pair(SOCK_SEQPACKET);
    auto pipe = output_pipe();
    Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    for (auto* pair : { &sockets, &hook_lane, &registry })
        if (!*pair)
            return pair->take_error();
    if (!pipe || !null)
        return !pipe ? pipe.take_error() : Error::from_errno(errno, "cannot open /dev/null");
    auto cgroup = HostCgroup::create(config.name);
    if (!cgroup)
        return Error { cgroup.error().code,
            "cannot contain plugin '" + config.name + "': " + cgroup.error().message };
    if (config.max_processes > 0)
        if (Status limited = cgroup->limit_processes(config.max_processes); !limited)
            return Error { limited.error().code,
                "cannot limit plugin '" + config.name + "': " + limited.error().message };
    Result<ChildProcess> host = Error { -ENOEXEC, "no host template" };
    if (env.use_host_template && !env.host_template) {
        auto started = HostTemplate::start(env.host_exe_fd);
        if (started) {
            env.host_template = std::move(started.value());
        } else {
            log_warning(started.error().message + "; plugin hosts are exec'd instead");
            env.use_host_template = false;
        }
    }
    if (env.host_template) {
        host = env.host_template->fork_host(config.name, config.core_dumps,
            { null.get(), (*pipe)[1].get(), (*sockets)[1].get(), cgroup->fd(), (*hook_lane)[1].get(),
                (*registry)[1].get() });
        if (!host) {
            log_warning(host.error().message + "; plugin hosts are exec'd from now on");
            env.host_template.reset();
            env.use_host_template = false;
        }
    }
    if (!host) {
        SpawnPlan plan;
        plan.path = "bulkhead-pluginhost";
        plan.exec_fd = env.host_exe_fd;
        plan.argv = { "bulkhead-pluginhost", config.name };
        if (config.core_dumps)
            plan.argv.push_back("--core-dumps");
        plan.env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
        plan.fds = { { null.get(), 0 }, { (*pipe)[1].get(), 1 }, { (*pipe)[1].get(), 2 },
            { (*sockets)[1].get(), 3 }, { cgroup->fd(), 4 }, { (*hook_lane)[1].get(), 5 },
            { (*registry)[1].get(), 6 } };
        plan.die_with_parent = true;
        plan.cgroup_fd = cgroup->fd(); // born contained: no migration (the host checks, see containment)
        host = spawn_process(plan);
    }
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
        std::move(host.value()), std::move((*sockets)[0]), std::move((*pipe)[0]), std::move((*hook_lane)[0]),
        std::move((*registry)[0])));
}

kj::Own<PluginLink> load_in_process(const PluginConfig& config, kj::UnixEventPort& port)
{
    return kj::heap<InProcessLink>(config, port);
}

} // namespace bh::service
