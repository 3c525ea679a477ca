// bulkhead-pluginhost: runs one plugin for bulkheadd, isolated in its own process. main() wires
// the checks, the containment and the event loop; the work is in HostServer and PluginRuntime.
#include "base/fd.h"
#include "base/log.h"
#include "ipc/fd-cap.h"
#include "plugin/call-lanes.h"
#include "plugin/containment.h"
#include "plugin/host-server.h"

#include <csignal>
#include <fcntl.h>
#include <kj/async-unix.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

// What the service leaves us (plugin-link.cpp): the control connection, our cgroup, and the two
// lanes' sockets (proto/plugin_host.capnp, "Lanes").
constexpr int channel_fd = 3;
constexpr int cgroup_fd = 4;
constexpr int hook_lane_fd = 5;
constexpr int call_registry_fd = 6;
// A host the service started but never initialized must not linger.
constexpr auto initialize_deadline = 60 * kj::SECONDS;

} // namespace

int main(int argc, char** argv)
{
    std::string name = argc > 1 ? argv[1] : "?";
    auto channel = bh::host::adopt_service_socket(channel_fd, SOCK_STREAM, "service socket");
    auto hook_lane = bh::host::adopt_service_socket(hook_lane_fd, SOCK_STREAM, "hook lane");
    auto registry = bh::host::adopt_service_socket(call_registry_fd, SOCK_SEQPACKET, "call lane registry");
    for (auto* adopted : { &channel, &hook_lane, &registry })
        if (!*adopted) {
            bh::log_error("bulkhead-pluginhost: " + adopted->error().message);
            return 2;
        }
    // Before any plugin code (library constructors included) can run.
    bh::Fd cgroup(fcntl(cgroup_fd, F_DUPFD_CLOEXEC, call_registry_fd + 1));
    close(cgroup_fd);
    if (auto contained = bh::host::contain_descendants(std::move(cgroup)); !contained) {
        bh::log_error("bulkhead-pluginhost: " + contained.error().message);
        return 2;
    }
    bool core_dumps = argc > 2 && std::string(argv[2]) == "--core-dumps";
    if (auto hardened = bh::host::harden(core_dumps, call_registry_fd); !hardened) {
        bh::log_error("bulkhead-pluginhost: " + hardened.error().message);
        return 2;
    }
    bh::host::scrub_loader_environment();
    signal(SIGPIPE, SIG_IGN);
    bh::host::enable_call_lanes(std::move(registry.value()));

    auto io = kj::setupAsyncIo();
    auto server = kj::heap<bh::host::HostServer>(io.unixEventPort, std::move(hook_lane.value()));
    bh::host::HostServer& host = *server;
    bh::ipc::Connection connection(*io.lowLevelProvider, std::move(channel.value()),
        capnp::rpc::twoparty::Side::SERVER, capnp::Capability::Client(kj::mv(server)));
    auto deadline
        = io.provider->getTimer().afterDelay(initialize_deadline).then([&host]() -> kj::Promise<void> {
              if (!host.initialized()) {
                  bh::log_error("bulkhead-pluginhost: not initialized within 60 s; exiting");
                  return kj::READY_NOW;
              }
              return kj::NEVER_DONE;
          });
    connection.on_disconnect().exclusiveJoin(kj::mv(deadline)).wait(io.waitScope);
    // Plugin threads may still be running plugin code: leave without running destructors, so
    // none of them can touch freed memory. Our PID namespace dies with us.
    _exit(0);
}
