// Mailbox: the one way work crosses threads in our processes. Posted from any thread, taken by
// one consumer, closed and drained by its owner.
#pragma once

#include "base/mutex.h"
#include "ipc/wake-fd.h"

#include <deque>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <kj/function.h>
#include <optional>

namespace bh::ipc {

// Who takes what is posted, and how it is woken.
enum class Consumer {
    loop, // an event loop: an eventfd it watches (serve_on), then take()
    thread, // a thread of its own, blocked in wait()
};

// A queue of T that any thread may post to and one consumer takes from, in order. Its state (the
// items and whether it is open) is guarded by one Mutex, held only to move items in or out: T's
// constructors and destructors, and whatever the consumer does with an item, run outside it.
//
// Closing is how an owner ends it: later posts are refused (the item goes back to the poster,
// who decides what a refused item means), a consumer blocked in wait() returns, and what was
// queued goes to the closer, to finish or drop on its own terms ("drain"). An owner that outlives
// its posters may reopen() it.
//
// Used by: the stub route (plugin threads → the host's loop, plugin/stub-route.cpp), LoopInbox
// (worker threads → a loop, ipc/loop-inbox.h) and the hook queue (a loop → a plugin's hook
// thread, plugin/plugin-runtime.cpp).
template<typename T> class Mailbox {
public:
    enum class Start { open, closed };

    explicit Mailbox(Consumer consumer, Start start = Start::open)
        : m_closed(start == Start::closed)
    {
        if (consumer == Consumer::loop)
            m_wake.emplace();
    }
    Mailbox(const Mailbox&) = delete;
    Mailbox& operator=(const Mailbox&) = delete;

    // Any thread: queues `item` and wakes the consumer. Once closed, hands `item` back instead.
    [[nodiscard]] std::optional<T> post(T item) BH_EXCLUDES(m_mutex)
    {
        {
            MutexLock lock(m_mutex);
            if (m_closed)
                return std::optional<T>(std::move(item));
            m_items.push_back(std::move(item));
        }
        // After unlocking: a consumer woken under the lock would only block on it again.
        if (m_wake)
            m_wake->ring();
        else
            m_ready.notify_one();
        return std::nullopt;
    }

    // The consumer: everything queued so far, in the order it was posted.
    std::deque<T> take() BH_EXCLUDES(m_mutex)
    {
        std::deque<T> items;
        MutexLock lock(m_mutex);
        items.swap(m_items);
        return items;
    }

    // A thread consumer (Consumer::thread): blocks for the next item; nothing once closed.
    std::optional<T> wait() BH_EXCLUDES(m_mutex)
    {
        MutexLock lock(m_mutex);
        while (!m_closed && m_items.empty())
            m_ready.wait(m_mutex);
        if (m_closed)
            return std::nullopt;
        std::optional<T> item(std::move(m_items.front()));
        m_items.pop_front();
        return item;
    }

    // The owner, any thread: refuses later posts and wakes a waiting consumer. Returns what was
    // queued and not taken, which is now the caller's.
    [[nodiscard]] std::deque<T> close() BH_EXCLUDES(m_mutex)
    {
        std::deque<T> items;
        {
            MutexLock lock(m_mutex);
            m_closed = true;
            items.swap(m_items);
        }
        m_ready.notify_all();
        return items;
    }

    // The owner: accepts posts again.
    void reopen() BH_EXCLUDES(m_mutex)
    {
        MutexLock lock(m_mutex);
        m_closed = false;
    }

    // A loop consumer, on its loop's thread: after each wake, `deliver` gets what take() returns
    // (possibly nothing: a ring can outlive what it announced). Destroy the watch before the
    // mailbox.
    kj::Own<WakeWatch> serve_on(kj::UnixEventPort& port, kj::Function<void(std::deque<T>)> deliver)
    {
        KJ_REQUIRE(m_wake.has_value(), "only a mailbox made for a loop is served on one");
        return kj::heap<WakeWatch>(
            port, *m_wake, [this, deliver = kj::mv(deliver)]() mutable { deliver(take()); });
    }

private:
    Mutex m_mutex;
    std::deque<T> m_items BH_GUARDED_BY(m_mutex);
    bool m_closed BH_GUARDED_BY(m_mutex);
    CondVar m_ready; // Consumer::thread: an item was posted, or the mailbox closed
    std::optional<WakeFd> m_wake; // Consumer::loop; set once, in the constructor
};

} // namespace bh::ipc
