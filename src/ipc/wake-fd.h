// WakeFd and WakeWatch: how other threads wake one event loop (an eventfd the loop watches).
#pragma once

#include "base/fd.h"

#include <kj/async-unix.h>
#include <kj/function.h>

namespace bh::ipc {

// An eventfd (CLOEXEC, non-blocking). Rings coalesce: many rings before the loop looks are one wake.
class WakeFd {
public:
    WakeFd(); // throws (KJ_REQUIRE) if no eventfd can be made
    // Any thread. Never blocks: a full counter already means "wake up".
    void ring() const;
    int fd() const { return m_fd.get(); }

private:
    Fd m_fd;
};

// On the loop's thread: after each wake, resets the eventfd and runs `on_wake`, which must take
// everything queued so far (a ring that arrives while it runs wakes the loop again).
class WakeWatch {
public:
    WakeWatch(kj::UnixEventPort& port, const WakeFd& wake, kj::Function<void()> on_wake);

private:
    kj::Promise<void> watch();

    int m_fd;
    kj::Function<void()> m_on_wake;
    kj::UnixEventPort::FdObserver m_observer;
    kj::Promise<void> m_watching = nullptr; // destroyed before m_observer
};

} // namespace bh::ipc
