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
    return loaded.then([context](Result<uint32_t> hooks) mutable {
        auto results = context.getResults();
        if (!hooks)
            return ipc::set_outcome(results.initOutcome(), hooks.error(), "initialize");
        results.setHooks(hooks.value());
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

} // namespace bh::host
