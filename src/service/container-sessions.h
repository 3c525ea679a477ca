// ContainerSessions: every user's named container sessions, their VMs, storage and lifecycle hooks.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "plugin/plugin-runtime.h"
#include "service/vm-instance.h"

#include <kj/async.h>
#include <kj/timer.h>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <variant>

namespace bh::service {

// What `bulkhead container session create` asks for.
struct ContainerSessionOptions {
    std::string storage; // absolute host folder (for display); empty: a tmpfs that dies with the session
    uint64_t memory_mb = 0; // 0: the admin's VM memory limit
    uint32_t cpu_millis = 0; // thousandths of a CPU; 0: no CPU limit
    NetworkMode network = NetworkMode::none;
    uint32_t idle_timeout_s = 30; // storage-backed sessions only
};

// Where a container session's VM is. The one state of a session's lifecycle: every transition is
// ContainerSession::enter, and what each state holds exists only in that state.
enum class VmState { idle, starting, running, stopping };
const char* vm_state_name(VmState state);

// What `list` and `show` print of one session.
struct ContainerSessionView {
    uint32_t session_id = 0;
    std::string name;
    uid_t uid = 0;
    std::string user_name;
    pid_t application_pid = 0;
    ContainerSessionOptions options;
    VmState state = VmState::idle;
    pid_t vm_init_pid = 0; // 0 unless running or stopping
};

class ContainerSessions;

// An image of a container session (container-images.cpp): its files are images/HEX in the
// session's storage; `inspect` is the object the hooks get (the spec's "The JSON handed to
// hooks"), its RepoTags kept current.
struct ImageRecord {
    std::string id; // "sha256:" + 64 hex digits
    nlohmann::json inspect;
    size_t bytes = 0; // its inspect JSON's size without tags: what it counts against the user's budget
    std::vector<std::string> tags() const;
};

// A container of a container session: created, running under its `crun run` in the VM, or
// exited. Owned by the session's table; the monitor lives as long as the record.
struct ContainerRecord {
    enum class Status { created, running, exited };
    std::string id; // 64 hex digits
    std::string name;
    std::string image_id;
    Status status = Status::created;
    bool stopping_announced = false; // on_container_stopping ran (once per container)
    bool remove_when_ended = false; // run -d --rm: its monitor removes it
    std::vector<std::string> volume_mounts; // where its volumes are mounted in the VM
    pid_t vm_init_pid = 0; // the VM its files are mounted in (its overlay, its volumes)
    bool starting = false; // container_start runs for it
    nlohmann::json inspect;
    size_t bytes = 0; // its inspect JSON's size, counted against the user's budget
    // Resolves with the wait status of `crun run` (the container's process) once it ended.
    kj::Maybe<kj::ForkedPromise<int>> exited;
};

// One container session. Owned (refcounted) by ContainerSessions' id table from its creation until
// its on_container_session_stopping hook returned; operations in flight hold references. Thread
// affinity: the service's event-loop thread.
class ContainerSession final : public kj::Refcounted {
public:
    SessionIdentity identity; // session_id is a bh_container_session_id
    std::string name;
    pid_t application_pid = 0;
    ContainerSessionOptions options;
    Fd storage; // O_PATH: the --storage folder or the session's tmpfs, mounted at /storage in each VM

    VmState state() const { return static_cast<VmState>(m_vm.index()); }
    // The VM that serves calls made now: the running one, or the stopping one until its stop is
    // committed (on_container_vm_stopping is still running). nullptr otherwise.
    VmInstance* serving_vm();
    ContainerSessionView view() const;

private:
    friend class ContainerSessions;
    struct Idle { };
    // The VM is being spawned; nothing serves calls yet. Resolves once it runs and every plugin
    // got on_container_vm_started, or with why it could not start.
    struct Starting {
        kj::ForkedPromise<Status> attempt;
    };
    struct Running {
        kj::Own<VmInstance> vm;
        // on_container_vm_started delivered to every plugin; a stop waits for it first.
        kj::ForkedPromise<void> announced;
        kj::Promise<void> watcher = nullptr; // the VM ending on its own
        kj::Promise<void> idle_timer = nullptr;
    };
    struct Stopping {
        kj::Own<VmInstance> vm;
        bool committed = false; // on_container_vm_stopping returned: calls fail from now on
        kj::ForkedPromise<void> done;
    };
    using Vm = std::variant<Idle, Starting, Running, Stopping>; // indexed as VmState

    Vm m_vm;
    unsigned m_active = 0; // control operations using the VM (exec): no idle stop meanwhile
    bool m_ending = false; // terminate began: no VM starts again
    std::string m_tmpfs; // the mount point of the session's tmpfs (no --storage); "" otherwise
    // What plugins mounted in the current VM (only those may be unmounted by a plugin).
    std::set<std::string> m_plugin_mounts;
    // Images and containers (container-images.cpp). The store's steps run one at a time
    // (m_store_tail); a container's life runs beside them.
    std::map<std::string, ImageRecord> m_images; // by id
    std::map<std::string, std::string> m_tags; // reference -> image id
    std::map<std::string, ContainerRecord> m_containers; // by id
    kj::Maybe<kj::ForkedPromise<void>> m_store_tail;
    // With storage, the index is saved there (the helper's index-save) after every change, and
    // read back when a session is made on that storage again: dirty until a save took it.
    bool m_index_dirty = false;
    bool m_index_saving = false; // a save is queued or running
    kj::TaskSet* m_monitors = nullptr; // ContainerSessions' tasks, for the containers' monitors
};

// A host folder bound into a container (run -v), opened by the client.
struct ContainerVolume {
    Fd folder;
    std::string host_path; // as the user named it
    std::string container_path;
    bool read_only = false;
};

// What `bulkhead container run` asks for.
struct ContainerRunSpec {
    std::string image; // a reference or an image id
    std::string name; // empty: one is made from the id
    std::vector<std::string> command; // empty: the image's
    std::vector<std::string> env; // K=V, after the image's
    bool network_none = false; // its own network namespace (loopback only); else the VM's
    bool detach = false;
    bool remove = false; // removed once it ended
    bool create_only = false; // created, not started (with detach): container_start starts it
    std::vector<ContainerVolume> volumes;
    // Not with detach: the process's console is a pseudo-terminal of its own, relayed to this.
    std::optional<TerminalSpec> terminal;
};

// Where the session's lifecycle is announced to plugins (implemented by Service on
// PluginManager). created may veto; the others only report.
class ContainerHooks {
public:
    virtual ~ContainerHooks() noexcept(false) = default;
    virtual kj::Promise<Status> session_created(const ContainerSession& session) = 0;
    virtual kj::Promise<void> session_stopping(const ContainerSession& session) = 0;
    virtual kj::Promise<void> vm_started(const ContainerSession& session) = 0;
    virtual kj::Promise<void> vm_stopping(const ContainerSession& session) = 0;
    // The image and container hooks (../shared/spec/plugin-api.md, "The JSON handed to hooks"):
    // `inspect_json` is the object the spec describes, `id` its Id. container_started may veto.
    virtual kj::Promise<Status> container_started(const ContainerSession& session, std::string inspect_json)
        = 0;
    virtual kj::Promise<void> container_stopping(const ContainerSession& session, std::string id) = 0;
    virtual kj::Promise<void> image_created(const ContainerSession& session, std::string inspect_json) = 0;
    virtual kj::Promise<void> image_deleted(const ContainerSession& session, std::string id) = 0;
};

// Every container session. Two tables, on purpose (docs/design/concurrency.md):
// - by id: every session from the moment on_container_session_created is about to run until
//   on_container_session_stopping returned. Only plugin calls resolve sessions here.
// - by (uid, name): the published sessions, listed and opened by users; a session enters it only
//   once every plugin accepted it, and leaves it when terminate begins.
// Thread affinity: the service's event-loop thread; every operation returns failures as values.
class ContainerSessions final : private kj::TaskSet::ErrorHandler {
public:
    ContainerSessions(VmEnvironment& env, ContainerHooks& hooks, uint32_t max_per_user);
    ~ContainerSessions();

    struct Created {
        ContainerSessionView view;
        bool created = false; // false: an existing session was opened
    };
    // Creates `name` for `owner` (or opens it, unless `exclusive`). `storage`: an fd of the folder
    // the client opened, or none for a tmpfs.
    kj::Promise<Result<Created>> create(const SessionIdentity& owner, pid_t application_pid, std::string name,
        ContainerSessionOptions options, Fd storage, bool exclusive, bool start_vm);
    std::vector<ContainerSessionView> list(uid_t owner, bool everyone) const;
    Result<ContainerSessionView> show(uid_t owner, const std::string& name);
    kj::Promise<Status> terminate(uid_t owner, const std::string& name);
    // Runs a program in the session VM's root namespace (starting the VM if needed) with `stdio`;
    // its wait status, or with `detach`, 0 once it started (it lives until it exits or the VM ends).
    kj::Promise<Result<int>> exec(
        uid_t owner, const std::string& name, ProgramSpec spec, std::array<Fd, 3> stdio, bool detach);
    // Stops the session's VM as its idle timer would; true when there was none to stop.
    kj::Promise<Result<bool>> idle(uid_t owner, const std::string& name);
    // Ends every session (`shutdown --all`, service exit). With `forever`, none can be created again.
    kj::Promise<void> terminate_all(bool forever);

    // Images and containers (container-images.cpp). Each starts the session's VM when needed;
    // results are the JSON objects the hooks get (lists of them for ls).
    // `archive` a docker-archive; with `import_as`, a tar of a root filesystem (plain, gzip, xz or
    // zstd) made a one-layer image with that reference.
    kj::Promise<Result<nlohmann::json>> image_load(
        uid_t owner, const std::string& name, Fd archive, const std::string& import_as = {});
    Result<nlohmann::json> image_list(uid_t owner, const std::string& name);
    Result<nlohmann::json> image_inspect(uid_t owner, const std::string& name, const std::string& ref);
    // Removes a tag, and the image with its last one. Prints (as JSON lines) what it did.
    kj::Promise<Result<nlohmann::json>> image_remove(
        uid_t owner, const std::string& name, const std::string& ref, bool force);
    // Another reference to an image (moved from the image it named before, if any); no hook.
    Result<nlohmann::json> image_tag(
        uid_t owner, const std::string& name, const std::string& source, const std::string& target);
    // From and to a registry; `insecure` (plain HTTP, no TLS check) only for a loopback registry.
    kj::Promise<Result<nlohmann::json>> image_pull(
        uid_t owner, const std::string& name, const std::string& ref, bool insecure);
    kj::Promise<Status> image_push(
        uid_t owner, const std::string& name, const std::string& ref, bool insecure);
    // A program in a running container (crun exec) with `stdio`, or with a pseudo-terminal of its
    // own as its console; its wait status.
    kj::Promise<Result<int>> container_exec(uid_t owner, const std::string& name, const std::string& ref,
        std::vector<std::string> command, std::array<Fd, 3> stdio, std::optional<TerminalSpec> terminal);
    // Starts a created container, or an exited one again, detached. `volumes` (its volumes as its
    // inspect names them, opened again by the client) are mounted for a container whose volumes
    // are not: an exited one, or one created in an earlier VM of the session.
    kj::Promise<Status> container_start(
        uid_t owner, const std::string& name, const std::string& ref, std::vector<ContainerVolume> volumes);
    // What a detached container wrote, to `stdio` (stdin unused); with `follow`, then what it
    // writes until its process ends.
    kj::Promise<Status> container_logs(
        uid_t owner, const std::string& name, const std::string& ref, std::array<Fd, 3> stdio, bool follow);
    // The container's id and, unless detached, its process's wait status.
    kj::Promise<Result<std::pair<std::string, int>>> container_run(
        uid_t owner, const std::string& name, ContainerRunSpec spec, std::array<Fd, 3> stdio);
    Result<nlohmann::json> container_list(uid_t owner, const std::string& name, bool all);
    Result<nlohmann::json> container_inspect(uid_t owner, const std::string& name, const std::string& ref);
    // Sends `signal`; with a timeout, waits that long for the end, then sends SIGKILL and waits.
    kj::Promise<Status> container_stop(uid_t owner, const std::string& name, const std::string& ref,
        int signal, std::optional<uint32_t> timeout_s);
    kj::Promise<Status> container_remove(
        uid_t owner, const std::string& name, const std::string& ref, bool force);

    // For plugin calls: the session with this id, published or not yet (nullptr: none).
    ContainerSession* find_by_id(uint32_t id);
    // The container-session functions of the plugin API (host::CallTarget), resolved by id
    // through the id table only, served by serving_vm(): never starting a VM, never waiting for
    // a hook or a start.
    kj::Promise<int> plugin_mount(uint32_t id, std::string host_path, std::string mountpoint, bool read_only);
    kj::Promise<int> plugin_unmount(uint32_t id, std::string mountpoint);
    kj::Promise<Result<host::ProcessStart>> plugin_create_process(
        uint32_t id, std::string executable, std::vector<std::string> argv, std::vector<std::string> env);

private:
    using Key = std::pair<uid_t, std::string>;
    Result<kj::Own<ContainerSession>> find(uid_t owner, const std::string& name);
    Status check_new(const SessionIdentity& owner, const std::string& name,
        const ContainerSessionOptions& options, const Fd& storage) const;
    kj::Promise<Result<Created>> publish(kj::Own<ContainerSession> session, bool exclusive, bool start_vm);
    kj::Promise<void> end(kj::Own<ContainerSession> session);
    kj::Promise<Status> ensure_vm(ContainerSession& session);
    kj::Promise<Status> start_vm(ContainerSession& session);
    kj::Promise<Status> adopt_vm(ContainerSession& session, kj::Own<VmInstance> vm);
    kj::Promise<void> stop_vm(ContainerSession& session);
    void enter(ContainerSession& session, ContainerSession::Vm next);
    void arm_idle_timer(ContainerSession& session);
    Status make_tmpfs(ContainerSession& session);
    void taskFailed(kj::Exception&& exception) override;
    // container-images.cpp
    kj::Promise<Result<std::string>> run_tool(
        ContainerSession& session, std::vector<std::string> args, Fd input, std::string what);
    template<typename T, typename F> kj::Promise<Result<T>> in_store(ContainerSession& session, F step);
    // `again`: a start of an exited container (or one of an earlier VM), which a failed start
    // leaves exited instead of removing.
    kj::Promise<Status> start_container(ContainerSession& session, std::string id, std::array<Fd, 3> stdio,
        std::optional<TerminalSpec> terminal, bool again = false);
    kj::Promise<Result<nlohmann::json>> index_images(ContainerSession& session, std::string printed);
    // The session's index changed: saved to its storage (if it has one) once its VM runs.
    void index_changed(ContainerSession& session);
    void save_index(ContainerSession& session);
    // A new session on storage used before: its index as the last save left it there, checked
    // as a load's output is (what does not pass is left out, with a warning).
    void recover_index(ContainerSession& session);
    struct FoundContainer {
        kj::Own<ContainerSession> session;
        ContainerRecord* container;
    };
    // The session `name` of `owner` and its container `ref` (a name, an id or a prefix of one).
    Result<FoundContainer> find_container(uid_t owner, const std::string& name, const std::string& ref);
    // What the user's images and containers take in the index, over every session of theirs.
    size_t index_bytes(uid_t owner) const;
    // The helper's verb `args` in the VM with `stdio` (or a terminal); its wait status.
    kj::Promise<Result<int>> run_in_vm(ContainerSession& session, std::vector<std::string> args,
        std::array<Fd, 3> stdio, std::optional<TerminalSpec> terminal = std::nullopt);
    kj::Promise<void> end_container(ContainerSession& session, std::string id, int signal);
    kj::Promise<Status> delete_container(ContainerSession& session, std::string id);
    kj::Promise<Status> delete_container_files(ContainerSession& session, std::string id);
    kj::Promise<void> release_volumes(ContainerSession& session, std::string id);
    kj::Promise<Status> mount_volumes(
        ContainerSession& session, std::string id, std::vector<ContainerVolume> volumes);

    VmEnvironment& m_env;
    ContainerHooks& m_hooks;
    uint32_t m_max_per_user;
    std::map<uint32_t, kj::Own<ContainerSession>> m_by_id;
    std::map<Key, kj::Own<ContainerSession>> m_published;
    uint32_t m_next_id = 1;
    bool m_closed = false; // the service is exiting: no session is created from now on
    kj::TaskSet m_tasks { *this };
};

} // namespace bh::service
