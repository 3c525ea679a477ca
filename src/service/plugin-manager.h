// PluginManager: the configured plugins, their activation, hook delivery and crash policy.
#pragma once

#include "service/plugin-link.h"

#include <kj/async.h>
#include <vector>

namespace bh::service {

enum class PluginState { not_loaded, loading, running, failed_to_load, crashed };
const char* state_name(PluginState state);

// What `bulkhead status` shows of one plugin.
struct PluginView {
    std::string name;
    std::string path; // of the .so, or of the configuration file that could not be used
    Isolation isolation = Isolation::process;
    pid_t pid = 0;
    PluginState state = PluginState::not_loaded;
    std::string cause;
};

// Thread affinity: the service's event-loop thread.
//
// Policy (the reasoning: docs/design/concurrency.md; its unit tests: tests/unit/plugin-manager-test.cpp):
// - Plugins are loaded lazily, once, the first time a VM is about to be created, all at once
//   (hosts spawned in configuration order, their start-ups overlapping). Once every load has
//   ended, the first failed one in configuration order is latched as the fatal plugin error, so
//   the error users see does not depend on which host happened to fail first.
// - A load (dlopen and entry point) that overruns the plugin's hook_timeout_s fails: its host is
//   killed (in-process, its hook thread abandoned) and the plugin is failed to load, as above.
// - A host that dies (its process exits, or its connection drops), or a hook that overruns the
//   plugin's hook_timeout_s (its host is then killed), is latched as the fatal plugin error too:
//   the first one wins, and it is never restarted in this service's lifetime.
// - While a fatal error is latched, activate() fails: every VM creation fails before any hook.
// - Veto hooks stop at the first plugin that fails; a plugin's own failure is not latched.
// - Teardown hooks skip dead plugins and only log failures.
// Hooks of one plugin never overlap: its host (or in-process runtime) runs them one at a time.
class PluginManager {
public:
    PluginManager(PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls);
    // The same, with its links (and their trust checks) from `links`, which must outlive it: for unit
    // tests of the policy on fake links.
    PluginManager(PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls,
        LinkFactory& links);
    ~PluginManager();

    // Loads every plugin the first time; later, the latched fatal error if any.
    kj::Promise<Status> activate();
    // At service exit: cuts in-process plugins off the service (their calls fail with
    // -ESHUTDOWN from then on) and resolves once no call of theirs is in flight, so the event
    // loop can be destroyed. Keep the loop running until it resolves.
    kj::Promise<void> close();
    // Runs a veto hook on each running plugin in order; the first failure is the result, with the
    // user-facing message of the spec.
    kj::Promise<Status> notify_veto(host::HookCall call);
    // Runs a teardown hook on each running plugin in order; failures are logged, never returned.
    kj::Promise<void> notify(host::HookCall call);

    std::vector<PluginView> views() const;

private:
    struct Slot;
    // `links` null: the service's own (SystemLinks, plugin-manager.cpp).
    PluginManager(PluginEnvironment env, std::vector<PluginConfig> configs, host::CallTarget& calls,
        LinkFactory* links);
    kj::Promise<void> load_all();
    kj::Promise<void> load_one(Slot& slot);
    // What the load's answer makes of the plugin: running, or failed to load.
    kj::Promise<void> finish_load(Slot& slot, kj::Promise<Result<uint32_t>> load);
    static Error load_timeout(const Slot& slot);
    void watch(Slot& slot);
    // Resolves at the plugin's hook_timeout_s from now: the deadline of a load or of a hook.
    kj::Promise<void> deadline(const Slot& slot);
    kj::Promise<host::HookOutcome> call(Slot& slot, const host::HookCall& call);
    host::HookOutcome time_out(Slot& slot, host::Hook hook);
    kj::Promise<Status> veto_from(size_t index, host::HookCall call);
    kj::Promise<void> notify_from(size_t index, host::HookCall call);
    void fail_load(Slot& slot, Error error);
    void latch(Error error);

    PluginEnvironment m_env;
    host::CallTarget& m_calls;
    kj::Own<LinkFactory> m_system_links; // null when the links come from outside
    LinkFactory& m_links;
    std::vector<kj::Own<Slot>> m_slots;
    kj::Maybe<kj::ForkedPromise<void>> m_activation;
    std::optional<Error> m_fatal;
    bool m_routed = false;
};

} // namespace bh::service
