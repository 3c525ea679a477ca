// Mailbox: posts from many threads reach the consumer in each thread's order; closing refuses,
// wakes and hands back; both kinds of consumer.
#include "ipc/mailbox.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <memory>
#include <thread>
#include <vector>

namespace {

using bh::ipc::Consumer;
using bh::ipc::Mailbox;

TEST(Mailbox, ThreadConsumerGetsEveryPostInEachPostersOrder)
{
    Mailbox<std::pair<int, int>> mailbox(Consumer::thread);
    constexpr int posters = 4, each = 2000;
    std::vector<int> next(posters, 0); // the consumer's, until it is joined
    std::thread consumer([&]() {
        while (auto item = mailbox.wait())
            EXPECT_EQ(item->second, next[item->first]++) << "poster " << item->first;
    });
    std::vector<std::thread> threads;
    for (int p = 0; p < posters; ++p)
        threads.emplace_back([&mailbox, p]() {
            for (int i = 0; i < each; ++i)
                EXPECT_FALSE(mailbox.post({ p, i }).has_value());
        });
    for (auto& thread : threads)
        thread.join();
    // What the consumer had not taken comes back from close(), after what it took.
    auto left = mailbox.close();
    consumer.join();
    for (auto& [p, i] : left)
        EXPECT_EQ(i, next[p]++) << "poster " << p;
    for (int p = 0; p < posters; ++p)
        EXPECT_EQ(next[p], each);
}

TEST(Mailbox, CloseRefusesLaterPostsAndHandsBackWhatWasQueued)
{
    Mailbox<std::unique_ptr<int>> mailbox(Consumer::thread);
    EXPECT_FALSE(mailbox.post(std::make_unique<int>(1)).has_value());
    EXPECT_FALSE(mailbox.post(std::make_unique<int>(2)).has_value());
    auto queued = mailbox.close();
    ASSERT_EQ(queued.size(), 2u);
    EXPECT_EQ(*queued[0], 1);
    EXPECT_EQ(*queued[1], 2);
    auto refused = mailbox.post(std::make_unique<int>(3));
    ASSERT_TRUE(refused.has_value()); // the item comes back, untouched
    EXPECT_EQ(**refused, 3);
    EXPECT_FALSE(mailbox.wait().has_value()); // closed: no blocking
    mailbox.reopen();
    EXPECT_FALSE(mailbox.post(std::make_unique<int>(4)).has_value());
    auto item = mailbox.wait();
    ASSERT_TRUE(item.has_value());
    EXPECT_EQ(**item, 4);
}

TEST(Mailbox, CloseWakesABlockedConsumer)
{
    Mailbox<int> mailbox(Consumer::thread);
    std::thread consumer([&]() { EXPECT_FALSE(mailbox.wait().has_value()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // let it block (not needed to pass)
    EXPECT_TRUE(mailbox.close().empty());
    consumer.join(); // hangs here (the test's timeout) if close() did not wake it
}

TEST(Mailbox, StartsClosedWhenAskedTo)
{
    Mailbox<int> mailbox(Consumer::loop, Mailbox<int>::Start::closed);
    EXPECT_EQ(mailbox.post(7), std::optional<int>(7));
    mailbox.reopen();
    EXPECT_FALSE(mailbox.post(8).has_value());
    EXPECT_EQ(mailbox.take(), std::deque<int>({ 8 }));
}

TEST(Mailbox, LoopConsumerIsWokenByPostsFromOtherThreads)
{
    auto io = kj::setupAsyncIo();
    Mailbox<int> mailbox(Consumer::loop);
    constexpr int count = 500;
    std::vector<int> seen;
    auto done = kj::newPromiseAndFulfiller<void>();
    auto watch = mailbox.serve_on(io.unixEventPort, [&](std::deque<int> items) {
        seen.insert(seen.end(), items.begin(), items.end());
        if (seen.size() == count)
            done.fulfiller->fulfill();
    });
    std::thread poster([&]() {
        for (int i = 0; i < count; ++i)
            EXPECT_FALSE(mailbox.post(i).has_value());
    });
    done.promise.wait(io.waitScope);
    poster.join();
    for (int i = 0; i < count; ++i)
        ASSERT_EQ(seen[i], i);
}

TEST(Mailbox, OnlyALoopMailboxIsServedOnALoop)
{
    auto io = kj::setupAsyncIo();
    Mailbox<int> mailbox(Consumer::thread);
    EXPECT_ANY_THROW(mailbox.serve_on(io.unixEventPort, [](std::deque<int>) {}));
}

} // namespace
