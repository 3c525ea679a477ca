// bulkhead-pluginhost: runs one plugin for bulkheadd, isolated in its own process. host_main()
// wires the checks, the containment and the event loop; the work is in HostServer and
// PluginRuntime. With --template it is instead the service's host template: it forks hosts that
// are ready to run host_main() without an exec (plugin/host-template.h).
#include "base/fd.h"
#include "base/log.h"
#include "ipc/fd-cap.h"
#include "plugin/call-lanes.h"
#include "plugin/containment.h"
#include "plugin/host-server.h"
#include "plugin/host-template.h"

#include <csignal>
#include <cstring>
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

[[noreturn]] void host_main(const std::string& name, bool core_dumps)
{
    (void)name; // named by the service in every line it forwards; here only for a debugger
    auto channel = bh::host::adopt_service_socket(channel_fd, SOCK_STREAM, "service socket");
    auto hook_lane = bh::host::adopt_service_socket(hook_lane_fd, SOCK_STREAM, "hook lane");
    auto registry = bh::host::adopt_service_socket(call_registry_fd, SOCK_SEQPACKET, "call lane registry");
    for (auto* adopted : { &channel, &hook_lane, &registry })
        if (!*adopted) {
            bh::log_error("bulkhead-pluginhost: " + adopted->error().message);
            _exit(2);
        }
    // Before any plugin code (library constructors included) can run.
    bh::Fd cgroup(fcntl(cgroup_fd, F_DUPFD_CLOEXEC, call_registry_fd + 1));
    close(cgroup_fd);
    if (auto contained = bh::host::contain_descendants(std::move(cgroup)); !contained) {
        bh::log_error("bulkhead-pluginhost: " + contained.error().message);
        _exit(2);
    }
    if (auto hardened = bh::host::harden(core_dumps, call_registry_fd); !hardened) {
        bh::log_error("bulkhead-pluginhost: " + hardened.error().message);
        _exit(2);
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

} // namespace

int main(int argc, char** argv)
{
    if (argc >= 2 && std::string(argv[1]) == "--template") {
        char* end = argv[argc - 1] + strlen(argv[argc - 1]) + 1; // the strings are contiguous
        bh::host::run_host_template(host_main, kj::arrayPtr(argv[0], end)); // never returns
    }
    host_main(argc > 1 ? argv[1] : "?", argc > 2 && std::string(argv[2]) == "--core-dumps");
}
