// LoopInbox: hands results from any thread back to one event loop.
#pragma once

#include "ipc/mailbox.h"

#include <kj/async-unix.h>
#include <kj/debug.h>
#include <memory>
#include <optional>
#include <vector>

namespace bh::ipc {

// One result on its way to the loop. Created and destroyed on the loop's thread; in between a
// worker thread owns it and may only fill in its value before posting it back.
class Delivery {
public:
    virtual ~Delivery() noexcept(false) = default; // kj::Own members may throw
    virtual void deliver() = 0; // on the loop
};

// What posting threads share with the loop, alive as long as any Sender is.
using InboxMailbox = Mailbox<std::unique_ptr<Delivery>>;

// Any thread: queues `delivery` and wakes the loop. Once the inbox is closed the delivery is
// leaked on purpose: destroying it here would touch the loop's promise from the wrong thread.
void post_delivery(InboxMailbox& mailbox, std::unique_ptr<Delivery> delivery);

// The sending half of an InboxResult: moves to a worker thread, which calls send() once.
// Dropped unsent (a job that never ran), it rejects the promise instead.
template<typename T> class Sender {
public:
    class Slot final : public Delivery {
    public:
        explicit Slot(kj::Own<kj::PromiseFulfiller<T>> fulfiller)
            : fulfiller(kj::mv(fulfiller))
        {
        }
        void deliver() override
        {
            if (value)
                fulfiller->fulfill(std::move(*value));
            else
                fulfiller->reject(KJ_EXCEPTION(DISCONNECTED, "the worker thread dropped its result"));
        }
        kj::Own<kj::PromiseFulfiller<T>> fulfiller; // the loop's thread only
        std::optional<T> value; // written by the worker before posting
    };

    Sender(std::shared_ptr<InboxMailbox> shared, std::unique_ptr<Slot> slot)
        : m_shared(std::move(shared))
        , m_slot(std::move(slot))
    {
    }
    Sender(Sender&&) noexcept = default;
    Sender& operator=(Sender&&) = delete;
    ~Sender()
    {
        if (m_slot)
            post_delivery(*m_shared, std::move(m_slot));
    }
    void send(T value)
    {
        m_slot->value = std::move(value);
        post_delivery(*m_shared, std::move(m_slot));
    }

private:
    std::shared_ptr<InboxMailbox> m_shared;
    std::unique_ptr<Slot> m_slot;
};

template<typename T> struct InboxResult {
    kj::Promise<T> promise;
    Sender<T> sender;
};

// Lives on one loop's thread and is destroyed there. Results come back through a Mailbox (a
// Mutex and an eventfd) rather than kj's cross-thread fulfillers: Debian's libkj is not
// instrumented, so ThreadSanitizer cannot see kj's own handoffs and reports them as races; a
// std::mutex it sees.
// Destroying the inbox delivers what is queued; results sent later are dropped (see above).
class LoopInbox {
public:
    explicit LoopInbox(kj::UnixEventPort& port);
    ~LoopInbox();
    LoopInbox(const LoopInbox&) = delete;
    LoopInbox& operator=(const LoopInbox&) = delete;

    // On the loop's thread: a promise for a value some other thread will send.
    template<typename T> InboxResult<T> expect()
    {
        auto paf = kj::newPromiseAndFulfiller<T>();
        return { kj::mv(paf.promise),
            Sender<T>(m_shared, std::make_unique<typename Sender<T>::Slot>(kj::mv(paf.fulfiller))) };
    }

private:
    std::shared_ptr<InboxMailbox> m_shared;
    kj::Own<WakeWatch> m_watch;
};

} // namespace bh::ipc
