// The route from the C stubs (any plugin thread) to the event loop that serves them.
#pragma once

#include "base/fd.h"
#include "base/mutex.h"
#include "base/result.h"

#include <kj/async-unix.h>
#include <optional>

namespace bh::host {

class CallTarget;

// One call from a plugin thread, handed to the routed loop. It lives on the calling thread's
// stack until finished; the loop touches it only between taking it from the queue and finishing.
class RoutedCall {
public:
    // On the loop: starts the call; the promise resolves when the call has been finished, also
    // when `canceler` cancels it (then with the shut-down result).
    virtual kj::Promise<void> start(CallTarget& target, kj::Canceler& canceler) = 0;
    // On the loop: the route is cut, the call fails with -ESHUTDOWN without being started.
    virtual void shut_down() = 0;

protected:
    ~RoutedCall() = default;
};

// Queues `call` for the routed loop and wakes it; false when no route is open (the caller then
// fails with -ESHUTDOWN itself). Any thread but the loop's own.
bool post_call(RoutedCall& call);
// True on the thread of the routed loop, where a blocking call would deadlock.
bool on_route_thread();

// Points the process's stubs (through call_service) at `target`, served on the calling thread's event loop
// (`port` is that loop's). Call it on that loop's thread. Calls come through an ipc::Mailbox (a Mutex and an
// eventfd): unlike kj::Executor (whose futexes ThreadSanitizer cannot see in Debian's uninstrumented libkj),
// every happens-before edge is visible to the sanitizer.
void open_route(CallTarget& target, kj::UnixEventPort& port);
// Cuts the route (on the same thread): calls posted later fail with -ESHUTDOWN, queued ones fail
// at once, started ones are cancelled. The promise resolves once every call has been finished;
// the loop must keep running until then and must not be destroyed before.
kj::Promise<void> close_route();

// Runs `call(target)` on the routed loop and blocks the calling (plugin) thread for its result;
// `shut_down` is the result when the route is cut. T: int or Result<Fd>.
template<typename T, typename Call> T call_service(Call&& call, T shut_down)
{
    class Pending final : public RoutedCall {
    public:
        Pending(Call& call, T fallback)
            : m_call(call)
            , m_fallback(std::move(fallback))
        {
        }
        kj::Promise<void> start(CallTarget& target, kj::Canceler& canceler) override
        {
            // evalNow: a call that throws before returning its promise fails this one call,
            // instead of escaping into the loop that starts every routed call.
            return canceler.wrap(kj::evalNow([&]() { return m_call(target); }))
                .then([this](T value) { finish(std::move(value)); },
                    [this](kj::Exception&&) { finish(std::move(m_fallback)); });
        }
        void shut_down() override { finish(std::move(m_fallback)); }
        T wait() BH_EXCLUDES(m_mutex)
        {
            MutexLock lock(m_mutex);
            while (!m_result)
                m_done.wait(m_mutex);
            return std::move(*m_result);
        }

    private:
        // The last thing the loop does with this call: once the lock is released the caller may
        // return and this object is gone (so the notify is under the lock, unlike elsewhere).
        void finish(T value) BH_EXCLUDES(m_mutex)
        {
            MutexLock lock(m_mutex);
            m_result = std::move(value);
            m_done.notify_one();
        }
        Call& m_call;
        T m_fallback;
        Mutex m_mutex;
        CondVar m_done;
        std::optional<T> m_result BH_GUARDED_BY(m_mutex);
    };
    // Plugin code never runs on the loop's thread; were it to, waiting here would never end.
    if (on_route_thread())
        return shut_down;
    Pending pending(call, std::move(shut_down));
    if (!post_call(pending))
        pending.shut_down();
    return pending.wait();
}

} // namespace bh::host
