// when_exited: an FdObserver on a pidfd.
#include "ipc/process-watch.h"

#include <cerrno>
#include <fcntl.h>
#include <kj/debug.h>

namespace bh::ipc {

kj::Promise<void> when_exited(kj::UnixEventPort& port, int pidfd)
{
    // epoll registers an fd number once; a private duplicate lets several waiters watch one process.
    kj::AutoCloseFd copy(fcntl(pidfd, F_DUPFD_CLOEXEC, 3));
    if (copy.get() < 0)
        return KJ_EXCEPTION(FAILED, "cannot duplicate a pidfd", errno);
    auto observer = kj::heap<kj::UnixEventPort::FdObserver>(
        port, copy.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto readable = observer->whenBecomesReadable();
    // The observer must unregister before its fd closes: the outer attachment is destroyed last.
    return readable.attach(kj::mv(observer)).attach(kj::mv(copy));
}

} // namespace bh::ipc
