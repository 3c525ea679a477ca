// The route from plugin threads to the serving loop: a Mailbox served on that loop.
#include "plugin/stub-route.h"

#include "base/log.h"
#include "ipc/mailbox.h"

#include <kj/debug.h>

namespace bh::host {

namespace {

    // Plugins may call the stubs from any thread until the process exits, so what a posting
    // thread touches (the mailbox, with its mutex and eventfd) is made once and never freed.
    // Closed while no route is open.
    ipc::Mailbox<RoutedCall*>& mailbox()
    {
        static auto* instance
            = new ipc::Mailbox<RoutedCall*>(ipc::Consumer::loop, ipc::Mailbox<RoutedCall*>::Start::closed);
        return *instance;
    }

    // True on the thread of the routed loop while the route is open; set and cleared there.
    thread_local bool t_serving_route = false;

    // What only the loop's thread touches: made by open_route, destroyed once every call it
    // started has been finished after close_route.
    struct LoopSide final : kj::TaskSet::ErrorHandler {
        LoopSide(CallTarget& target, kj::UnixEventPort& port)
            : target(target)
            , tasks(*this)
            , watch(mailbox().serve_on(port, [this](std::deque<RoutedCall*> calls) { start(kj::mv(calls)); }))
        {
        }
        void taskFailed(kj::Exception&& e) override
        {
            log_error(std::string("a plugin call failed unexpectedly: ") + e.getDescription().cStr());
        }

        void start(std::deque<RoutedCall*> calls)
        {
            for (RoutedCall* call : calls) {
                ++started;
                tasks.add(call->start(target, canceler).then([this]() { finished_one(); }));
            }
        }
        void finished_one()
        {
            if (--started == 0 && closing) {
                KJ_IF_MAYBE (fulfiller, drained)
                    (*fulfiller)->fulfill();
            }
        }

        CallTarget& target;
        kj::Canceler canceler;
        kj::TaskSet tasks;
        size_t started = 0; // taken from the mailbox and not yet finished
        bool closing = false; // close_route was called
        kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> drained;
        kj::Own<ipc::WakeWatch> watch; // last: it may start calls as soon as it exists
    };

    // The loop's thread only. Never freed either: a process may exit with its route open.
    kj::Own<LoopSide>& loop_side()
    {
        static auto* instance = new kj::Own<LoopSide>;
        return *instance;
    }

} // namespace

bool post_call(RoutedCall& call)
{
    return !mailbox().post(&call).has_value();
}

bool on_route_thread()
{
    return t_serving_route;
}

void open_route(CallTarget& target, kj::UnixEventPort& port)
{
    KJ_REQUIRE(!loop_side(), "the stubs are already routed");
    loop_side() = kj::heap<LoopSide>(target, port);
    t_serving_route = true;
    mailbox().reopen();
}

kj::Promise<void> close_route()
{
    if (!loop_side() || loop_side()->closing)
        return kj::READY_NOW;
    LoopSide& loop = *loop_side();
    loop.closing = true;
    t_serving_route = false;
    auto paf = kj::newPromiseAndFulfiller<void>();
    loop.drained = kj::mv(paf.fulfiller);
    for (RoutedCall* call : mailbox().close())
        call->shut_down(); // never started, so not counted
    // The started calls finish on later turns of the loop, each through finished_one().
    loop.canceler.cancel("the plugin's service connection is closing");
    kj::Promise<void> drained = loop.started == 0 ? kj::Promise<void>(kj::READY_NOW) : kj::mv(paf.promise);
    return drained.then([]() { loop_side() = nullptr; });
}

} // namespace bh::host
