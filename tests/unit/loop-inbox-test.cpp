// LoopInbox: results sent from other threads reach the loop, in every way a sender can end.
#include "ipc/loop-inbox.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <thread>

namespace {

using bh::ipc::LoopInbox;

TEST(LoopInbox, DeliversValuesSentFromOtherThreads)
{
    auto io = kj::setupAsyncIo();
    LoopInbox inbox(io.unixEventPort);
    constexpr int count = 64;
    kj::Vector<kj::Promise<int>> promises;
    std::vector<std::thread> threads;
    for (int i = 0; i < count; ++i) {
        auto result = inbox.expect<int>();
        promises.add(kj::mv(result.promise));
        threads.emplace_back([sender = std::move(result.sender), i]() mutable { sender.send(i * 3); });
    }
    auto values = kj::joinPromises(promises.releaseAsArray()).wait(io.waitScope);
    for (auto& thread : threads)
        thread.join();
    ASSERT_EQ(values.size(), size_t(count));
    for (int i = 0; i < count; ++i)
        EXPECT_EQ(values[i], i * 3);
}

TEST(LoopInbox, SenderDroppedUnsentRejectsThePromise)
{
    auto io = kj::setupAsyncIo();
    LoopInbox inbox(io.unixEventPort);
    auto result = inbox.expect<int>();
    std::thread([sender = std::move(result.sender)]() mutable { auto dropped = std::move(sender); }).join();
    auto outcome
        = kj::mv(result.promise)
              .then([](int) { return false; },
                  [](kj::Exception&& e) { return e.getType() == kj::Exception::Type::DISCONNECTED; });
    EXPECT_TRUE(outcome.wait(io.waitScope));
}

TEST(LoopInbox, DestroyingTheInboxDeliversWhatIsQueued)
{
    auto io = kj::setupAsyncIo();
    auto inbox = kj::heap<LoopInbox>(io.unixEventPort);
    auto result = inbox->expect<int>();
    std::thread([sender = std::move(result.sender)]() mutable { sender.send(7); }).join();
    inbox = nullptr; // the loop never ran: the value is still queued
    EXPECT_EQ(result.promise.wait(io.waitScope), 7);
}

TEST(LoopInbox, ResultsSentAfterTheInboxIsGoneAreDropped)
{
    auto io = kj::setupAsyncIo();
    auto inbox = kj::heap<LoopInbox>(io.unixEventPort);
    auto result = inbox->expect<int>();
    result.promise = nullptr; // the loop gave up waiting (a hook deadline)
    inbox = nullptr;
    // Must neither crash nor touch the loop (ASan and TSan would tell): the slot is leaked on
    // purpose, and marked so for LeakSanitizer.
    std::thread([sender = std::move(result.sender)]() mutable { sender.send(1); }).join();
}

} // namespace
