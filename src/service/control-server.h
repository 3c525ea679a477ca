// The control socket: accepts CLI connections, identifies callers by SO_PEERCRED, serves proto::Control.
#pragma once

#include "base/fd.h"
#include "service/service.h"

#include <array>
#include <kj/async-io.h>
#include <map>

namespace bh::service {

// What each uid holds at once through the control socket, against the admin's [limits]: open
// connections, calls in progress, registrations in progress. Thread affinity: the event loop.
class UserUsage {
public:
    enum class Kind { connection, call, registration };
    explicit UserUsage(const UserLimits& limits)
        : m_limits(limits)
    {
    }
    // One more of `kind` for `uid`, held until the returned object is destroyed; fails with
    // -EUSERS (naming the limit and its [limits] key) when the user already holds the limit.
    Result<kj::Own<void>> take(uid_t uid, Kind kind);

private:
    using Counts = std::array<uint32_t, 3>; // indexed by Kind
    const UserLimits& m_limits;
    std::map<uid_t, Counts> m_counts;
};

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
    UserUsage m_usage; // before m_connections: what the connections hold is released into it
    kj::TaskSet m_connections { *this };
    bool m_accept_failing = false; // logs once per run of failures, not every retry
    time_t m_last_refusal_logged = 0; // connections over a user's limit: logged once a second
};

// Binds <runtime-dir>/control.sock (mode 0666), replacing a stale socket.
Result<Fd> bind_control_socket(const std::string& path);

} // namespace bh::service
