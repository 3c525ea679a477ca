// bulkhead-vminit: PID 1 of a VM ("vm") or of a distribution ("distribution NAME"); serves the service on
// fd 3.
#include "base/fd.h"
#include "base/log.h"
#include "ipc/fd-cap.h"
#include "vm/agent.h"

#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <kj/async-unix.h>

namespace {

constexpr int channel_fd = 3;
constexpr int root_tree_fd = 4;

// Inherited fds arrive without O_CLOEXEC (dup2 clears it); our programs must never inherit them.
bh::Fd adopt(int fd)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return bh::Fd();
    return bh::Fd(fd);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2 || (std::strcmp(argv[1], "vm") != 0 && std::strcmp(argv[1], "distribution") != 0)) {
        bh::log_error("usage: bulkhead-vminit vm|distribution NAME (started by bulkheadd only)");
        return 2;
    }
    auto role = std::strcmp(argv[1], "vm") == 0 ? bh::vm::AgentRole::Vm : bh::vm::AgentRole::Distribution;
    bh::Fd channel = adopt(channel_fd);
    if (!channel) {
        bh::log_error("bulkhead-vminit: no service channel on fd 3; it is started by bulkheadd only");
        return 2;
    }
    bh::Fd root_tree = role == bh::vm::AgentRole::Distribution ? adopt(root_tree_fd) : bh::Fd();
    signal(SIGPIPE, SIG_IGN);
    kj::UnixEventPort::captureSignal(SIGCHLD);
    auto io = kj::setupAsyncIo();
    bh::vm::Reaper reaper(io.unixEventPort);
    bh::ipc::Connection connection(*io.lowLevelProvider, std::move(channel),
        capnp::rpc::twoparty::Side::SERVER,
        capnp::Capability::Client(kj::heap<bh::vm::Agent>(role, reaper, std::move(root_tree))));
    // The service going away ends the VM: as PID 1, our exit kills everything in the namespace.
    reaper.run().exclusiveJoin(connection.on_disconnect()).wait(io.waitScope);
    return 0;
}
