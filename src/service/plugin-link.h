// PluginLink: the service's handle on one loaded plugin, in its own host process or in-process.
#pragma once

#include "base/child-process.h"
#include "config/config.h"
#include "plugin/plugin-runtime.h"
#include "service/plugin-verify.h"

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/timer.h>
#include <memory>

namespace bh::service {

class HostTemplate;

// What starting plugin hosts needs from the service; outlives every link.
struct PluginEnvironment {
    kj::LowLevelAsyncIoProvider& provider;
    kj::UnixEventPort& port;
    kj::Timer& timer;
    int host_exe_fd = -1; // O_PATH fd of bulkhead-pluginhost, executed with execveat
    std::string service_version;
    std::string config_dir; // trusted-keys/ lives there
    bool require_verified = false; // every plugin must be pinned or signed
    // Hosts are forked from one prepared host, the template (plugin/host-template.h), started at
    // the first host; false, or once the template failed, each host is exec'd.
    bool use_host_template = true;
    std::shared_ptr<HostTemplate> host_template; // shared by the copies of this environment
};

// Thread affinity: the service's event-loop thread (which must also be the thread that lives as
// long as the service: a host's parent-death signal is tied to the thread that spawned it).
class PluginLink {
public:
    virtual ~PluginLink() noexcept(false) = default;
    // Loads the plugin (dlopen and entry point): its hook mask, or why it failed.
    virtual kj::Promise<Result<uint32_t>> load(Integrity integrity) = 0;
    // Runs one hook. Rejects (a kj::Exception) when the host died or broke the protocol.
    virtual kj::Promise<host::HookOutcome> call(host::HookCall call) = 0;
    // The host's pid; 0 in-process.
    virtual pid_t pid() const = 0;
    // Resolves once the host is dead and reaped, with what ended it ("killed by signal SIGKILL").
    // Never resolves in-process.
    virtual kj::Promise<std::string> on_death() = 0;
    // Ends the plugin now (it failed to load, or a hook passed its deadline): a host is killed
    // and its death reported as usual; in-process, nothing of the plugin is called again.
    virtual void terminate() = 0;
};

// Where PluginManager gets each plugin's link, and what the link's load is to verify. The service's
// own checks trust (check_plugin_trust) and starts real links (start_plugin_host,
// load_in_process); unit tests substitute fakes, so the manager's policy runs without files, root
// or processes. Thread affinity: the service's event-loop thread.
class LinkFactory {
public:
    virtual ~LinkFactory() = default;
    // What the plugin's load must verify, once its files and the admin's policy allow loading it.
    virtual Result<Integrity> check(const PluginConfig& config) = 0;
    // The plugin's host, spawned (isolation = "process"), or its runtime in the service ("none").
    virtual Result<kj::Own<PluginLink>> start(const PluginConfig& config, host::CallTarget& calls) = 0;
};

// Starts a bulkhead-pluginhost for `config` (never fork()ing the service): forked by the host
// template (started at the first call) when env.use_host_template, else exec'd; connected by a
// socketpair and its two lanes. Its stdout and stderr are forwarded to the service log, each line
// prefixed with the plugin's name. `calls` serves the plugin's service functions.
Result<kj::Own<PluginLink>> start_plugin_host(
    PluginEnvironment& env, const PluginConfig& config, host::CallTarget& calls);
// The host template's pid, 0 when none runs (benchmarks count its memory with the hosts').
pid_t host_template_pid(const PluginEnvironment& env);
// Loads the plugin into the service itself (isolation = "none"): same dispatch, no isolation.
kj::Own<PluginLink> load_in_process(const PluginConfig& config, kj::UnixEventPort& port);

} // namespace bh::service
