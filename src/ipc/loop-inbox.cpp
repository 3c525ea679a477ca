// LoopInbox: a Mailbox of deliveries, served on the loop.
#include "ipc/loop-inbox.h"

#include <kj/debug.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace bh::ipc {

namespace {

    void deliver_all(std::deque<std::unique_ptr<Delivery>> deliveries)
    {
        for (auto& delivery : deliveries)
            delivery->deliver();
    }

} // namespace

void post_delivery(InboxMailbox& mailbox, std::unique_ptr<Delivery> delivery)
{
    if (auto refused = mailbox.post(std::move(delivery))) {
        Delivery* leaked = refused->release();
#if defined(__SANITIZE_ADDRESS__)
        __lsan_ignore_object(leaked); // on purpose, see the header
#endif
        (void)leaked;
    }
}

LoopInbox::LoopInbox(kj::UnixEventPort& port)
    : m_shared(std::make_shared<InboxMailbox>(Consumer::loop))
    , m_watch(m_shared->serve_on(port, deliver_all))
{
}

LoopInbox::~LoopInbox()
{
    deliver_all(m_shared->close()); // nothing joins the queue after this
}

} // namespace bh::ipc
