// LoopInbox: a mutex-guarded queue of deliveries and a WakeFd that wakes the loop.
#include "ipc/loop-inbox.h"

#include <kj/debug.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace bh::ipc {

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
    shared.wake.ring();
}

LoopInbox::LoopInbox(kj::UnixEventPort& port)
    : m_shared(std::make_shared<InboxShared>())
    , m_watch(port, m_shared->wake, [this]() { deliver_queued(); })
{
}

LoopInbox::~LoopInbox()
{
    {
        std::lock_guard lock(m_shared->mutex);
        m_shared->closed = true; // nothing joins the queue after this
    }
    deliver_queued();
}

void LoopInbox::deliver_queued()
{
    std::vector<std::unique_ptr<Delivery>> queued;
    {
        std::lock_guard lock(m_shared->mutex);
        queued.swap(m_shared->queue);
    }
    for (auto& delivery : queued)
        delivery->deliver();
}

} // namespace bh::ipc
