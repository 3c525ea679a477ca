// The route from plugin threads to the serving loop: a mutex-guarded queue and a WakeFd.
#include "plugin/stub-route.h"

#include "base/log.h"
#include "ipc/wake-fd.h"

#include <deque>
#include <kj/debug.h>
#include <thread>

namespace bh::host {

namespace {

    struct LoopSide;
    void start_queued(LoopSide& loop);

    // What only the loop's thread touches: created by open_route, destroyed once every call has
    // been finished after close_route.
    struct LoopSide final : kj::TaskSet::ErrorHandler {
        LoopSide(CallTarget& target, kj::UnixEventPort& port, const ipc::WakeFd& wake)
            : target(target)
            , tasks(*this)
            , watch(port, wake, [this]() { start_queued(*this); })
        {
        }
        void taskFailed(kj::Exception&& e) override
        {
            log_error(std::string("a plugin call failed unexpectedly: ") + e.getDescription().cStr());
        }

        CallTarget& target;
        kj::Canceler canceler;
        kj::TaskSet tasks;
        kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> drained;
        ipc::WakeWatch watch; // last: it may start calls as soon as it exists
    };

    // Plugins may call the stubs from any thread until the process exits, so what a posting
    // thread touches (the mutex, the queue, the eventfd) is allocated once and never freed.
    struct Route {
        std::mutex mutex;
        bool open = false; // guarded by mutex, as are queue, unfinished and loop_thread
        std::deque<RoutedCall*> queue; // posted, not yet taken by the loop
        size_t unfinished = 0; // posted and not yet finished; decremented on the loop only
        std::thread::id loop_thread;
        std::optional<ipc::WakeFd> wake; // made by the first open_route
        kj::Own<LoopSide> loop; // the loop's thread only
    };

    Route& route()
    {
        static Route* instance = new Route; // never freed, on purpose (see above)
        return *instance;
    }

    // On the loop, after a call was finished.
    void finished_one()
    {
        Route& r = route();
        bool drained;
        {
            std::lock_guard lock(r.mutex);
            drained = --r.unfinished == 0 && !r.open;
        }
        if (drained && r.loop) {
            KJ_IF_MAYBE (fulfiller, r.loop->drained)
                (*fulfiller)->fulfill();
        }
    }

    void start_queued(LoopSide& loop)
    {
        Route& r = route();
        std::deque<RoutedCall*> calls;
        {
            std::lock_guard lock(r.mutex);
            calls.swap(r.queue);
        }
        for (RoutedCall* call : calls)
            loop.tasks.add(call->start(loop.target, loop.canceler).then([]() { finished_one(); }));
    }

} // namespace

bool post_call(RoutedCall& call)
{
    Route& r = route();
    {
        std::lock_guard lock(r.mutex);
        if (!r.open)
            return false;
        r.queue.push_back(&call);
        ++r.unfinished;
    }
    r.wake->ring(); // exists: the route is open
    return true;
}

bool on_route_thread()
{
    Route& r = route();
    std::lock_guard lock(r.mutex);
    return r.open && r.loop_thread == std::this_thread::get_id();
}

void open_route(CallTarget& target, kj::UnixEventPort& port)
{
    Route& r = route();
    KJ_REQUIRE(!r.loop, "the stubs are already routed");
    if (!r.wake)
        r.wake.emplace();
    r.loop = kj::heap<LoopSide>(target, port, *r.wake);
    std::lock_guard lock(r.mutex);
    r.open = true;
    r.loop_thread = std::this_thread::get_id();
}

kj::Promise<void> close_route()
{
    Route& r = route();
    std::deque<RoutedCall*> queued;
    {
        std::lock_guard lock(r.mutex);
        if (!r.open)
            return kj::READY_NOW;
        r.open = false;
        queued.swap(r.queue);
    }
    LoopSide& loop = *r.loop;
    auto paf = kj::newPromiseAndFulfiller<void>();
    loop.drained = kj::mv(paf.fulfiller);
    loop.canceler.cancel("the plugin's service connection is closing");
    for (RoutedCall* call : queued) {
        call->shut_down();
        finished_one();
    }
    bool idle;
    {
        std::lock_guard lock(r.mutex);
        idle = r.unfinished == 0;
    }
    kj::Promise<void> drained = idle ? kj::Promise<void>(kj::READY_NOW) : kj::mv(paf.promise);
    return drained.then([]() { route().loop = nullptr; });
}

} // namespace bh::host
