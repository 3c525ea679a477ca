// PluginManager: activation, hook delivery in configuration order, and the crash policy.
#include "service/plugin-manager.h"

#include "base/log.h"
#include "service/plugin-trust.h"

#include <algorithm>

namespace bh::service {

using host::Hook;
using host::HookCall;
using host::HookOutcome;

namespace {

    // The code a dead host's failure carries. The service never hands it to a plugin: it is
    // what the CLI shows next to the fatal message.
    constexpr int host_died = -ECONNRESET;

    std::string fatal_message(
        const std::string& name, const std::optional<std::string>& detail = std::nullopt)
    {
        std::string message = "A fatal error was returned by plugin '" + name + "'";
        if (detail)
            message += ". Error message: '" + *detail + "'";
        return message;
    }

    uint32_t bit(Hook hook)
    {
        return 1u << static_cast<uint32_t>(hook);
    }

    // The service's links: the trust checks of plugin-trust.h, then a host or an in-process runtime.
    class SystemLinks final : public LinkFactory {
    public:
        explicit SystemLinks(PluginEnvironment& env)
            : m_env(env)
        {
        }
        Result<Integrity> check(const PluginConfig& config) override
        {
            return check_plugin_trust(config, m_env.config_dir, m_env.require_verified);
        }
        Result<kj::Own<PluginLink>> start(const PluginConfig& config, host::CallTarget& calls) override
        {
            if (config.isolation == Isolation::none)
                return load_in_process(config, m_env.port);
            return start_plugin_host(m_env, config, calls);
        }

    private:
        PluginEnvironment& m_env;
    };

    // The journald fields of a line about a plugin (Slot is private, hence the template), and of
    // one about a hook call: whose session, which distribution.
    template<typename SlotT> LogContext about(const SlotT& slot)
    {
        return LogContext { .plugin = slot.config.name, .plugin_pid = slot.pid };
    }

    template<typename SlotT> LogContext about(const SlotT& slot, const HookCall& call)
    {
        LogContext context = about(slot);
        context.session_uid = call.session.uid;
        context.distribution = call.distro.name;
        return context;
    }

} // namespace

const char* state_name(PluginState state)
{
    switch (state) {
    case PluginState::not_loaded:
        return "not loaded";
    case PluginState::loading:
        return "loading";
    case PluginState::running:
        return "running";
    case PluginState::failed_to_load:
        return "failed to load";
    case PluginState::crashed:
        return "crashed";
    }
    return "unknown";
}

struct PluginManager::Slot {
    PluginConfig config;
    PluginState state = PluginState::not_loaded;
    uint32_t hooks = 0;
    pid_t pid = 0;
    std::string cause;
    std::optional<Error> failure; // why it failed to load, as VM creation then reports it
    int fatal_code = host_died; // what its death makes operations fail with
    std::vector<Hook> in_flight; // hooks sent and not answered, oldest first
    kj::Own<PluginLink> link;
    // Resolves once the host's death has been recorded (declared after `link`: destroyed first).
    kj::Maybe<kj::ForkedPromise<void>> dead;
};

PluginManager::PluginManager(
    PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls)
    : PluginManager(std::move(env), std::move(configs), calls, nullptr)
{
}

PluginManager::PluginManager(
    PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls, LinkFactory& links)
    : PluginManager(std::move(env), std::move(configs), calls, &links)
{
}

PluginManager::PluginManager(
    PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls, LinkFactory* links)
    : m_env(std::move(env))
    , m_calls(calls)
    , m_system_links(links ? kj::Own<LinkFactory>() : kj::Own<LinkFactory>(kj::heap<SystemLinks>(m_env)))
    , m_links(links ? *links : *m_system_links)
{
    for (auto& config : configs) {
        auto slot = kj::heap<Slot>();
        slot->config = std::move(config);
        m_slots.push_back(kj::mv(slot));
    }
}

PluginManager::~PluginManager()
{
    if (m_routed)
        (void)host::unroute_stubs();
}

kj::Promise<void> PluginManager::close()
{
    if (!m_routed)
        return kj::READY_NOW;
    m_routed = false;
    return host::unroute_stubs();
}

void PluginManager::latch(Error error)
{
    if (!m_fatal)
        m_fatal = std::move(error);
}

kj::Promise<Status> PluginManager::activate()
{
    if (m_activation == nullptr)
        m_activation = load_all().fork();
    KJ_IF_MAYBE (activation, m_activation) {
        return activation->addBranch().then([this]() { return m_fatal ? Status(*m_fatal) : Status(); });
    }
    KJ_UNREACHABLE;
}

kj::Promise<void> PluginManager::load_all()
{
    auto loads = kj::heapArrayBuilder<kj::Promise<void>>(m_slots.size());
    for (auto& slot : m_slots)
        loads.add(load_one(*slot));
    return kj::joinPromises(loads.finish()).then([this]() {
        for (auto& slot : m_slots)
            if (slot->failure) {
                m_fatal = *slot->failure; // the first in configuration order, not in time
                return;
            }
    });
}

void PluginManager::fail_load(Slot& slot, Error error)
{
    slot.state = PluginState::failed_to_load;
    slot.cause = error.message;
    slot.pid = 0; // its host is ended below
    log_error("plugin '" + slot.config.name + "' failed to load: " + error.message, about(slot));
    if (error.code == BH_E_PLUGIN_REQUIRES_UPDATE)
        slot.failure = Error { error.code,
            "The plugin '" + slot.config.name + "' requires a newer version of Bulkhead. Please update." };
    else
        slot.failure = Error { error.code, fatal_message(slot.config.name) };
    latch(*slot.failure);
    if (slot.link)
        slot.link->terminate();
}

kj::Promise<void> PluginManager::load_one(Slot& slot)
{
    if (slot.config.error) {
        fail_load(slot, *slot.config.error);
        return kj::READY_NOW;
    }
    auto integrity = m_links.check(slot.config);
    if (!integrity) {
        fail_load(slot, integrity.take_error());
        return kj::READY_NOW;
    }
    if (slot.config.isolation == Isolation::none && !m_routed) {
        host::route_stubs_to(m_calls, host::parse_version(m_env.service_version.c_str()), m_env.port);
        m_routed = true;
    }
    auto link = m_links.start(slot.config, m_calls);
    if (!link) {
        fail_load(slot, link.take_error());
        return kj::READY_NOW;
    }
    slot.link = kj::mv(link.value());
    if (slot.config.isolation != Isolation::none) {
        slot.pid = slot.link->pid();
        watch(slot); // in-process, there is no host to die
    }
    slot.state = PluginState::loading;
    auto loaded = finish_load(slot, slot.link->load(std::move(integrity.value())));
    auto timed_out = deadline(slot).then([this, &slot]() { fail_load(slot, load_timeout(slot)); });
    return loaded.exclusiveJoin(kj::mv(timed_out)).then([&slot]() -> kj::Promise<void> {
        // A failed host was killed: resolve once it and everything it started are gone, so the
        // starts waiting for activation fail only then, as after a crash.
        if (slot.state != PluginState::failed_to_load)
            return kj::READY_NOW;
        KJ_IF_MAYBE (dead, slot.dead)
            return dead->addBranch();
        return kj::READY_NOW;
    });
}

kj::Promise<void> PluginManager::finish_load(Slot& slot, kj::Promise<Result<uint32_t>> load)
{
    return load.then(
        [this, &slot](Result<uint32_t> hooks) -> kj::Promise<void> {
            if (!hooks) {
                fail_load(slot, hooks.take_error());
                return kj::READY_NOW;
            }
            slot.state = PluginState::running;
            slot.hooks = hooks.value();
            log_info("plugin '" + slot.config.name + "' loaded from " + slot.config.path, about(slot));
            return kj::READY_NOW;
        },
        [this, &slot](kj::Exception&& e) -> kj::Promise<void> {
            log_error("plugin '" + slot.config.name + "': initialize failed: " + e.getDescription().cStr(),
                about(slot));
            KJ_IF_MAYBE (dead, slot.dead)
                return dead->addBranch(); // its death is recorded as its failure (watch)
            fail_load(slot, { host_died, e.getDescription().cStr() });
            return kj::READY_NOW;
        });
}

// A load past its deadline: the entry point (or dlopen, which runs the library's constructors)
// never returned. fail_load ends it: a host is killed; in-process, the hook thread is abandoned
// and keeps running whatever it is stuck in.
Error PluginManager::load_timeout(const Slot& slot)
{
    return { -ETIMEDOUT,
        "its entry point " + std::string(host::entry_point_name) + " did not return within "
            + std::to_string(slot.config.hook_timeout_s) + " s (hook_timeout_s)" };
}

kj::Promise<void> PluginManager::deadline(const Slot& slot)
{
    return m_env.timer.afterDelay(slot.config.hook_timeout_s * kj::SECONDS);
}

void PluginManager::watch(Slot& slot)
{
    auto recorded = slot.link->on_death().then([this, &slot](std::string how) {
        if (slot.state == PluginState::failed_to_load || slot.state == PluginState::crashed)
            return; // we ended it ourselves (a failed load, a hook past its deadline)
        bool loading = slot.state == PluginState::loading;
        slot.state = loading ? PluginState::failed_to_load : PluginState::crashed;
        slot.cause = loading ? "its host " + how + " while loading" : how;
        if (!loading && !slot.in_flight.empty())
            slot.cause += std::string(" during ") + host::hook_name(slot.in_flight.front());
        // Logged with the pid the host had, before a failed load forgets it.
        log_error(
            "plugin '" + slot.config.name + "' (host pid " + std::to_string(slot.pid) + ") " + slot.cause,
            about(slot));
        slot.pid = loading ? 0 : slot.pid; // a crashed host's pid stays, to identify it
        slot.fatal_code = host_died;
        if (loading)
            slot.failure = Error { host_died, fatal_message(slot.config.name) };
        latch({ host_died, fatal_message(slot.config.name) });
    });
    slot.dead = recorded.fork();
}

// A hook past its deadline: the plugin is treated as dead (its host and everything it started
// are killed; in-process, its hook thread is abandoned and never called again).
HookOutcome PluginManager::time_out(Slot& slot, Hook hook)
{
    slot.state = PluginState::crashed;
    slot.cause = std::string("timed out in ") + host::hook_name(hook)
        + " (hook_timeout_s = " + std::to_string(slot.config.hook_timeout_s) + ")";
    slot.fatal_code = -ETIMEDOUT;
    log_error("plugin '" + slot.config.name + "' " + slot.cause + "; ending it", about(slot));
    latch({ -ETIMEDOUT, fatal_message(slot.config.name) });
    slot.link->terminate();
    return HookOutcome { -ETIMEDOUT };
}

kj::Promise<HookOutcome> PluginManager::call(Slot& slot, const HookCall& call)
{
    Hook hook = call.hook;
    slot.in_flight.push_back(hook);
    auto answered = kj::defer([&slot, hook]() {
        auto it = std::find(slot.in_flight.begin(), slot.in_flight.end(), hook);
        if (it != slot.in_flight.end())
            slot.in_flight.erase(it);
    });
    auto timed_out = deadline(slot).then([this, &slot, hook]() { return time_out(slot, hook); });
    return slot.link->call(call)
        .catch_([this, &slot, hook](kj::Exception&& e) -> kj::Promise<HookOutcome> {
            log_warning("plugin '" + slot.config.name + "': " + host::hook_name(hook)
                    + " got no answer: " + e.getDescription().cStr(),
                about(slot));
            KJ_IF_MAYBE (dead, slot.dead) // wait until the cause is recorded, so status names it
                return dead->addBranch().then([&slot]() { return HookOutcome { slot.fatal_code }; });
            return HookOutcome { host_died };
        })
        .exclusiveJoin(kj::mv(timed_out))
        .attach(kj::mv(answered));
}

kj::Promise<Status> PluginManager::notify_veto(HookCall call)
{
    return veto_from(0, std::move(call));
}

kj::Promise<Status> PluginManager::veto_from(size_t index, HookCall call)
{
    for (; index < m_slots.size(); ++index) {
        Slot& slot = *m_slots[index];
        if (slot.state == PluginState::crashed)
            return Status(Error { slot.fatal_code, fatal_message(slot.config.name) });
        if (slot.state != PluginState::running || !(slot.hooks & bit(call.hook)))
            continue;
        auto answer = this->call(slot, call);
        return answer.then([this, index, &slot, call = std::move(call)](
                               HookOutcome outcome) mutable -> kj::Promise<Status> {
            if (outcome.code == 0)
                return veto_from(index + 1, std::move(call));
            if (slot.state == PluginState::crashed)
                return Status(Error { slot.fatal_code, fatal_message(slot.config.name) });
            log_warning("plugin '" + slot.config.name + "' vetoed " + host::hook_name(call.hook) + ": "
                    + bh_result_name(outcome.code) + (outcome.message ? " (" + *outcome.message + ")" : ""),
                about(slot, call));
            return Status(Error { outcome.code, fatal_message(slot.config.name, outcome.message) });
        });
    }
    return Status();
}

kj::Promise<void> PluginManager::notify(HookCall call)
{
    return notify_from(0, std::move(call));
}

kj::Promise<void> PluginManager::notify_from(size_t index, HookCall call)
{
    for (; index < m_slots.size(); ++index) {
        Slot& slot = *m_slots[index];
        if (slot.state != PluginState::running || !(slot.hooks & bit(call.hook)))
            continue;
        auto answer = this->call(slot, call);
        return answer.then([this, index, &slot, call = std::move(call)](HookOutcome outcome) mutable {
            if (outcome.code != 0 && slot.state == PluginState::running)
                log_warning("plugin '" + slot.config.name + "': " + host::hook_name(call.hook)
                        + " failed with " + bh_result_name(outcome.code) + "; going on",
                    about(slot, call));
            return notify_from(index + 1, std::move(call));
        });
    }
    return kj::READY_NOW;
}

std::vector<PluginView> PluginManager::views() const
{
    std::vector<PluginView> out;
    for (const auto& slot : m_slots)
        out.push_back({ slot->config.name, slot->config.error ? slot->config.file : slot->config.path,
            slot->config.isolation, slot->pid, slot->state, slot->cause });
    return out;
}

} // namespace bh::service
