// when_exited: an FdObserver on a pidfd.
#include "ipc/process-watch.h"

namespace bh::ipc {

kj::Promise<void> when_exited(kj::UnixEventPort& port, int pidfd)
{
    auto observer = kj::heap<kj::UnixEventPort::FdObserver>(port, pidfd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto readable = observer->whenBecomesReadable();
    return readable.attach(kj::mv(observer));
}

} // namespace bh::ipc
