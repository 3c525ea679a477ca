// Service: the operations behind the control protocol and the plugin API.
#include "service/service.h"

#include "base/log.h"
#include "plugin/hook-codec.h"
#include "service/subordinate-ids.h"
#include "service/unpack-process.h"
#include "unpack/rootfs-tree.h"

#include <algorithm>
#include <bulkhead/plugin_api.h>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <kj/thread.h>
#include <pwd.h>
#include <sys/stat.h>

namespace bh::service {

namespace {

    // Runs blocking `work` on a thread of its own; the promise resolves on the loop of `inbox`
    // (not through kj's cross-thread fulfiller, which ThreadSanitizer cannot see: loop-inbox.h).
    // Dropping the promise joins the thread.
    template<typename T> kj::Promise<T> on_worker_thread(ipc::LoopInbox& inbox, kj::Function<T()> work)
    {
        auto result = inbox.expect<T>();
        auto thread = kj::heap<kj::Thread>(
            [work = kj::mv(work), sender = kj::mv(result.sender)]() mutable { sender.send(work()); });
        return kj::mv(result.promise).attach(kj::mv(thread));
    }

    std::string user_name_of(uid_t uid)
    {
        passwd entry {};
        passwd* found = nullptr;
        char buffer[4096];
        if (getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found) == 0 && found)
            return found->pw_name;
        return std::to_string(uid);
    }

    Error no_such_distribution(const std::string& name)
    {
        return Error { -ENOENT, "There is no distribution with the supplied name '" + name + "'" };
    }

    struct ImportOutcome {
        Status status;
        OsRelease os;
        ImportUsage usage;
    };

    // What the service reads of an unpacked tree itself: its size, by its own measure (the
    // unpacking process's word is not taken for it), and its os-release.
    ImportOutcome inspect_import(const std::string& rootfs)
    {
        auto usage = measure_tree(rootfs);
        if (!usage)
            return { usage.take_error(), {}, {} };
        Fd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        return { {}, root ? read_os_release(root.get()) : OsRelease {},
            ImportUsage { usage->bytes, usage->entries } };
    }

    // What a user has left of storage_bytes/inodes_per_user over their registered distributions
    // (records older than this count as 0).
    struct StorageLeft {
        uint64_t bytes;
        uint64_t inodes;
    };
    StorageLeft storage_left(const UserLimits& limits, const std::vector<const DistroRecord*>& records)
    {
        uint64_t bytes = 0, inodes = 0;
        for (const DistroRecord* record : records) {
            bytes += record->bytes;
            inodes += record->inodes;
        }
        return { limits.storage_bytes - std::min(bytes, limits.storage_bytes),
            limits.storage_inodes - std::min(inodes, limits.storage_inodes) };
    }

    // Every import leaves this much of the state filesystem free for unprivileged writers.
    constexpr uint64_t keep_free_bytes = 64ULL << 20;
    constexpr size_t max_package = 4096;

} // namespace

Service::Service(VmEnvironment env, int unpack_exe_fd, kj::Timer& timer, ServiceConfig config,
    Registry registry, PluginEnvironment plugin_env, std::vector<PluginConfig> plugins)
    : m_env(env)
    , m_unpack_exe_fd(unpack_exe_fd)
    , m_timer(timer)
    , m_worker_results(env.port)
    , m_config(std::move(config))
    , m_registry(std::move(registry))
    , m_plugins(kj::heap<PluginManager>(std::move(plugin_env), std::move(plugins), *this))
    , m_containers(kj::heap<ContainerSessions>(
          m_env, static_cast<ContainerHooks&>(*this), m_config.limits.container_sessions))
{
}

Service::~Service()
{
    *m_alive = false;
}

void Service::taskFailed(kj::Exception&& exception)
{
    log_error(std::string("background task failed: ") + exception.getDescription().cStr());
}

Result<uid_t> Service::target_uid(const Caller& caller, int64_t requested) const
{
    if (requested < 0 || requested == caller.uid)
        return caller.uid;
    if (caller.uid != 0)
        return Error { -EPERM, "only root may act on another user's session" };
    if (requested > UINT32_MAX - 1)
        return Error { -EINVAL, "invalid uid " + std::to_string(requested) };
    return static_cast<uid_t>(requested);
}

SessionIdentity Service::identity_of(uid_t uid)
{
    passwd entry {};
    passwd* found = nullptr;
    char buffer[4096];
    gid_t gid = getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found) == 0 && found ? found->pw_gid : uid;
    return { 0, uid, gid, user_name_of(uid) };
}

Session& Service::session_of(uid_t uid)
{
    auto it = m_sessions.find(uid);
    if (it == m_sessions.end()) {
        auto session = kj::heap<Session>();
        session->identity = identity_of(uid);
        session->identity.session_id = m_next_session_id++;
        it = m_sessions.emplace(uid, kj::mv(session)).first;
    }
    return *it->second;
}

Result<DistroRecord> Service::find_record(uid_t owner, const std::string& name) const
{
    const DistroRecord* record = name.empty() ? m_registry.default_of(owner) : m_registry.find(owner, name);
    if (!record)
        return name.empty()
            ? Error { -ENOENT, "no distribution is registered; register one with 'bulkhead register'" }
            : no_such_distribution(name);
    return *record;
}

DistroView Service::view_of(const DistroRecord& record) const
{
    DistroView view { record };
    const DistroRecord* fallback = m_registry.default_of(record.owner);
    view.is_default = fallback && fallback->uuid == record.uuid;
    auto session = m_sessions.find(record.owner);
    if (session != m_sessions.end() && session->second->vm && session->second->vm->running()) {
        if (const RunningDistro* running = session->second->vm->find_distribution(record.uuid)) {
            view.running = true;
            view.init_pid = running->init_pid;
            view.pid_namespace = running->pid_namespace;
        }
    }
    return view;
}

kj::Promise<Result<DistroView>> Service::register_distribution(uid_t owner, std::string name, Fd archive,
    std::string package, kj::Function<kj::Promise<Status>()> confirm)
{
    if (!is_valid_distro_name(name))
        return Result<DistroView>(Error { -EINVAL,
            "invalid distribution name '" + name
                + "': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)" });
    if (m_registry.find(owner, name) || m_registering.contains({ owner, name }))
        return Result<DistroView>(
            Error { -EEXIST, "A distribution with the supplied name '" + name + "' already exists" });
    if (package.size() > max_package)
        return Result<DistroView>(Error { -EINVAL,
            "the package string of '" + name + "' is longer than " + std::to_string(max_package)
                + " bytes" });
    const UserLimits& limits = m_config.limits;
    auto mine = m_registry.of_user(owner);
    size_t registering = std::count_if(m_registering.begin(), m_registering.end(),
        [owner](const auto& entry) { return entry.first == owner; });
    if (mine.size() + registering >= limits.distributions)
        return Result<DistroView>(Error { -EDQUOT,
            "cannot register '" + name + "': uid " + std::to_string(owner) + " has "
                + std::to_string(mine.size() + registering)
                + " distributions, the most allowed ([limits] distributions_per_user in bulkhead.toml)" });
    StorageLeft left = storage_left(limits, mine);
    if (left.bytes == 0 || left.inodes == 0)
        return Result<DistroView>(Error { -EDQUOT,
            "cannot register '" + name + "': uid " + std::to_string(owner)
                + " has used all of its storage ([limits] storage_bytes_per_user, "
                  "storage_inodes_per_user)" });
    // Unpacked with the ids the user's VMs will have: a subordinate range keeps the archive's owners.
    auto subordinate = subordinate_of(owner);
    if (!subordinate)
        return Result<DistroView>(Error {
            subordinate.error().code, "cannot register '" + name + "': " + subordinate.error().message });
    DistroRecord record { name, Uuid::random(), owner, std::move(package) };
    std::string directory = m_registry.directory_of(record.uuid);
    if (::mkdir(directory.c_str(), 0700) < 0)
        return Result<DistroView>(Error::from_errno(errno, "cannot create " + directory));
    m_registering.insert({ owner, name });
    gid_t group = session_of(owner).identity.gid;
    // Each concurrent registration of a user may use what the user has left; the total is
    // checked again when one is committed.
    std::string rootfs = directory + "/rootfs";
    auto unpacked = unpack_rootfs(m_env.port,
        UnpackJob { m_unpack_exe_fd, archive.get(), rootfs, owner, group, subordinate.value(),
            ImportLimits { left.bytes, left.inodes, keep_free_bytes } });
    auto inspected = unpacked.then([this, rootfs](Result<uint64_t> skipped_devices) {
        if (!skipped_devices)
            return kj::Promise<ImportOutcome>(ImportOutcome { skipped_devices.take_error(), {}, {} });
        return on_worker_thread<ImportOutcome>(m_worker_results, [rootfs, skipped = *skipped_devices]() {
            ImportOutcome outcome = inspect_import(rootfs);
            outcome.usage.skipped_devices = skipped;
            return outcome;
        });
    });
    // Until the import is over, the directory is this registration's to remove: dropped with
    // its caller (the client went away), it leaves nothing on disk. From then on the commit owns
    // it, and runs to its end whoever still waits for it (registry, plugins and cleanup must not
    // be cut in the middle).
    auto handed_over = kj::heap<bool>(false);
    bool* handed_over_flag = handed_over.get();
    return kj::mv(inspected)
        .then([this, record = std::move(record), directory, confirm = kj::mv(confirm), handed_over_flag](
                  ImportOutcome outcome) mutable -> kj::Promise<Result<DistroView>> {
            *handed_over_flag = true;
            if (!outcome.status && outcome.status.error().code == -EDQUOT)
                outcome.status = Error { -EDQUOT,
                    outcome.status.error().message + ", what uid " + std::to_string(record.owner)
                        + " has left of its storage ([limits] storage_bytes_per_user, "
                          "storage_inodes_per_user: "
                        + std::to_string(m_config.limits.storage_bytes) + " bytes, "
                        + std::to_string(m_config.limits.storage_inodes) + " entries)" };
            record.flavor = outcome.os.id.value_or("");
            record.version = outcome.os.version_id.value_or("");
            record.bytes = outcome.usage.bytes;
            record.inodes = outcome.usage.entries;
            uid_t owner = record.owner;
            std::string name = record.name;
            uint64_t skipped_devices = outcome.usage.skipped_devices;
            auto commit = commit_registration(
                owner, std::move(record), directory, kj::mv(confirm), std::move(outcome.status))
                              .then([skipped_devices](Result<DistroView> view) {
                                  if (view)
                                      view->skipped_devices = skipped_devices;
                                  return view;
                              })
                              .attach(kj::defer([this, owner, name]() {
                                  m_registering.erase({ owner, name });
                              }))
                              .fork();
            m_tasks.add(commit.addBranch().ignoreResult());
            return commit.addBranch();
        })
        // Cap'n Proto keeps a call's promise until the event loop itself goes, after the Service: a
        // registration cut by the service's exit must not touch it then (its folder, without a
        // record.json, is removed at the next start).
        .attach(
            kj::defer([this, alive = m_alive, owner, name, directory, handed_over = kj::mv(handed_over)]() {
                if (*handed_over || !*alive)
                    return;
                m_registering.erase({ owner, name });
                m_tasks.add(on_worker_thread<Status>(m_worker_results, [directory]() {
                    return remove_tree(directory);
                }).ignoreResult());
            }));
}

kj::Promise<Result<DistroView>> Service::register_in_place(
    std::string name, std::string directory, std::string package)
{
    auto refuse = [&directory](int code, const std::string& why) {
        return Result<DistroView>(Error { code, "cannot adopt '" + directory + "' in place: " + why });
    };
    if (!is_valid_distro_name(name))
        return Result<DistroView>(Error { -EINVAL,
            "invalid distribution name '" + name
                + "': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)" });
    if (m_registry.find(0, name) || m_registering.contains({ 0, name }))
        return Result<DistroView>(
            Error { -EEXIST, "A distribution with the supplied name '" + name + "' already exists" });
    if (package.size() > max_package)
        return Result<DistroView>(Error { -EINVAL, "the package string of '" + name + "' is too long" });
    if (directory.empty() || directory.front() != '/')
        return refuse(-EINVAL, "not an absolute path");
    // The path as the kernel resolves it, so that no link in it can later be pointed elsewhere.
    char* resolved = ::realpath(directory.c_str(), nullptr);
    if (!resolved)
        return refuse(-errno, std::strerror(errno));
    std::string canonical = resolved;
    std::free(resolved);
    if (canonical != directory)
        return refuse(-EINVAL, "name it as it is, without links, . or .. ('" + canonical + "')");
    struct stat st;
    if (::lstat(directory.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        return refuse(-ENOTDIR, "not a directory");
    if (st.st_uid != 0 || (st.st_mode & 022))
        return refuse(-EPERM, "it must be root's, and writable by root alone");
    std::string state = m_registry.distributions_dir().substr(0, m_registry.distributions_dir().rfind('/'));
    auto within = [](const std::string& path, const std::string& folder) {
        return path == folder || path.rfind(folder + "/", 0) == 0;
    };
    if (directory == "/" || within(directory, state) || within(state, directory))
        return refuse(-EINVAL, "it is /, or holds or is inside the service's state (" + state + ")");
    for (const DistroRecord* other : m_registry.all()) {
        if (!other->in_place.empty()
            && (within(directory, other->in_place) || within(other->in_place, directory)))
            return refuse(
                -EEXIST, "distribution '" + other->name + "' adopted '" + other->in_place + "' already");
    }
    auto mine = m_registry.of_user(0);
    if (mine.size() >= m_config.limits.distributions)
        return Result<DistroView>(Error { -EDQUOT,
            "cannot register '" + name + "': uid 0 has " + std::to_string(mine.size())
                + " distributions, the most allowed ([limits] distributions_per_user in bulkhead.toml)" });
    DistroRecord record { name, Uuid::random(), 0, std::move(package) };
    record.in_place = directory;
    Fd root(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root)
        return refuse(-errno, std::strerror(errno));
    OsRelease os = read_os_release(root.get());
    record.flavor = os.id.value_or("");
    record.version = os.version_id.value_or("");
    // Its directory holds its record alone: the files stay where they are.
    std::string record_dir = m_registry.directory_of(record.uuid);
    if (::mkdir(record_dir.c_str(), 0700) < 0)
        return Result<DistroView>(Error::from_errno(errno, "cannot create " + record_dir));
    m_registering.insert({ 0, name });
    return commit_registration(
        0, std::move(record), record_dir, []() { return kj::Promise<Status>(Status()); }, Status())
        .attach(kj::defer([this, name]() {
            m_registering.erase({ 0, name });
        }));
}

kj::Promise<Result<DistroView>> Service::commit_registration(uid_t owner, DistroRecord record,
    std::string directory, kj::Function<kj::Promise<Status>()> confirm, Status imported)
{
    auto confirmed = imported ? confirm() : kj::Promise<Status>(std::move(imported));
    return confirmed.then([this, owner, record = std::move(record), directory](Status status) mutable {
        // Concurrent registrations of one user each had all that was left: the first to commit
        // takes it, the others fail here.
        StorageLeft left = storage_left(m_config.limits, m_registry.of_user(owner));
        if (status && (record.bytes > left.bytes || record.inodes > left.inodes))
            status = Error { -EDQUOT,
                "cannot register '" + record.name + "': uid " + std::to_string(owner)
                    + " would use more than its storage ([limits] storage_bytes_per_user, "
                      "storage_inodes_per_user)" };
        if (status)
            status = m_registry.add(record);
        if (status) {
            log_info("registered '" + record.name + "' (" + record.uuid.to_string() + ") for uid "
                + std::to_string(owner));
            auto hook = hook_call(host::Hook::distribution_registered, session_of(owner), record, nullptr);
            return m_plugins->notify(std::move(hook)).then([this, record]() -> Result<DistroView> {
                return view_of(record);
            });
        }
        return on_worker_thread<Status>(m_worker_results, [directory]() {
            return remove_tree(directory);
        }).then([status = std::move(status)](Status) mutable -> Result<DistroView> {
            return status.take_error();
        });
    });
}

Result<std::optional<SubordinateIds>> Service::subordinate_of(uid_t owner)
{
    if (owner == 0)
        return std::optional<SubordinateIds>();
    const SessionIdentity& identity = session_of(owner).identity;
    return subordinate_ids_of(identity.user_name, owner, identity.gid);
}

kj::Promise<Status> Service::export_distribution(
    uid_t owner, std::string name, Fd out, TarCompression compression)
{
    auto record = find_record(owner, name);
    if (!record || name.empty())
        return Status(no_such_distribution(name));
    auto subordinate = subordinate_of(owner);
    if (!subordinate)
        return Status(Error {
            subordinate.error().code, "cannot export '" + name + "': " + subordinate.error().message });
    gid_t group = session_of(owner).identity.gid;
    // The fd is handed on at once: the confined process holds its own copy.
    return pack_rootfs(m_env.port,
        PackJob { m_unpack_exe_fd, out.get(), record->name, m_registry.rootfs_of(*record), owner, group,
            subordinate.value(), compression });
}

kj::Promise<Status> Service::unregister_distribution(uid_t owner, std::string name, bool delete_in_place)
{
    auto record = find_record(owner, name);
    if (!record || name.empty())
        return Status(no_such_distribution(name));
    return terminate_distribution(owner, name)
        .then([this, owner, record = record.value(), delete_in_place](Status) {
            Status removed = m_registry.remove(owner, record.name);
            if (!removed)
                return kj::Promise<Status>(std::move(removed));
            std::string directory = m_registry.directory_of(record.uuid);
            // An adopted folder stays unless asked for: it was never the service's.
            std::string adopted = delete_in_place ? record.in_place : "";
            log_info("unregistered '" + record.name + "' for uid " + std::to_string(owner));
            auto hook = hook_call(host::Hook::distribution_unregistered, session_of(owner), record, nullptr);
            return m_plugins->notify(std::move(hook)).then([this, directory, adopted]() {
                return on_worker_thread<Status>(m_worker_results, [directory, adopted]() {
                    Status removed = remove_tree(directory);
                    if (removed && !adopted.empty())
                        removed = remove_tree(adopted);
                    return removed;
                });
            });
        });
}

Status Service::set_default(uid_t owner, const std::string& name)
{
    if (!m_registry.find(owner, name))
        return no_such_distribution(name);
    return m_registry.set_default(owner, name);
}

kj::Promise<Status> Service::ensure_vm(Session& session, const UserOverrides& overrides)
{
    // Once shutdown_all has begun, no VM may start: it would outlive the stops being awaited,
    // and activate plugins whose route is being cut.
    if (m_shutting_down)
        return Status(Error { -ESHUTDOWN, "the service is shutting down" });
    if (session.stopping) {
        KJ_IF_MAYBE (stopping, session.vm_stopping)
            return stopping->addBranch().then(
                [this, &session, overrides]() { return ensure_vm(session, overrides); });
    }
    if (session.starting) {
        KJ_IF_MAYBE (starting, session.vm_starting)
            return starting->addBranch();
    }
    if (session.vm && session.vm->running())
        return Status();
    auto settings = apply_policy(m_config, overrides);
    if (!settings)
        return Status(settings.take_error());
    session.starting = true;
    auto attempt = create_vm(session, settings.value()).then([&session](Status status) {
        session.starting = false;
        return status;
    });
    auto& forked = session.vm_starting.emplace(attempt.fork());
    return forked.addBranch();
}

// Plugins first (a latched fatal plugin error fails here, before any VM exists), then the VM,
// then on_vm_started: a veto stops the VM again, with on_vm_stopping delivered as usual.
kj::Promise<Status> Service::create_vm(Session& session, VmSettings settings)
{
    return m_plugins->activate().then([this, &session, settings](Status active) -> kj::Promise<Status> {
        if (!active)
            return kj::mv(active);
        return VmInstance::start(m_env, session.identity, settings)
            .then([this, &session](Result<kj::Own<VmInstance>> vm) -> kj::Promise<Status> {
                if (!vm)
                    return Status(vm.take_error());
                adopt_vm(session, kj::mv(vm.value()));
                return m_plugins->notify_veto(hook_call(host::Hook::vm_started, session));
            })
            .then([this, &session](Status status) -> kj::Promise<Status> {
                if (status)
                    return kj::mv(status);
                return stop_vm(session).then([status = kj::mv(status)]() mutable { return kj::mv(status); });
            });
    });
}

void Service::adopt_vm(Session& session, kj::Own<VmInstance> vm)
{
    log_info("VM started for uid " + std::to_string(session.identity.uid) + " (init pid "
        + std::to_string(vm->init_pid()) + ")");
    VmInstance* raw = vm.get();
    session.vm = kj::mv(vm);
    session.vm_watcher = raw->on_failure()
                             .then([this, &session, raw]() {
                                 m_tasks.add(kj::evalLater([this, &session, raw]() -> kj::Promise<void> {
                                     if (session.vm.get() != raw || !raw->running())
                                         return kj::READY_NOW;
                                     log_warning("the VM of uid " + std::to_string(session.identity.uid)
                                         + " ended unexpectedly");
                                     return stop_vm(session);
                                 }));
                             })
                             .eagerlyEvaluate(nullptr);
    arm_idle_timer(session);
}

void Service::arm_idle_timer(Session& session)
{
    session.idle_timer = nullptr;
    if (!session.vm || session.active_runs > 0 || session.vm->settings().idle_timeout_s == 0)
        return;
    auto delay = session.vm->settings().idle_timeout_s * kj::SECONDS;
    session.idle_timer
        = m_timer.afterDelay(delay)
              .then([this, &session]() {
                  log_info("the VM of uid " + std::to_string(session.identity.uid) + " is idle; stopping it");
                  m_tasks.add(stop_vm(session));
              })
              .eagerlyEvaluate(nullptr);
}

kj::Promise<void> Service::stop_vm(Session& session)
{
    if (session.stopping) {
        KJ_IF_MAYBE (stopping, session.vm_stopping)
            return stopping->addBranch();
    }
    if (!session.vm)
        return kj::READY_NOW;
    session.stopping = true;
    auto vm = kj::addRef(*session.vm);
    // The VM stays the session's during the hooks: calls made from them are served by it.
    auto attempt = deliver_stopping_hooks(session, *vm)
                       .then([&session, vm = kj::mv(vm)]() mutable {
                           if (session.vm.get() == vm.get()) {
                               session.vm = nullptr;
                               session.vm_watcher = nullptr;
                           }
                           return call_holding(kj::mv(vm), [](VmInstance& vm) { return vm.stop(); });
                       })
                       .then([&session]() { session.stopping = false; });
    auto& forked = session.vm_stopping.emplace(attempt.fork());
    return forked.addBranch();
}

kj::Promise<void> Service::deliver_stopping_hooks(Session& session, VmInstance& vm)
{
    kj::Promise<void> chain = kj::READY_NOW;
    for (const auto& [name, distro] : vm.distributions()) {
        auto hook = hook_call(host::Hook::distribution_stopping, session, distro->record, distro.get());
        chain = chain.then(
            [this, hook = std::move(hook)]() mutable { return m_plugins->notify(std::move(hook)); });
    }
    return chain.then(
        [this, &session]() { return m_plugins->notify(hook_call(host::Hook::vm_stopping, session)); });
}

kj::Promise<Status> Service::ensure_distribution(
    Session& session, const DistroRecord& record, const UserOverrides& overrides)
{
    return ensure_vm(session, overrides).then([this, &session, record](Status status) -> kj::Promise<Status> {
        if (!status)
            return kj::mv(status);
        if (!session.vm)
            return Status(
                Error { BH_E_VM_NOT_RUNNING, "the VM stopped while starting '" + record.name + "'" });
        auto on_started = [this, &session](const RunningDistro& running) {
            return m_plugins->notify_veto(
                hook_call(host::Hook::distribution_started, session, running.record, &running));
        };
        return call_holding(*session.vm, [&](VmInstance& vm) {
            return vm.start_distribution(record, m_registry.rootfs_of(record), kj::mv(on_started));
        });
    });
}

kj::Promise<Result<DistroView>> Service::start_distribution(
    uid_t owner, std::string name, UserOverrides overrides)
{
    auto record = find_record(owner, name);
    if (!record)
        return Result<DistroView>(record.take_error());
    Session& session = session_of(owner);
    // A start in progress keeps the VM from idling, as a run does: a start slower than the idle
    // timeout (hooks under load) had its VM stopped under it.
    ++session.active_runs;
    session.idle_timer = nullptr;
    auto done = kj::defer([this, &session]() {
        --session.active_runs;
        arm_idle_timer(session);
    });
    return ensure_distribution(session, record.value(), overrides)
        .then([this, record = record.value()](Status status) -> Result<DistroView> {
            if (!status)
                return status.take_error();
            return view_of(record);
        })
        .attach(kj::mv(done));
}

kj::Promise<Result<int>> Service::run(
    uid_t owner, std::string distro, ProgramSpec spec, std::array<Fd, 3> stdio, UserOverrides overrides)
{
    auto record = find_record(owner, distro);
    if (!record)
        return Result<int>(record.take_error());
    Session& session = session_of(owner);
    ++session.active_runs;
    session.idle_timer = nullptr;
    auto done = kj::defer([this, &session]() {
        --session.active_runs;
        arm_idle_timer(session);
    });
    return ensure_distribution(session, record.value(), overrides)
        .then([&session, name = record->name, spec = std::move(spec), stdio = std::move(stdio)](
                  Status status) mutable -> kj::Promise<Result<int>> {
            if (!status)
                return Result<int>(status.take_error());
            if (!session.vm)
                return Result<int>(
                    Error { BH_E_VM_NOT_RUNNING, "the VM stopped before the program started" });
            return call_holding(
                *session.vm, [&](VmInstance& vm) { return vm.run(name, std::move(spec), std::move(stdio)); });
        })
        .attach(kj::mv(done));
}

kj::Promise<Status> Service::terminate_distribution(uid_t owner, std::string name)
{
    auto record = find_record(owner, name);
    if (!record || name.empty())
        return Status(no_such_distribution(name));
    Session& session = session_of(owner);
    if (!session.vm)
        return Status();
    auto vm = kj::addRef(*session.vm);
    kj::Promise<void> hooks = kj::READY_NOW;
    if (const RunningDistro* running = vm->find_distribution(record->uuid))
        hooks = m_plugins->notify(
            hook_call(host::Hook::distribution_stopping, session, record.value(), running));
    return hooks
        .then([vm = kj::mv(vm), name = record->name]() mutable {
            return call_holding(kj::mv(vm), [&](VmInstance& vm) { return vm.terminate_distribution(name); });
        })
        .then([]() { return Status(); });
}

kj::Promise<Status> Service::shutdown_vm(uid_t owner)
{
    return stop_vm(session_of(owner)).then([]() { return Status(); });
}

kj::Promise<void> Service::stop_all_vms()
{
    auto stops = kj::heapArrayBuilder<kj::Promise<void>>(m_sessions.size() + 1);
    for (auto& [uid, session] : m_sessions)
        stops.add(stop_vm(*session));
    stops.add(m_containers->terminate_all(false));
    return kj::joinPromises(stops.finish());
}

kj::Promise<void> Service::shutdown_all()
{
    m_shutting_down = true;
    auto stops = kj::heapArrayBuilder<kj::Promise<void>>(m_sessions.size() + 1);
    for (auto& [uid, session] : m_sessions)
        stops.add(stop_vm(*session));
    stops.add(m_containers->terminate_all(true));
    return kj::joinPromises(stops.finish()).then([this]() { return m_plugins->close(); });
}

kj::Promise<Status> Service::vm_mount(
    uid_t owner, Fd dir, std::string vm_path, bool read_only, std::string name)
{
    Session& session = session_of(owner);
    if (!session.vm || !session.vm->running())
        return Status(
            Error { BH_E_VM_NOT_RUNNING, "cannot mount at '" + vm_path + "': the VM is not running" });
    return call_holding(*session.vm, [&](VmInstance& vm) {
        return vm.mount(std::move(dir), std::move(vm_path), read_only, std::move(name));
    });
}

kj::Promise<Result<Fd>> Service::vm_exec(uid_t owner, std::string distro, ProgramSpec spec)
{
    Session& session = session_of(owner);
    if (!session.vm || !session.vm->running())
        return Result<Fd>(
            Error { BH_E_VM_NOT_RUNNING, "cannot run '" + spec.path + "': the VM is not running" });
    return call_holding(*session.vm, [&](VmInstance& vm) { return vm.exec(distro, std::move(spec)); });
}

std::vector<DistroView> Service::list(uid_t owner, bool everyone) const
{
    std::vector<DistroView> out;
    for (const DistroRecord* record : everyone ? m_registry.all() : m_registry.of_user(owner))
        out.push_back(view_of(*record));
    return out;
}

std::vector<SessionView> Service::sessions(uid_t owner, bool everyone) const
{
    std::vector<SessionView> out;
    for (const auto& [uid, session] : m_sessions) {
        if (!everyone && uid != owner)
            continue;
        SessionView view { session->identity };
        if (session->vm && session->vm->running()) {
            view.vm_running = true;
            view.vm_init_pid = session->vm->init_pid();
            view.settings = session->vm->settings();
            view.network_problem = session->vm->network_problem();
            for (const auto& [name, distro] : session->vm->distributions())
                view.running_distros.push_back(name);
        }
        out.push_back(std::move(view));
    }
    return out;
}

// --- Plugins ----------------------------------------------------------------------------------

host::HookCall Service::hook_call(host::Hook hook, const Session& session) const
{
    const SessionIdentity& id = session.identity;
    host::HookCall call { hook, { id.session_id, id.uid, id.gid, id.user_name } };
    call.custom_config_flags = session.vm ? session.vm->settings().custom_config_flags : 0;
    return call;
}

host::HookCall Service::hook_call(
    host::Hook hook, const Session& session, const DistroRecord& record, const RunningDistro* running) const
{
    auto nullable = [](const std::string& text) {
        return text.empty() ? std::nullopt : std::optional<std::string>(text);
    };
    host::HookCall call = hook_call(hook, session);
    call.distro
        = { record.uuid, record.name, running ? running->pid_namespace : 0, running ? running->init_pid : 0,
              nullable(record.package), nullable(record.flavor), nullable(record.version) };
    return call;
}

Session* Service::session_by_id(uint32_t id)
{
    for (auto& [uid, session] : m_sessions)
        if (session->identity.session_id == id)
            return session.get();
    return nullptr;
}

kj::Promise<int> Service::mount_folder(
    uint32_t session_id, std::string host_path, std::string vm_path, bool read_only, std::string name)
{
    Session* session = session_by_id(session_id);
    if (!session)
        return BH_E_SESSION_NOT_FOUND;
    if (host_path.empty() || host_path.front() != '/' || vm_path.empty() || vm_path.front() != '/')
        return -EINVAL;
    Fd dir(::open(host_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir)
        return -errno;
    return vm_mount(session->identity.uid, std::move(dir), std::move(vm_path), read_only, std::move(name))
        .then([](Status status) { return status ? 0 : status.error().code; });
}

kj::Promise<Result<Fd>> Service::execute(
    uint32_t session_id, std::optional<Uuid> distro, std::string path, std::vector<std::string> argv)
{
    Session* session = session_by_id(session_id);
    if (!session)
        return Result<Fd>(Error { BH_E_SESSION_NOT_FOUND, "no session " + std::to_string(session_id) });
    std::string name;
    if (distro) {
        const RunningDistro* running = session->vm ? session->vm->find_distribution(*distro) : nullptr;
        if (!running)
            return Result<Fd>(
                Error { BH_E_DISTRO_NOT_RUNNING, "distribution " + distro->to_string() + " is not running" });
        name = running->record.name;
    }
    ProgramSpec spec { std::move(path), std::move(argv),
        { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }, "" };
    return vm_exec(session->identity.uid, std::move(name), std::move(spec));
}

// --- Container session hooks -------------------------------------------------------------------

host::HookCall Service::container_hook(host::Hook hook, const ContainerSession& session, std::string text)
{
    host::HookCall call { hook };
    const SessionIdentity& id = session.identity;
    call.container = { id.session_id, session.name, session.application_pid, id.uid, id.gid, id.user_name };
    call.text = std::move(text);
    return call;
}

// Plugins load on first use, as for a VM: a latched fatal plugin error fails the creation here.
kj::Promise<Status> Service::session_created(const ContainerSession& session)
{
    auto call = container_hook(host::Hook::container_session_created, session);
    return m_plugins->activate().then(
        [this, call = std::move(call)](Status active) mutable -> kj::Promise<Status> {
            if (!active)
                return kj::mv(active);
            return m_plugins->notify_veto(std::move(call));
        });
}

kj::Promise<void> Service::session_stopping(const ContainerSession& session)
{
    return m_plugins->notify(container_hook(host::Hook::container_session_stopping, session));
}

kj::Promise<void> Service::vm_started(const ContainerSession& session)
{
    return m_plugins->notify(container_hook(host::Hook::container_vm_started, session));
}

kj::Promise<void> Service::vm_stopping(const ContainerSession& session)
{
    return m_plugins->notify(container_hook(host::Hook::container_vm_stopping, session));
}

// Text a host would refuse (and be killed for) is never sent: the service made it, so the
// service is at fault. ContainerSessions keeps it far below this; this is the last line.
static bool hook_text_fits(const host::HookCall& call)
{
    if (call.text.size() <= host::max_hook_text)
        return true;
    log_warning(std::string(host::hook_name(call.hook)) + " not sent: its text has "
        + std::to_string(call.text.size()) + " bytes, over the hosts' limit");
    return false;
}

// A veto fails the start with the plugin-named message; the caller stops and removes the container.
kj::Promise<Status> Service::container_started(const ContainerSession& session, std::string inspect_json)
{
    auto call = container_hook(host::Hook::container_started, session, std::move(inspect_json));
    if (!hook_text_fits(call))
        return Status(Error { -E2BIG, "the container's description is too large for plugins" });
    return m_plugins->notify_veto(std::move(call));
}

kj::Promise<void> Service::container_stopping(const ContainerSession& session, std::string id)
{
    return m_plugins->notify(container_hook(host::Hook::container_stopping, session, std::move(id)));
}

kj::Promise<void> Service::image_created(const ContainerSession& session, std::string inspect_json)
{
    auto call = container_hook(host::Hook::image_created, session, std::move(inspect_json));
    if (!hook_text_fits(call))
        return kj::READY_NOW;
    return m_plugins->notify(std::move(call));
}

kj::Promise<void> Service::image_deleted(const ContainerSession& session, std::string id)
{
    return m_plugins->notify(container_hook(host::Hook::image_deleted, session, std::move(id)));
}

kj::Promise<int> Service::container_mount(
    uint32_t session, std::string host_path, std::string mountpoint, bool read_only)
{
    return m_containers->plugin_mount(session, std::move(host_path), std::move(mountpoint), read_only);
}

kj::Promise<int> Service::container_unmount(uint32_t session, std::string mountpoint)
{
    return m_containers->plugin_unmount(session, std::move(mountpoint));
}

kj::Promise<Result<host::ProcessStart>> Service::create_process(
    uint32_t session, std::string executable, std::vector<std::string> argv, std::vector<std::string> env)
{
    return m_containers->plugin_create_process(
        session, std::move(executable), std::move(argv), std::move(env));
}

} // namespace bh::service
