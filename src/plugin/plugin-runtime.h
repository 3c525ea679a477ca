// PluginRuntime: one loaded plugin, its hook thread, and the C stubs of bh_plugin_api_v1.
//
// Shared by bulkhead-pluginhost (one plugin per process) and by bulkheadd's in-process mode
// (isolation = "none"), so both give plugins the same semantics: the entry point and every hook
// run on the plugin's own hook thread, one at a time; the service functions are callable from
// any thread and are carried to an event loop by a kj::Executor.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "base/uuid.h"
#include "ipc/loop-inbox.h"
#include "plugin/verified-load.h"

#include <array>
#include <bulkhead/plugin_api.h>
#include <kj/async-unix.h>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bh::host {

// The hooks of this version, in bh_plugin_hooks_v1 order (bit i of a hook mask is hook i).
enum class Hook : uint32_t {
    vm_started = 0,
    vm_stopping = 1,
    distribution_started = 2,
    distribution_stopping = 3,
    distribution_registered = 4,
    distribution_unregistered = 5,
    container_session_created = 6,
    container_session_stopping = 7,
    container_started = 8,
    container_stopping = 9,
    image_created = 10,
    image_deleted = 11,
    container_vm_started = 12,
    container_vm_stopping = 13,
};
const char* hook_name(Hook hook);

#define BH_STRINGIFY_(x) #x
#define BH_STRINGIFY(x) BH_STRINGIFY_(x)
// The one symbol a plugin exports, as dlsym looks it up and as messages name it.
inline constexpr const char entry_point_name[] = BH_STRINGIFY(BH_PLUGIN_ENTRY_V1);

// Veto hooks can fail the operation that fired them; only they may call plugin_error.
bool is_veto(Hook hook);

struct SessionArgs {
    uint32_t session_id = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::string user_name;
};

// A distribution, online or offline; nullopt fields reach the plugin as NULL.
struct DistroArgs {
    Uuid id;
    std::string name;
    uint64_t pid_namespace = 0;
    uint32_t init_pid = 0;
    std::optional<std::string> package;
    std::optional<std::string> flavor;
    std::optional<std::string> version;
};

// A container session (container_* hooks).
struct ContainerArgs {
    uint32_t session_id = 0;
    std::string display_name;
    int32_t application_pid = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::string user_name;
};

// Everything one hook call needs, owned (the C structs point into it during the call).
struct HookCall {
    Hook hook = Hook::vm_started;
    SessionArgs session;
    uint32_t custom_config_flags = 0; // vm_started only
    DistroArgs distro; // distribution_* only
    ContainerArgs container; // container_* and image_* only
    // container_started and image_created: the inspect JSON; container_stopping and
    // image_deleted: the container's or image's Id.
    std::string text;
};

struct HookOutcome {
    int code = 0; // 0, or the negative code the hook returned
    std::optional<std::string> message; // plugin_error's text, only with a failing veto hook
};

// A process a plugin started in a container session's VM, as the serving loop holds it.
// Destroyed on that loop (process_release); destroying it kills the process if it still runs.
class ProcessHandle {
public:
    virtual ~ProcessHandle() noexcept(false) = default;
    // The exit code (or 128 + the signal that ended it); -EBUSY while it runs.
    virtual kj::Promise<Result<int>> exit_code() = 0;
};

// What container_create_process hands back: the handle, the plugin's ends of the program's
// stdin, stdout and stderr, and an fd that polls readable once it exited.
struct ProcessStart {
    kj::Own<ProcessHandle> handle;
    std::array<Fd, 3> stdio;
    Fd exit;
};

// What the stubs reach, implemented on one event-loop thread (the host's IPC loop, or the
// service's loop in-process). Plugin threads never call these directly: the stubs queue them to
// that loop (plugin/stub-route.h) and block until the promise resolves.
class CallTarget {
public:
    virtual ~CallTarget() noexcept(false) = default;
    virtual kj::Promise<int> mount_folder(
        uint32_t session, std::string host_path, std::string vm_path, bool read_only, std::string name)
        = 0;
    // `distro` empty: the VM's root namespace.
    virtual kj::Promise<Result<Fd>> execute(
        uint32_t session, std::optional<Uuid> distro, std::string path, std::vector<std::string> argv)
        = 0;
    // The container-session functions: 0 or a negative code, as the plugin's call returns it.
    virtual kj::Promise<int> container_mount(
        uint32_t session, std::string host_path, std::string mountpoint, bool read_only)
        = 0;
    virtual kj::Promise<int> container_unmount(uint32_t session, std::string mountpoint) = 0;
    // `env` empty: the default environment. A program that cannot be executed: -ENOENT and so on.
    virtual kj::Promise<Result<ProcessStart>> create_process(
        uint32_t session, std::string executable, std::vector<std::string> argv, std::vector<std::string> env)
        = 0;
};

// Points the process's stubs at `target`, served on the calling thread's event loop (`port`
// belongs to it). Call it on that loop's thread. `version` is what plugins see as api->version.
// How calls cross threads: plugin/stub-route.h.
void route_stubs_to(CallTarget& target, bh_version version, kj::UnixEventPort& port);
// Cuts the route (on the same thread): stubs called later fail with -ESHUTDOWN, and stubs in
// flight fail instead of waiting. Nothing a stub touches is ever freed. The promise resolves once
// every stub in flight has returned; until then the loop must keep running, and it must not be
// destroyed.
kj::Promise<void> unroute_stubs();
// The version handed to plugins, parsed from "major.minor.revision".
bh_version parse_version(const char* text);

// One plugin: its dlopen handle, hooks table and hook thread. Thread affinity: an event-loop
// thread; load() and run() queue their work to the hook thread (one job at a time, in order)
// and resolve on the caller's loop. Destroying it stops the hook thread once the running job
// returns; a plugin stuck in a hook keeps its thread (detached), never the caller. The library
// is never unloaded: threads the plugin started may still be running its code.
class PluginRuntime {
public:
    // `port` is the caller's loop: results come back to it through a LoopInbox.
    PluginRuntime(std::string name, kj::UnixEventPort& port);
    ~PluginRuntime();
    PluginRuntime(const PluginRuntime&) = delete;
    PluginRuntime& operator=(const PluginRuntime&) = delete;

    // dlopen(RTLD_NOW | RTLD_LOCAL) of the sealed memfd the service verified (dlopen_memfd;
    // `path` names the plugin) and its entry point; on success, the mask of hooks it set
    // (bit i: hook i of bh_plugin_hooks_v1).
    kj::Promise<Result<uint32_t>> load(Fd memfd, std::string path);
    // Runs one hook, enforcing plugin_error's rules. A hook the plugin left NULL succeeds.
    kj::Promise<HookOutcome> run(HookCall call);
    // bulkhead-pluginhost, after a successful load(): from then on the hook thread itself reads
    // each hook from `lane` (proto HookRequest, Cap'n Proto stream framing), runs it as run()
    // does and writes its HookResult back, one at a time in order, until the service closes the
    // lane. Nothing else is queued to the hook thread meanwhile.
    void serve_hook_lane(Fd lane);
    // The plugin is dead to us (its load or a hook past its deadline): queued and later jobs are
    // dropped, their promises reject, and nothing of the plugin runs on the hook thread again. A
    // load or hook still running keeps the thread until it returns (for ever, if it never does);
    // its result is thrown away.
    void abandon();

    struct State;

private:
    std::shared_ptr<State> m_state;
    ipc::LoopInbox m_inbox; // destroyed after the destructor drops the queued jobs
};

} // namespace bh::host
