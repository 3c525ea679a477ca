// HostServer: the PluginHost end of proto/plugin_host.capnp inside bulkhead-pluginhost.
#pragma once

#include "plugin/plugin-runtime.h"

#include <proto/plugin_host.capnp.h>

namespace bh::host {

// Thread affinity: the host's IPC event-loop thread. Plugin code runs on the runtime's hook
// thread; the plugin's calls back arrive through the stubs and leave as PluginHostCallback calls.
class HostServer final : public proto::PluginHost::Server, public CallTarget {
public:
    // `hook_lane`: where the service sends hooks once the plugin is loaded (served by the hook
    // thread itself; proto/plugin_host.capnp, "Lanes").
    HostServer(kj::UnixEventPort& port, Fd hook_lane)
        : m_port(port)
        , m_hook_lane(std::move(hook_lane))
    {
    }
    ~HostServer() noexcept(false) override;

    bool initialized() const { return m_runtime != nullptr; }

    // CallTarget: the plugin's service functions, forwarded to the service.
    kj::Promise<int> mount_folder(uint32_t session, std::string host_path, std::string vm_path,
        bool read_only, std::string name) override;
    kj::Promise<Result<Fd>> execute(uint32_t session, std::optional<Uuid> distro, std::string path,
        std::vector<std::string> argv) override;
    kj::Promise<int> container_mount(
        uint32_t session, std::string host_path, std::string mountpoint, bool read_only) override;
    kj::Promise<int> container_unmount(uint32_t session, std::string mountpoint) override;
    kj::Promise<Result<ProcessStart>> create_process(uint32_t session, std::string executable,
        std::vector<std::string> argv, std::vector<std::string> env) override;

protected:
    kj::Promise<void> initialize(InitializeContext context) override;
    kj::Promise<void> onVmStarted(OnVmStartedContext context) override;
    kj::Promise<void> onVmStopping(OnVmStoppingContext context) override;
    kj::Promise<void> onDistributionStarted(OnDistributionStartedContext context) override;
    kj::Promise<void> onDistributionStopping(OnDistributionStoppingContext context) override;
    kj::Promise<void> onDistributionRegistered(OnDistributionRegisteredContext context) override;
    kj::Promise<void> onDistributionUnregistered(OnDistributionUnregisteredContext context) override;
    kj::Promise<void> onContainerSessionCreated(OnContainerSessionCreatedContext context) override;
    kj::Promise<void> onContainerSessionStopping(OnContainerSessionStoppingContext context) override;
    kj::Promise<void> onContainerVmStarted(OnContainerVmStartedContext context) override;
    kj::Promise<void> onContainerVmStopping(OnContainerVmStoppingContext context) override;
    kj::Promise<void> onContainerStarted(OnContainerStartedContext context) override;
    kj::Promise<void> onContainerStopping(OnContainerStoppingContext context) override;
    kj::Promise<void> onImageCreated(OnImageCreatedContext context) override;
    kj::Promise<void> onImageDeleted(OnImageDeletedContext context) override;

private:
    template<typename Context> kj::Promise<void> run_distro_hook(Hook hook, Context context);
    template<typename Context> kj::Promise<void> run_container_hook(Hook hook, Context context);
    // A container hook that also carries a text (the container and image hooks).
    template<typename Context> kj::Promise<void> run_text_hook(Hook hook, Context context);
    kj::Promise<void> run(HookCall call, proto::HookResult::Builder result);

    kj::UnixEventPort& m_port;
    Fd m_hook_lane; // handed to the hook thread after a successful load
    kj::Own<PluginRuntime> m_runtime;
    kj::Maybe<proto::PluginHostCallback::Client> m_callback;
    bool m_initializing = false;
};

} // namespace bh::host
