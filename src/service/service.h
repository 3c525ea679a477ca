// Service: sessions (one per uid), their VMs and distributions, and the registry. The daemon's core.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "config/config.h"
#include "ipc/loop-inbox.h"
#include "plugin/plugin-runtime.h"
#include "service/container-sessions.h"
#include "service/plugin-manager.h"
#include "service/registry.h"
#include "service/vm-instance.h"
#include "unpack/rootfs-archive.h"

#include <kj/async-io.h>
#include <kj/timer.h>
#include <map>
#include <set>

namespace bh::service {

// Who called: from SO_PEERCRED.
struct Caller {
    uid_t uid = 0;
    gid_t gid = 0;
    pid_t pid = 0;
};

struct DistroView {
    DistroRecord record;
    bool is_default = false;
    bool running = false;
    uint32_t init_pid = 0;
    uint64_t pid_namespace = 0;
    uint64_t skipped_devices = 0; // set only in a registration's answer: device nodes not imported
};

struct SessionView {
    SessionIdentity identity;
    bool vm_running = false;
    pid_t vm_init_pid = 0;
    VmSettings settings;
    std::string network_problem; // the VM's: why it has no network although it asked for one
    std::vector<std::string> running_distros;
};

// One user's session. Owned by Service; never destroyed while the service runs.
struct Session {
    SessionIdentity identity;
    kj::Own<VmInstance> vm;
    // A VM being created (plugins activated, VM started, on_vm_started delivered) or being
    // stopped (stopping hooks delivered, VM ended). The flags say whether the forked promise is
    // still pending; a settled one is replaced by the next attempt, never reset from inside itself.
    kj::Maybe<kj::ForkedPromise<Status>> vm_starting;
    bool starting = false;
    kj::Maybe<kj::ForkedPromise<void>> vm_stopping;
    bool stopping = false;
    kj::Promise<void> vm_watcher = nullptr;
    kj::Promise<void> idle_timer = nullptr;
    unsigned active_runs = 0; // runs and starts in progress: the VM is not idle meanwhile
};

// Thread affinity: everything runs on the service's event-loop thread; an archive is unpacked
// by a bulkhead-unpack process (service/unpack-process.h), watched through its pidfd; other
// blocking work (measuring and deleting root filesystems) runs on short-lived worker threads and
// comes back as promises.
// Every operation returns its failure as a value; nothing here throws to the caller.
//
// Plugins: hooks are awaited as promises on this same loop, so while a hook runs the loop keeps
// serving everything else, including the plugin's own calls back (host::CallTarget below).
// Those calls never wait for a hook, so no cycle of waits can form (docs/design/concurrency.md).
class Service final : public host::CallTarget, private ContainerHooks, private kj::TaskSet::ErrorHandler {
public:
    // `unpack_exe_fd`: an O_PATH fd of bulkhead-unpack, which unpacks every registration's archive.
    Service(VmEnvironment env, int unpack_exe_fd, kj::Timer& timer, ServiceConfig config, Registry registry,
        PluginEnvironment plugin_env, std::vector<PluginConfig> plugins);
    ~Service();

    // The uid a call acts on: the caller's own, or (root only) the one it names.
    Result<uid_t> target_uid(const Caller& caller, int64_t requested) const;
    // What each user may hold at once ([limits] of bulkhead.toml).
    const UserLimits& limits() const { return m_config.limits; }
    const ServiceConfig& config() const { return m_config; }

    // `confirm` is asked, once the archive has been read to its end, whether the sender
    // finished it successfully; a failure there discards the import.
    kj::Promise<Result<DistroView>> register_distribution(uid_t owner, std::string name, Fd archive,
        std::string package, kj::Function<kj::Promise<Status>()> confirm);
    // `register --in-place`: root adopts the folder `directory` (absolute, canonical, a directory
    // of root's, not / nor the service's state) as the root filesystem of a root distribution, in
    // place, with no copy.
    kj::Promise<Result<DistroView>> register_in_place(
        std::string name, std::string directory, std::string package);
    // With `delete_in_place`, an adopted folder goes too; otherwise it stays where it was.
    kj::Promise<Status> unregister_distribution(uid_t owner, std::string name, bool delete_in_place = false);
    Status set_default(uid_t owner, const std::string& name);
    // `bulkhead export`: the distribution's files as a tar to `out` (pack_rootfs), even while it runs.
    kj::Promise<Status> export_distribution(
        uid_t owner, std::string name, Fd out, TarCompression compression);
    kj::Promise<Result<DistroView>> start_distribution(
        uid_t owner, std::string name, UserOverrides overrides);
    kj::Promise<Result<int>> run(
        uid_t owner, std::string distro, ProgramSpec spec, std::array<Fd, 3> stdio, UserOverrides overrides);
    kj::Promise<Status> terminate_distribution(uid_t owner, std::string name);
    kj::Promise<Status> shutdown_vm(uid_t owner);
    // Stops every distribution, then every VM (`bulkhead shutdown --all`); the service serves on.
    kj::Promise<void> stop_all_vms();
    // The service is exiting (SIGTERM): no VM starts from now on, every VM is stopped, then the
    // plugins' route to the service is cut. Once only, from main.
    kj::Promise<void> shutdown_all();

    // The VM operations of the plugin API, addressed by the session's owner.
    kj::Promise<Status> vm_mount(uid_t owner, Fd dir, std::string vm_path, bool read_only, std::string name);
    kj::Promise<Result<Fd>> vm_exec(uid_t owner, std::string distro, ProgramSpec spec);

    std::vector<DistroView> list(uid_t owner, bool everyone) const;
    std::vector<SessionView> sessions(uid_t owner, bool everyone) const;
    std::vector<PluginView> plugins() const { return m_plugins->views(); }
    // Every user's container sessions (`bulkhead container session ...`).
    ContainerSessions& containers() { return *m_containers; }
    // Who `uid` is, for a session of theirs (session_id left 0).
    static SessionIdentity identity_of(uid_t uid);
    // Each VM's limits and where they are enforced.
    const VmLimitsView& vm_limits() const { return m_env.cgroups.view(); }

    // host::CallTarget: the service functions of the plugin API, addressed by session id.
    kj::Promise<int> mount_folder(uint32_t session, std::string host_path, std::string vm_path,
        bool read_only, std::string name) override;
    kj::Promise<Result<Fd>> execute(uint32_t session, std::optional<Uuid> distro, std::string path,
        std::vector<std::string> argv) override;
    kj::Promise<int> container_mount(
        uint32_t session, std::string host_path, std::string mountpoint, bool read_only) override;
    kj::Promise<int> container_unmount(uint32_t session, std::string mountpoint) override;
    kj::Promise<Result<host::ProcessStart>> create_process(uint32_t session, std::string executable,
        std::vector<std::string> argv, std::vector<std::string> env) override;

private:
    Session& session_of(uid_t uid);
    kj::Promise<Status> ensure_vm(Session& session, const UserOverrides& overrides);
    kj::Promise<Status> create_vm(Session& session, VmSettings settings);
    kj::Promise<void> deliver_stopping_hooks(Session& session, VmInstance& vm);
    Session* session_by_id(uint32_t id);
    host::HookCall hook_call(host::Hook hook, const Session& session) const;
    host::HookCall hook_call(host::Hook hook, const Session& session, const DistroRecord& record,
        const RunningDistro* running) const;
    void adopt_vm(Session& session, kj::Own<VmInstance> vm);
    void arm_idle_timer(Session& session);
    kj::Promise<void> stop_vm(Session& session);
    kj::Promise<Status> ensure_distribution(
        Session& session, const DistroRecord& record, const UserOverrides& overrides);
    DistroView view_of(const DistroRecord& record) const;
    Result<DistroRecord> find_record(uid_t owner, const std::string& name) const;
    // The /etc/subuid and /etc/subgid ranges `owner`'s VMs and imports map (none for root).
    Result<std::optional<SubordinateIds>> subordinate_of(uid_t owner);
    kj::Promise<Result<DistroView>> commit_registration(uid_t owner, DistroRecord record,
        std::string directory, kj::Function<kj::Promise<Status>()> confirm, Status imported);
    void taskFailed(kj::Exception&& exception) override;
    // ContainerHooks: the container session hooks, delivered through the plugin manager.
    kj::Promise<Status> session_created(const ContainerSession& session) override;
    kj::Promise<void> session_stopping(const ContainerSession& session) override;
    kj::Promise<void> vm_started(const ContainerSession& session) override;
    kj::Promise<void> vm_stopping(const ContainerSession& session) override;
    kj::Promise<Status> container_started(const ContainerSession& session, std::string inspect_json) override;
    kj::Promise<void> container_stopping(const ContainerSession& session, std::string id) override;
    kj::Promise<void> image_created(const ContainerSession& session, std::string inspect_json) override;
    kj::Promise<void> image_deleted(const ContainerSession& session, std::string id) override;
    // `text`: HookCall::text, for the container and image hooks.
    static host::HookCall container_hook(
        host::Hook hook, const ContainerSession& session, std::string text = {});

    VmEnvironment m_env;
    int m_unpack_exe_fd;
    kj::Timer& m_timer;
    ipc::LoopInbox m_worker_results; // what inspection and removal threads return (on_worker_thread)
    ServiceConfig m_config;
    Registry m_registry;
    std::map<uid_t, kj::Own<Session>> m_sessions;
    std::set<std::pair<uid_t, std::string>> m_registering;
    uint32_t m_next_session_id = 1;
    bool m_shutting_down = false; // set by shutdown_all (the process exits): no VM starts after it
    kj::Own<PluginManager> m_plugins;
    kj::Own<ContainerSessions> m_containers;
    // False once the Service is destroyed: for what outlives it (a call's promise, held by the event loop).
    std::shared_ptr<bool> m_alive = std::make_shared<bool>(true);
    kj::TaskSet m_tasks { *this };
};

} // namespace bh::service
