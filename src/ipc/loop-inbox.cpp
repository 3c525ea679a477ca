// LoopInbox: a mutex-guarded queue of deliveries and an eventfd that wakes the loop.
#include "ipc/loop-inbox.h"

#include <kj/debug.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <sys/eventfd.h>
#include <unistd.h>

namespace bh::ipc {

namespace {

    std::shared_ptr<InboxShared> make_shared_side()
    {
        auto shared = std::make_shared<InboxShared>();
        shared->wake = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        KJ_REQUIRE(shared->wake.get() >= 0, "cannot create an eventfd for a loop inbox", errno);
        return shared;
    }

} // namespace

void post_delivery(InboxShared& shared, std::unique_ptr<Delivery> delivery)
{
    {
        std::lock_guard lock(shared.mutex);
        if (shared.closed) {
            Delivery* leaked = delivery.release();
#if defined(__SANITIZE_ADDRESS__)
            __lsan_ignore_object(leaked); // on purpose, see the header
#endif
            (void)leaked;
            return;
        }
        shared.queue.push_back(std::move(delivery));
    }
    uint64_t one = 1;
    (void)!::write(shared.wake.get(), &one, sizeof(one));
}

LoopInbox::LoopInbox(kj::UnixEventPort& port)
    : m_shared(make_shared_side())
    , m_observer(port, m_shared->wake.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ)
{
    m_pump = pump().eagerlyEvaluate(nullptr);
}

LoopInbox::~LoopInbox()
{
    std::vector<std::unique_ptr<Delivery>> queued;
    {
        std::lock_guard lock(m_shared->mutex);
        m_shared->closed = true;
        queued.swap(m_shared->queue);
    }
    for (auto& delivery : queued)
        delivery->deliver();
}

void LoopInbox::deliver_queued()
{
    uint64_t count;
    (void)!::read(m_shared->wake.get(), &count, sizeof(count)); // resets the eventfd; EAGAIN is fine
    std::vector<std::unique_ptr<Delivery>> queued;
    {
        std::lock_guard lock(m_shared->mutex);
        queued.swap(m_shared->queue);
    }
    for (auto& delivery : queued)
        delivery->deliver();
}

kj::Promise<void> LoopInbox::pump()
{
    return m_observer.whenBecomesReadable().then([this]() {
        deliver_queued();
        return pump();
    });
}

} // namespace bh::ipc
