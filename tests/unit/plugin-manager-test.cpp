// PluginManager's policy (crash, veto, latch, hook and load deadlines) on fake links and a fake
// clock: no plugin files, no root, no processes.
#include "service/plugin-manager.h"

#include <deque>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <map>
#include <memory>

namespace bh::service {
// gtest prints a state by its name.
void PrintTo(PluginState state, std::ostream* out)
{
    *out << state_name(state);
}
} // namespace bh::service

namespace {

using namespace bh;
using host::Hook;
using service::PluginState;

constexpr uint32_t hook_timeout_s = 5;
constexpr uint32_t every_hook = ~0u;

// One plugin as the test plays it: its load, each hook call and its host's death wait until the
// test answers them.
struct FakePlugin {
    std::optional<Error> untrusted; // what the trust check answers; nullopt: trusted
    int starts = 0;
    bool terminated = false;
    std::vector<Hook> calls; // every hook it received, in order
    std::vector<std::string> texts; // HookCall::text of each, in the same order
    kj::Maybe<kj::Own<kj::PromiseFulfiller<Result<uint32_t>>>> load;
    std::deque<kj::Own<kj::PromiseFulfiller<host::HookOutcome>>> pending; // unanswered, oldest first
    kj::Maybe<kj::Own<kj::PromiseFulfiller<std::string>>> death;

    void finish_load(Result<uint32_t> hooks)
    {
        KJ_IF_MAYBE (fulfiller, load) {
            (*fulfiller)->fulfill(std::move(hooks));
        } else {
            ADD_FAILURE() << "no load in progress";
        }
        load = nullptr;
    }

    // Answers the oldest unanswered hook.
    void answer(int code, std::optional<std::string> message = std::nullopt)
    {
        ASSERT_FALSE(pending.empty()) << "no hook to answer";
        pending.front()->fulfill(host::HookOutcome { code, std::move(message) });
        pending.pop_front();
    }

    // Its host dies as a real one does: the connection drops (the load or hooks in flight reject),
    // then the death is reported with what ended it.
    void die(const std::string& how)
    {
        auto dropped = [] {
            return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__, kj::str("host gone"));
        };
        KJ_IF_MAYBE (fulfiller, load)
            (*fulfiller)->reject(dropped());
        load = nullptr;
        for (auto& call : pending)
            call->reject(dropped());
        pending.clear();
        KJ_IF_MAYBE (fulfiller, death)
            (*fulfiller)->fulfill(std::string(how));
        death = nullptr;
    }
};

class FakeLink final : public service::PluginLink {
public:
    explicit FakeLink(FakePlugin& plugin)
        : m_plugin(plugin)
    {
    }

    kj::Promise<Result<uint32_t>> load(service::Integrity) override
    {
        auto paf = kj::newPromiseAndFulfiller<Result<uint32_t>>();
        m_plugin.load = kj::mv(paf.fulfiller);
        return kj::mv(paf.promise);
    }
    kj::Promise<host::HookOutcome> call(host::HookCall call) override
    {
        m_plugin.calls.push_back(call.hook);
        m_plugin.texts.push_back(call.text);
        auto paf = kj::newPromiseAndFulfiller<host::HookOutcome>();
        m_plugin.pending.push_back(kj::mv(paf.fulfiller));
        return kj::mv(paf.promise);
    }
    pid_t pid() const override { return 4321; }
    kj::Promise<std::string> on_death() override
    {
        auto paf = kj::newPromiseAndFulfiller<std::string>();
        m_plugin.death = kj::mv(paf.fulfiller);
        return kj::mv(paf.promise);
    }
    // Like a real host: killed now, its death reported later (when the test says, with die()).
    void terminate() override { m_plugin.terminated = true; }

private:
    FakePlugin& m_plugin;
};

class FakeLinks final : public service::LinkFactory {
public:
    std::map<std::string, FakePlugin> plugins;

    Result<service::Integrity> check(const service::PluginConfig& config) override
    {
        const auto& untrusted = plugins.at(config.name).untrusted;
        if (untrusted)
            return *untrusted;
        return service::Integrity {};
    }
    Result<kj::Own<service::PluginLink>> start(
        const service::PluginConfig& config, host::CallTarget&) override
    {
        FakePlugin& plugin = plugins.at(config.name);
        ++plugin.starts;
        return kj::Own<service::PluginLink>(kj::heap<FakeLink>(plugin));
    }
};

// The plugins never call the service in these tests.
class NoCalls final : public host::CallTarget {
public:
    kj::Promise<int> mount_folder(uint32_t, std::string, std::string, bool, std::string) override
    {
        ADD_FAILURE() << "unexpected mount_folder";
        return -ENOSYS;
    }
    kj::Promise<Result<Fd>> execute(
        uint32_t, std::optional<Uuid>, std::string, std::vector<std::string>) override
    {
        ADD_FAILURE() << "unexpected execute";
        return Result<Fd>(Error { -ENOSYS, "no calls" });
    }
    kj::Promise<int> container_mount(uint32_t, std::string, std::string, bool) override
    {
        ADD_FAILURE() << "unexpected container_mount";
        return -ENOSYS;
    }
    kj::Promise<int> container_unmount(uint32_t, std::string) override
    {
        ADD_FAILURE() << "unexpected container_unmount";
        return -ENOSYS;
    }
    kj::Promise<Result<host::ProcessStart>> create_process(
        uint32_t, std::string, std::vector<std::string>, std::vector<std::string>) override
    {
        ADD_FAILURE() << "unexpected create_process";
        return Result<host::ProcessStart>(Error { -ENOSYS, "no calls" });
    }
};

host::HookCall hook_call(Hook hook)
{
    host::HookCall call;
    call.hook = hook;
    call.session.session_id = 1;
    return call;
}

class PluginManagerTest : public ::testing::Test {
protected:
    // Explicit: KJ's destructors may throw, gtest's may not. The manager goes first.
    ~PluginManagerTest() noexcept override { manager.reset(); }

    // Configures plugins named `names`, in this order, each with a 5 s hook_timeout_s.
    void configure(const std::vector<std::string>& names)
    {
        std::vector<service::PluginConfig> configs;
        for (const auto& name : names) {
            links.plugins[name];
            configs.push_back(
                { .name = name, .path = "/fake/" + name + ".so", .hook_timeout_s = hook_timeout_s });
        }
        service::PluginEnvironment env { *io.lowLevelProvider, io.unixEventPort, clock, -1, "0.1.0",
            "/nonexistent" };
        manager = std::make_unique<service::PluginManager>(std::move(env), std::move(configs), calls, links);
    }

    // Configures `names` and activates them, every plugin loaded with every hook.
    void activate_all(const std::vector<std::string>& names)
    {
        configure(names);
        auto activation = manager->activate();
        settle();
        for (const auto& name : names)
            plugin(name).finish_load(every_hook);
        auto status = ready(activation);
        ASSERT_TRUE(status && *status);
    }

    FakePlugin& plugin(const std::string& name) { return links.plugins.at(name); }

    service::PluginView view(const std::string& name)
    {
        for (auto& view : manager->views())
            if (view.name == name)
                return view;
        ADD_FAILURE() << "no plugin " << name;
        return {};
    }

    // Runs the loop until nothing is left to do now; the clock stands still.
    void settle() { io.waitScope.poll(); }

    void advance(kj::Duration by)
    {
        clock.advanceTo(clock.now() + by);
        settle();
    }

    // What `promise` resolved to, once the loop has nothing left to do; nullopt if still pending.
    // A resolved promise is consumed: ask once.
    template<typename T> std::optional<T> ready(kj::Promise<T>& promise)
    {
        if (!promise.poll(io.waitScope))
            return std::nullopt;
        return promise.wait(io.waitScope);
    }
    bool ready(kj::Promise<void>& promise)
    {
        if (!promise.poll(io.waitScope))
            return false;
        promise.wait(io.waitScope);
        return true;
    }

    // Destroyed in reverse: the manager first, the loop last.
    kj::AsyncIoContext io = kj::setupAsyncIo();
    kj::TimerImpl clock { kj::origin<kj::TimePoint>() };
    NoCalls calls;
    FakeLinks links;
    std::unique_ptr<service::PluginManager> manager;
};

const std::string fatal_a = "A fatal error was returned by plugin 'a'";

TEST_F(PluginManagerTest, HostDyingInAHookFailsTheHookAndNamesIt)
{
    activate_all({ "a", "b" });
    auto veto = manager->notify_veto(hook_call(Hook::vm_started));
    settle();
    ASSERT_EQ(plugin("a").pending.size(), 1u);
    plugin("a").die("killed by signal SIGSEGV");
    auto status = ready(veto);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ECONNRESET);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_TRUE(plugin("b").calls.empty()) << "the veto went on past a crashed plugin";
    auto a = view("a");
    EXPECT_EQ(a.state, PluginState::crashed);
    EXPECT_EQ(a.cause, "killed by signal SIGSEGV during on_vm_started");
    EXPECT_EQ(a.pid, 4321); // a crashed host's pid stays, to identify it
}

TEST_F(PluginManagerTest, CrashIsLatchedAndTheFirstOneWins)
{
    activate_all({ "a", "b" });
    plugin("a").die("killed by signal SIGKILL");
    settle();
    EXPECT_EQ(view("a").state, PluginState::crashed);
    EXPECT_EQ(view("a").cause, "killed by signal SIGKILL");

    // Every later activation fails with it, and the plugin is never started again.
    auto activation = manager->activate();
    auto status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ECONNRESET);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_EQ(plugin("a").starts, 1);

    // A veto hook fails at the crashed plugin without calling anyone; a teardown hook skips it.
    auto veto = manager->notify_veto(hook_call(Hook::vm_started));
    status = ready(veto);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().message, fatal_a);
    auto teardown = manager->notify(hook_call(Hook::vm_stopping));
    settle();
    plugin("b").answer(0);
    EXPECT_TRUE(ready(teardown));
    EXPECT_TRUE(plugin("a").calls.empty());
    EXPECT_EQ(plugin("b").calls, std::vector<Hook> { Hook::vm_stopping });

    // A second crash changes nothing of what activation reports.
    plugin("b").die("killed by signal SIGKILL");
    settle();
    EXPECT_EQ(view("b").state, PluginState::crashed);
    activation = manager->activate();
    status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().message, fatal_a);
}

TEST_F(PluginManagerTest, VetoStopsAtTheFirstRefusalAndIsNotLatched)
{
    activate_all({ "a", "b", "c" });
    auto veto = manager->notify_veto(hook_call(Hook::vm_started));
    settle();
    plugin("a").answer(0);
    settle();
    plugin("b").answer(-EPERM, "not today");
    auto status = ready(veto);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -EPERM);
    EXPECT_EQ(
        status->error().message, "A fatal error was returned by plugin 'b'. Error message: 'not today'");
    EXPECT_TRUE(plugin("c").calls.empty()) << "the veto went on past a refusal";
    EXPECT_EQ(view("b").state, PluginState::running);

    // The refusal was the plugin's own answer: nothing is latched, the next hook reaches everyone.
    auto activation = manager->activate();
    auto activated = ready(activation);
    ASSERT_TRUE(activated);
    EXPECT_TRUE(*activated);
    veto = manager->notify_veto(hook_call(Hook::vm_started));
    for (const char* name : { "a", "b", "c" }) {
        settle();
        plugin(name).answer(0);
    }
    status = ready(veto);
    ASSERT_TRUE(status);
    EXPECT_TRUE(*status);
    EXPECT_EQ(plugin("c").calls.size(), 1u);
}

TEST_F(PluginManagerTest, TeardownGoesOnPastAFailure)
{
    activate_all({ "a", "b" });
    auto teardown = manager->notify(hook_call(Hook::vm_stopping));
    settle();
    plugin("a").answer(-EIO);
    settle();
    ASSERT_EQ(plugin("b").pending.size(), 1u) << "a failed teardown hook stopped the others";
    plugin("b").answer(0);
    EXPECT_TRUE(ready(teardown));
    EXPECT_EQ(view("a").state, PluginState::running);
}

TEST_F(PluginManagerTest, HookPastItsDeadlineEndsThePluginAndIsLatched)
{
    activate_all({ "a" });
    auto veto = manager->notify_veto(hook_call(Hook::vm_started));
    advance((hook_timeout_s - 1) * kj::SECONDS);
    ASSERT_FALSE(ready(veto)) << "timed out before hook_timeout_s";
    EXPECT_FALSE(plugin("a").terminated);
    advance(1 * kj::SECONDS);
    auto status = ready(veto);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ETIMEDOUT);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_TRUE(plugin("a").terminated);
    EXPECT_EQ(view("a").state, PluginState::crashed);
    EXPECT_EQ(view("a").cause, "timed out in on_vm_started (hook_timeout_s = 5)");

    // The host's death that follows does not rewrite the cause; the timeout stays latched.
    plugin("a").die("killed by signal SIGKILL");
    settle();
    EXPECT_EQ(view("a").cause, "timed out in on_vm_started (hook_timeout_s = 5)");
    auto activation = manager->activate();
    status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ETIMEDOUT);
}

TEST_F(PluginManagerTest, HookAnsweredInTimeIsNotTimedOutLater)
{
    activate_all({ "a" });
    auto veto = manager->notify_veto(hook_call(Hook::vm_started));
    advance((hook_timeout_s - 1) * kj::SECONDS);
    plugin("a").answer(0);
    auto status = ready(veto);
    ASSERT_TRUE(status);
    EXPECT_TRUE(*status);
    advance(10 * hook_timeout_s * kj::SECONDS);
    EXPECT_FALSE(plugin("a").terminated);
    EXPECT_EQ(view("a").state, PluginState::running);
}

TEST_F(PluginManagerTest, LoadPastItsDeadlineFailsOnceTheHostIsGone)
{
    configure({ "a", "b" });
    auto activation = manager->activate();
    settle();
    plugin("b").finish_load(every_hook);
    advance((hook_timeout_s - 1) * kj::SECONDS);
    ASSERT_FALSE(ready(activation)) << "the load timed out before hook_timeout_s";
    EXPECT_FALSE(plugin("a").terminated);
    advance(1 * kj::SECONDS);
    EXPECT_TRUE(plugin("a").terminated);
    EXPECT_EQ(view("a").state, PluginState::failed_to_load);
    ASSERT_FALSE(ready(activation)) << "activation ended before the killed host was gone";

    plugin("a").die("killed by signal SIGKILL");
    auto status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ETIMEDOUT);
    EXPECT_EQ(status->error().message, fatal_a);
    auto a = view("a");
    EXPECT_EQ(a.state, PluginState::failed_to_load);
    EXPECT_EQ(a.cause,
        std::string("its entry point ") + host::entry_point_name
            + " did not return within 5 s (hook_timeout_s)");
    EXPECT_EQ(a.pid, 0);
    EXPECT_EQ(view("b").state, PluginState::running);
}

TEST_F(PluginManagerTest, HostDyingWhileLoadingFailsToLoad)
{
    configure({ "a" });
    auto activation = manager->activate();
    settle();
    plugin("a").die("killed by signal SIGABRT");
    auto status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ECONNRESET);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_EQ(view("a").state, PluginState::failed_to_load);
    EXPECT_EQ(view("a").cause, "its host killed by signal SIGABRT while loading");
}

TEST_F(PluginManagerTest, FirstFailedLoadInConfigurationOrderIsReported)
{
    configure({ "a", "b" });
    auto activation = manager->activate();
    settle();
    // b fails first in time, a second: users see a's error, whatever the order of failures.
    plugin("b").finish_load(Error { BH_E_PLUGIN_REQUIRES_UPDATE, "too old" });
    settle();
    plugin("b").die("killed by signal SIGKILL");
    settle();
    ASSERT_FALSE(ready(activation));
    plugin("a").finish_load(Error { -ENOEXEC, "no entry point" });
    settle();
    plugin("a").die("killed by signal SIGKILL");
    auto status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -ENOEXEC);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_EQ(view("b").cause, "too old");
}

TEST_F(PluginManagerTest, UntrustedPluginIsNeverStarted)
{
    configure({ "a", "b" });
    plugin("a").untrusted = Error { BH_E_PLUGIN_UNTRUSTED, "/fake/a.so is not owned by root" };
    auto activation = manager->activate();
    settle();
    plugin("b").finish_load(every_hook);
    auto status = ready(activation);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, BH_E_PLUGIN_UNTRUSTED);
    EXPECT_EQ(status->error().message, fatal_a);
    EXPECT_EQ(plugin("a").starts, 0);
    EXPECT_EQ(view("a").state, PluginState::failed_to_load);
    EXPECT_EQ(view("a").cause, "/fake/a.so is not owned by root");
}

TEST_F(PluginManagerTest, ContainerAndImageHooksCarryTheirTextAndOnlyContainerStartedVetoes)
{
    EXPECT_TRUE(host::is_veto(Hook::container_started));
    for (Hook hook : { Hook::container_stopping, Hook::image_created, Hook::image_deleted })
        EXPECT_FALSE(host::is_veto(hook)) << host::hook_name(hook);
    EXPECT_STREQ(host::hook_name(Hook::container_started), "on_container_started");
    EXPECT_STREQ(host::hook_name(Hook::container_stopping), "on_container_stopping");
    EXPECT_STREQ(host::hook_name(Hook::image_created), "on_image_created");
    EXPECT_STREQ(host::hook_name(Hook::image_deleted), "on_image_deleted");

    // "a" set every hook but on_image_created (bit 10 of bh_plugin_hooks_v1), "b" every hook.
    configure({ "a", "b" });
    auto activation = manager->activate();
    settle();
    plugin("a").finish_load(every_hook & ~(1u << 10));
    plugin("b").finish_load(every_hook);
    auto activated = ready(activation);
    ASSERT_TRUE(activated && *activated);

    auto created = hook_call(Hook::image_created);
    created.text = R"({"Id":"sha256:00","RepoTags":["debian:latest"]})";
    auto notified = manager->notify(std::move(created));
    settle();
    EXPECT_TRUE(plugin("a").calls.empty()) << "a hook the plugin left NULL was sent";
    plugin("b").answer(0);
    EXPECT_TRUE(ready(notified));
    EXPECT_EQ(
        plugin("b").texts, std::vector<std::string> { R"({"Id":"sha256:00","RepoTags":["debian:latest"]})" });

    auto started = hook_call(Hook::container_started);
    started.text = R"({"Name":"web"})";
    auto veto = manager->notify_veto(std::move(started));
    settle();
    plugin("a").answer(-EPERM, "container rejected");
    auto status = ready(veto);
    ASSERT_TRUE(status);
    ASSERT_FALSE(*status);
    EXPECT_EQ(status->error().code, -EPERM);
    EXPECT_EQ(status->error().message,
        "A fatal error was returned by plugin 'a'. Error message: 'container rejected'");
    EXPECT_EQ(plugin("a").texts, std::vector<std::string> { R"({"Name":"web"})" });
    EXPECT_EQ(plugin("b").calls.size(), 1u) << "the veto went on past a refusal";
}

} // namespace
