// The control socket: accepts CLI connections, identifies callers by SO_PEERCRED, serves proto::Control.
#pragma once

#include "base/fd.h"
#include "service/service.h"

#include <kj/async-io.h>

namespace bh::service {

// Thread affinity: the service's event-loop thread. Each connection gets its own RPC system
// and Control object bound to the caller's credentials; a connection that sends garbage or
// hangs up mid-call is dropped without affecting anyone else.
class ControlServer final : private kj::TaskSet::ErrorHandler {
public:
    ControlServer(
        kj::LowLevelAsyncIoProvider& provider, kj::Timer& timer, Service& service, std::string version);

    // Accepts connections on the listening socket forever: when accepting fails (out of fds or
    // memory: too many clients at once), it retries shortly instead of ending.
    kj::Promise<void> listen(Fd listener);

private:
    kj::Promise<void> accept_loop(kj::ConnectionReceiver& receiver);
    void serve(kj::Own<kj::AsyncIoStream> stream);
    void taskFailed(kj::Exception&& exception) override;

    kj::LowLevelAsyncIoProvider& m_provider;
    kj::Timer& m_timer;
    Service& m_service;
    std::string m_version;
    kj::TaskSet m_connections { *this };
    bool m_accept_failing = false; // logs once per run of failures, not every retry
};

// Binds <runtime-dir>/control.sock (mode 0666), replacing a stale socket.
Result<Fd> bind_control_socket(const std::string& path);

} // namespace bh::service
