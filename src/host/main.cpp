// bulkhead-pluginhost: runs one plugin for bulkheadd, isolated in its own process. main() wires
// the checks, the containment and the event loop; the work is in HostServer and PluginRuntime.
#include "base/fd.h"
#include "base/log.h"
#include "ipc/fd-cap.h"
#include "plugin/containment.h"
#include "plugin/host-server.h"

#include <csignal>
#include <fcntl.h>
#include <kj/async-unix.h>
#include <unistd.h>

namespace {

constexpr int channel_fd = 3;
constexpr int cgroup_fd = 4;
// A host the service started but never initialized must not linger.
constexpr auto initialize_deadline = 60 * kj::SECONDS;

} // namespace

int main(int argc, char** argv)
{
    std::string name = argc > 1 ? argv[1] : "?";
    auto channel = bh::host::adopt_service_channel(channel_fd);
    if (!channel) {
        bh::log_error("bulkhead-pluginhost: " + channel.error().message);
        return 2;
    }
    // Before any plugin code (library constructors included) can run.
    bh::Fd cgroup(fcntl(cgroup_fd, F_DUPFD_CLOEXEC, 5));
    close(cgroup_fd);
    if (auto contained = bh::host::contain_descendants(std::move(cgroup)); !contained) {
        bh::log_error("bulkhead-pluginhost: " + contained.error().message);
        return 2;
    }
    bool core_dumps = argc > 2 && std::string(argv[2]) == "--core-dumps";
    if (auto hardened = bh::host::harden(core_dumps); !hardened) {
        bh::log_error("bulkhead-pluginhost: " + hardened.error().message);
        return 2;
    }
    bh::host::scrub_loader_environment();
    signal(SIGPIPE, SIG_IGN);

    auto io = kj::setupAsyncIo();
    auto server = kj::heap<bh::host::HostServer>(io.unixEventPort);
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
