// HostServer: initialize, hooks, and the plugin's calls back to the service.
#include "plugin/host-server.h"

#include "base/log.h"
#include "ipc/fd-cap.h"
#include "plugin/hook-codec.h"

namespace bh::host {

namespace {

    Error not_initialized()
    {
        return Error { -EPROTO, "the plugin host was not initialized" };
    }

} // namespace

HostServer::~HostServer() noexcept(false)
{
    // Nothing to drain here: the host _exits when the service hangs up, without ever
    // destroying its loop, so calls in flight need not finish first.
    (void)unroute_stubs();
}

kj::Promise<void> HostServer::initialize(InitializeContext context)
{
    auto params = context.getParams();
    auto results = context.getResults();
    results.setMajor(proto::PLUGIN_HOST_MAJOR);
    results.setMinor(proto::PLUGIN_HOST_MINOR);
    if (params.getMajor() != proto::PLUGIN_HOST_MAJOR) {
        ipc::set_outcome(results.initOutcome(),
            { -EPROTONOSUPPORT,
                "the plugin host speaks protocol " + std::to_string(proto::PLUGIN_HOST_MAJOR)
                    + ".x, the service " + std::to_string(params.getMajor()) + "."
                    + std::to_string(params.getMinor()) },
            "initialize");
        return kj::READY_NOW;
    }
    if (m_initializing || m_runtime) {
        ipc::set_outcome(
            results.initOutcome(), { -EALREADY, "the plugin host is already initialized" }, "initialize");
        return kj::READY_NOW;
    }
    m_initializing = true;
    std::string name = params.getPluginName().cStr();
    auto v = params.getServiceVersion();
    m_callback = params.getCallback();
    route_stubs_to(*this, { v.getMajor(), v.getMinor(), v.getRevision() }, m_port);
    m_runtime = kj::heap<PluginRuntime>(name, m_port);
    std::string path = params.getPluginPath().cStr();
    auto loaded = ipc::unwrap_fd(params.getPlugin())
                      .then([this, path](Result<Fd> memfd) mutable -> kj::Promise<Result<uint32_t>> {
                          if (!memfd)
                              return Result<uint32_t>(memfd.error());
                          if (Status sealed = require_sealed(memfd.value(), path); !sealed)
                              return Result<uint32_t>(sealed.error());
                          return m_runtime->load(std::move(memfd.value()), path);
                      });
    return loaded.then([this, context](Result<uint32_t> hooks) mutable {
        auto results = context.getResults();
        if (!hooks)
            return ipc::set_outcome(results.initOutcome(), hooks.error(), "initialize");
        results.setHooks(hooks.value());
        if (m_hook_lane) {
            m_runtime->serve_hook_lane(std::move(m_hook_lane));
            results.setHookLane(true);
        }
    });
}

kj::Promise<void> HostServer::run(HookCall call, proto::HookResult::Builder result)
{
    if (!m_runtime)
        return KJ_EXCEPTION(FAILED, not_initialized().message);
    return m_runtime->run(std::move(call)).then([result](HookOutcome outcome) mutable {
        encode_outcome(outcome, result);
    });
}

kj::Promise<void> HostServer::onVmStarted(OnVmStartedContext context)
{
    auto params = context.getParams();
    HookCall call { Hook::vm_started, decode_session(params.getSession()), params.getCustomConfigFlags() };
    return run(std::move(call), context.getResults().initResult());
}

kj::Promise<void> HostServer::onVmStopping(OnVmStoppingContext context)
{
    HookCall call { Hook::vm_stopping, decode_session(context.getParams().getSession()) };
    return run(std::move(call), context.getResults().initResult());
}

template<typename Context> kj::Promise<void> HostServer::run_distro_hook(Hook hook, Context context)
{
    auto params = context.getParams();
    auto distro = decode_distro(params.getDistribution());
    if (!distro)
        return KJ_EXCEPTION(FAILED, distro.error().message);
    HookCall call { hook, decode_session(params.getSession()), 0, std::move(distro.value()) };
    return run(std::move(call), context.getResults().initResult());
}

kj::Promise<void> HostServer::onDistributionStarted(OnDistributionStartedContext context)
{
    return run_distro_hook(Hook::distribution_started, context);
}

kj::Promise<void> HostServer::onDistributionStopping(OnDistributionStoppingContext context)
{
    return run_distro_hook(Hook::distribution_stopping, context);
}

kj::Promise<void> HostServer::onDistributionRegistered(OnDistributionRegisteredContext context)
{
    return run_distro_hook(Hook::distribution_registered, context);
}

kj::Promise<void> HostServer::onDistributionUnregistered(OnDistributionUnregisteredContext context)
{
    return run_distro_hook(Hook::distribution_unregistered, context);
}

template<typename Context> kj::Promise<void> HostServer::run_container_hook(Hook hook, Context context)
{
    HookCall call { hook };
    call.container = decode_container(context.getParams().getSession());
    return run(std::move(call), context.getResults().initResult());
}

template<typename Context> kj::Promise<void> HostServer::run_text_hook(Hook hook, Context context)
{
    auto params = context.getParams();
    auto text = decode_hook_text(params.getText());
    if (!text)
        return KJ_EXCEPTION(FAILED, text.error().message);
    HookCall call { hook };
    call.container = decode_container(params.getSession());
    call.text = std::move(text.value());
    return run(std::move(call), context.getResults().initResult());
}

kj::Promise<void> HostServer::onContainerSessionCreated(OnContainerSessionCreatedContext context)
{
    return run_container_hook(Hook::container_session_created, context);
}

kj::Promise<void> HostServer::onContainerSessionStopping(OnContainerSessionStoppingContext context)
{
    return run_container_hook(Hook::container_session_stopping, context);
}

kj::Promise<void> HostServer::onContainerVmStarted(OnContainerVmStartedContext context)
{
    return run_container_hook(Hook::container_vm_started, context);
}

kj::Promise<void> HostServer::onContainerVmStopping(OnContainerVmStoppingContext context)
{
    return run_container_hook(Hook::container_vm_stopping, context);
}

kj::Promise<void> HostServer::onContainerStarted(OnContainerStartedContext context)
{
    return run_text_hook(Hook::container_started, context);
}

kj::Promise<void> HostServer::onContainerStopping(OnContainerStoppingContext context)
{
    return run_text_hook(Hook::container_stopping, context);
}

kj::Promise<void> HostServer::onImageCreated(OnImageCreatedContext context)
{
    return run_text_hook(Hook::image_created, context);
}

kj::Promise<void> HostServer::onImageDeleted(OnImageDeletedContext context)
{
    return run_text_hook(Hook::image_deleted, context);
}

kj::Promise<int> HostServer::mount_folder(
    uint32_t session, std::string host_path, std::string vm_path, bool read_only, std::string name)
{
    KJ_IF_MAYBE (callback, m_callback) {
        auto request = callback->mountFolderRequest();
        request.setSession(session);
        request.setHostPath(host_path);
        request.setVmPath(vm_path);
        request.setReadOnly(read_only);
        request.setName(name);
        return request.send().then([](auto reply) { return static_cast<int>(reply.getCode()); });
    }
    return -ESHUTDOWN;
}

kj::Promise<Result<Fd>> HostServer::execute(
    uint32_t session, std::optional<Uuid> distro, std::string path, std::vector<std::string> argv)
{
    KJ_IF_MAYBE (callback, m_callback) {
        auto request = callback->executeBinaryRequest();
        request.setSession(session);
        if (distro)
            request.setDistribution(capnp::Data::Reader(distro->bytes.data(), distro->bytes.size()));
        request.setPath(path);
        auto list = request.initArgv(argv.size());
        for (size_t i = 0; i < argv.size(); ++i)
            list.set(i, argv[i]);
        return request.send().then([](auto reply) -> kj::Promise<Result<Fd>> {
            if (reply.getCode() != 0)
                return Result<Fd>(Error { reply.getCode() < 0 ? reply.getCode() : -EPROTO, "" });
            return ipc::unwrap_fd(reply.getSocket());
        });
    }
    return Result<Fd>(Error { -ESHUTDOWN, "the service connection is closed" });
}

kj::Promise<int> HostServer::container_mount(
    uint32_t session, std::string host_path, std::string mountpoint, bool read_only)
{
    KJ_IF_MAYBE (callback, m_callback) {
        auto request = callback->containerMountFolderRequest();
        request.setSession(session);
        request.setHostPath(host_path);
        request.setMountpoint(mountpoint);
        request.setReadOnly(read_only);
        return request.send().then([](auto reply) { return static_cast<int>(reply.getCode()); });
    }
    return -ESHUTDOWN;
}

kj::Promise<int> HostServer::container_unmount(uint32_t session, std::string mountpoint)
{
    KJ_IF_MAYBE (callback, m_callback) {
        auto request = callback->containerUnmountFolderRequest();
        request.setSession(session);
        request.setMountpoint(mountpoint);
        return request.send().then([](auto reply) { return static_cast<int>(reply.getCode()); });
    }
    return -ESHUTDOWN;
}

namespace {

    // The service's process, held through its capability: dropping it kills the program.
    class RemoteProcess final : public ProcessHandle {
    public:
        explicit RemoteProcess(proto::ContainerProcess::Client process)
            : m_process(kj::mv(process))
        {
        }
        kj::Promise<Result<int>> exit_code() override
        {
            return m_process.exitCodeRequest().send().then([](auto reply) -> Result<int> {
                if (reply.getCode() != 0)
                    return Error { reply.getCode() < 0 ? reply.getCode() : -EPROTO, "" };
                return reply.getExitCode();
            });
        }

    private:
        proto::ContainerProcess::Client m_process;
    };

} // namespace

kj::Promise<Result<ProcessStart>> HostServer::create_process(
    uint32_t session, std::string executable, std::vector<std::string> argv, std::vector<std::string> env)
{
    KJ_IF_MAYBE (callback, m_callback) {
        auto request = callback->containerCreateProcessRequest();
        request.setSession(session);
        request.setExecutable(executable);
        auto args = request.initArgv(argv.size());
        for (size_t i = 0; i < argv.size(); ++i)
            args.set(i, argv[i]);
        auto vars = request.initEnv(env.size());
        for (size_t i = 0; i < env.size(); ++i)
            vars.set(i, env[i]);
        return request.send().then([](auto reply) -> kj::Promise<Result<ProcessStart>> {
            if (reply.getCode() != 0)
                return Result<ProcessStart>(Error { reply.getCode() < 0 ? reply.getCode() : -EPROTO, "" });
            auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(4);
            fds.add(ipc::unwrap_fd(reply.getStdin()));
            fds.add(ipc::unwrap_fd(reply.getStdout()));
            fds.add(ipc::unwrap_fd(reply.getStderr()));
            fds.add(ipc::unwrap_fd(reply.getExit()));
            auto process = reply.getProcess();
            return kj::joinPromises(fds.finish())
                .then([process](kj::Array<Result<Fd>> fds) mutable -> Result<ProcessStart> {
                    for (auto& fd : fds)
                        if (!fd)
                            return fd.error();
                    return ProcessStart { kj::heap<RemoteProcess>(kj::mv(process)),
                        { std::move(fds[0].value()), std::move(fds[1].value()), std::move(fds[2].value()) },
                        std::move(fds[3].value()) };
                });
        });
    }
    return Result<ProcessStart>(Error { -ESHUTDOWN, "the service connection is closed" });
}

} // namespace bh::host
