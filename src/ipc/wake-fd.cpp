// WakeFd and WakeWatch: an eventfd written by other threads, read by the loop.
#include "ipc/wake-fd.h"

#include <cerrno>
#include <kj/debug.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace bh::ipc {

WakeFd::WakeFd()
    : m_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
    KJ_REQUIRE(m_fd.get() >= 0, "cannot create an eventfd to wake an event loop", errno);
}

void WakeFd::ring() const
{
    uint64_t one = 1;
    (void)!::write(m_fd.get(), &one, sizeof(one));
}

WakeWatch::WakeWatch(kj::UnixEventPort& port, const WakeFd& wake, kj::Function<void()> on_wake)
    : m_fd(wake.fd())
    , m_on_wake(kj::mv(on_wake))
    , m_observer(port, m_fd, kj::UnixEventPort::FdObserver::OBSERVE_READ)
{
    m_watching = watch().eagerlyEvaluate(nullptr);
}

kj::Promise<void> WakeWatch::watch()
{
    return m_observer.whenBecomesReadable().then([this]() {
        uint64_t count;
        (void)!::read(m_fd, &count, sizeof(count)); // resets the eventfd; EAGAIN is fine
        m_on_wake();
        return watch();
    });
}

} // namespace bh::ipc
