// ContainerSessions: creating, publishing, starting, idling, stopping and ending container sessions.
#include "service/container-sessions.h"

#include "base/log.h"

#include <algorithm>
#include <bulkhead/plugin_api.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

namespace bh::service {

namespace {

    // Where each session VM finds its storage.
    constexpr const char* storage_mountpoint = "/storage";

    bool is_valid_session_name(const std::string& name)
    {
        return !name.empty() && name.size() <= 64
            && name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
            == std::string::npos;
    }

    Error no_such_session(const std::string& name)
    {
        return Error { -ENOENT, "There is no container session with the supplied name '" + name + "'" };
    }

    // The folder the client sent: a directory it opened for reading (an O_PATH fd proves no right
    // to it), that the session's owner can write (the VM's root is the owner).
    Status check_storage(const Fd& dir, const SessionIdentity& owner, const std::string& path)
    {
        int flags = fcntl(dir.get(), F_GETFL);
        struct stat st;
        if (flags < 0 || fstat(dir.get(), &st) < 0)
            return Error::from_errno(errno, "cannot inspect the storage folder '" + path + "'");
        if (!S_ISDIR(st.st_mode))
            return Error { -ENOTDIR, "the storage folder '" + path + "' is not a directory" };
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
            return Error { -EACCES, "the storage folder '" + path + "' was not opened for reading" };
        bool writable = owner.uid == 0 || (st.st_uid == owner.uid && (st.st_mode & S_IWUSR))
            || (st.st_uid != owner.uid && st.st_gid == owner.gid && (st.st_mode & S_IWGRP))
            || (st.st_uid != owner.uid && st.st_gid != owner.gid && (st.st_mode & S_IWOTH));
        if (!writable)
            return Error { -EACCES,
                "the storage folder '" + path + "' is not writable by uid " + std::to_string(owner.uid) };
        return {};
    }

    Result<Fd> duplicate(const Fd& fd)
    {
        int copy = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
            return Error::from_errno(errno, "cannot duplicate the storage folder");
        return Fd(copy);
    }

    struct Pipe {
        Fd read;
        Fd write;
    };
    Result<Pipe> make_pipe()
    {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) < 0)
            return Error::from_errno(errno, "cannot create a pipe");
        return Pipe { Fd(fds[0]), Fd(fds[1]) };
    }

    // A program a plugin started in a session VM. Its exit pipe's write end is ours alone: closed
    // when the program ends (or the VM with it), so the plugin's end polls readable then.
    class VmProcess final : public host::ProcessHandle {
    public:
        VmProcess(proto::Process::Client process, Fd exit_writer)
            : m_process(kj::mv(process))
            , m_exit_writer(std::move(exit_writer))
        {
            m_wait = m_process.waitRequest()
                         .send()
                         .then([this](auto reply) { finish(reply.getWaitStatus()); },
                             [this](kj::Exception&&) { finish(SIGKILL); }) // the VM ended: killed with it
                         .eagerlyEvaluate(nullptr);
        }
        kj::Promise<Result<int>> exit_code() override
        {
            if (!m_status)
                return Result<int>(Error { -EBUSY, "the process is still running" });
            int status = *m_status;
            return Result<int>(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }

    private:
        void finish(int status)
        {
            m_status = status;
            m_exit_writer.reset();
        }
        proto::Process::Client m_process; // dropping it kills the program
        Fd m_exit_writer;
        std::optional<int> m_status;
        kj::Promise<void> m_wait = nullptr; // declared last: cancelled first
    };

} // namespace

const char* vm_state_name(VmState state)
{
    switch (state) {
    case VmState::idle:
        return "idle";
    case VmState::starting:
        return "starting";
    case VmState::running:
        return "running";
    case VmState::stopping:
        return "stopping";
    }
    return "unknown";
}

VmInstance* ContainerSession::serving_vm()
{
    if (auto* running = std::get_if<Running>(&m_vm))
        return running->vm->running() ? running->vm.get() : nullptr;
    if (auto* stopping = std::get_if<Stopping>(&m_vm))
        return stopping->committed || !stopping->vm->running() ? nullptr : stopping->vm.get();
    return nullptr;
}

ContainerSessionView ContainerSession::view() const
{
    ContainerSessionView out { identity.session_id, name, identity.uid, identity.user_name, application_pid,
        options, state() };
    if (auto* running = std::get_if<Running>(&m_vm))
        out.vm_init_pid = running->vm->init_pid();
    else if (auto* stopping = std::get_if<Stopping>(&m_vm))
        out.vm_init_pid = stopping->vm->init_pid();
    return out;
}

ContainerSessions::ContainerSessions(VmEnvironment& env, ContainerHooks& hooks, uint32_t max_per_user)
    : m_env(env)
    , m_hooks(hooks)
    , m_max_per_user(max_per_user)
{
}

ContainerSessions::~ContainerSessions()
{
    for (auto& [id, session] : m_by_id) {
        if (!session->m_tmpfs.empty()) {
            ::umount2(session->m_tmpfs.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
            ::rmdir(session->m_tmpfs.c_str());
        }
    }
}

void ContainerSessions::taskFailed(kj::Exception&& exception)
{
    log_error(std::string("container session task failed: ") + exception.getDescription().cStr());
}

ContainerSession* ContainerSessions::find_by_id(uint32_t id)
{
    auto it = m_by_id.find(id);
    return it == m_by_id.end() ? nullptr : it->second.get();
}

Result<kj::Own<ContainerSession>> ContainerSessions::find(uid_t owner, const std::string& name)
{
    auto it = m_published.find({ owner, name });
    if (it == m_published.end())
        return no_such_session(name);
    return kj::addRef(*it->second);
}

// A state's promises may be the very ones running the transition (a start that resolves into
// Running, a stop into Idle): the old state is destroyed on a later turn, never from inside itself.
void ContainerSessions::enter(ContainerSession& session, ContainerSession::Vm next)
{
    auto old = kj::heap<ContainerSession::Vm>(std::exchange(session.m_vm, std::move(next)));
    m_tasks.add(kj::evalLater([old = kj::mv(old)]() {}));
}

Status ContainerSessions::check_new(const SessionIdentity& owner, const std::string& name,
    const ContainerSessionOptions& options, const Fd& storage) const
{
    if (!is_valid_session_name(name))
        return Error { -EINVAL,
            "invalid container session name '" + name + "': use 1 to 64 of A-Z a-z 0-9 . _ -" };
    if (m_closed)
        return Error { -ESHUTDOWN, "the service is shutting down" };
    if (!options.storage.empty() && options.storage.front() != '/')
        return Error { -EINVAL, "the storage folder '" + options.storage + "' is not an absolute path" };
    if (storage)
        BH_TRY(check_storage(storage, owner, options.storage));
    if (options.memory_mb > 0 && options.memory_mb < 16)
        return Error { -EINVAL, "a container session needs at least 16 MB of memory" };
    BH_TRY(m_env.cgroups.check({ options.memory_mb << 20, options.cpu_millis }));
    size_t mine = std::count_if(m_by_id.begin(), m_by_id.end(),
        [&](const auto& entry) { return entry.second->identity.uid == owner.uid; });
    if (mine >= m_max_per_user)
        return Error { -EDQUOT,
            "cannot create '" + name + "': uid " + std::to_string(owner.uid) + " has " + std::to_string(mine)
                + " container sessions, the most allowed ([limits] container_sessions_per_user in "
                  "bulkhead.toml)" };
    return {};
}

kj::Promise<Result<ContainerSessions::Created>> ContainerSessions::create(const SessionIdentity& owner,
    pid_t application_pid, std::string name, ContainerSessionOptions options, Fd storage, bool exclusive,
    bool start_vm)
{
    if (is_valid_session_name(name)) {
        if (auto found = find(owner.uid, name)) {
            if (exclusive)
                return Result<Created>(Error {
                    -EEXIST, "A container session with the supplied name '" + name + "' already exists" });
            return Result<Created>(Created { found.value()->view(), false });
        }
    }
    if (Status valid = check_new(owner, name, options, storage); !valid)
        return Result<Created>(valid.take_error());
    auto session = kj::refcounted<ContainerSession>();
    session->identity = owner;
    session->identity.session_id = m_next_id++;
    session->name = std::move(name);
    session->application_pid = application_pid;
    session->options = std::move(options);
    session->storage = std::move(storage);
    if (!session->storage) {
        if (Status made = make_tmpfs(*session); !made)
            return Result<Created>(made.take_error());
    } else {
        recover_index(*session); // storage used before: its images and references
    }
    // Registered for plugin calls, not yet published: only plugins can reach it until they accepted.
    m_by_id.emplace(session->identity.session_id, kj::addRef(*session));
    ContainerSession& ref = *session;
    return m_hooks.session_created(ref).then([this, session = kj::mv(session), exclusive, start_vm](
                                                 Status accepted) mutable -> kj::Promise<Result<Created>> {
        if (!accepted)
            return end(kj::mv(session)).then([accepted = kj::mv(accepted)]() mutable {
                return Result<Created>(accepted.take_error());
            });
        return publish(kj::mv(session), exclusive, start_vm);
    });
}

kj::Promise<Result<ContainerSessions::Created>> ContainerSessions::publish(
    kj::Own<ContainerSession> session, bool exclusive, bool start_vm)
{
    Key key { session->identity.uid, session->name };
    auto winner = m_published.find(key);
    if (m_closed || winner != m_published.end()) {
        // Lost a race with another creation of the same name (or the service is exiting): never
        // handed out; its plugins see it stop.
        std::optional<Created> other;
        if (winner != m_published.end() && !exclusive)
            other = Created { winner->second->view(), false };
        std::string name = session->name;
        return end(kj::mv(session)).then([other = std::move(other), name, this]() -> Result<Created> {
            if (other)
                return *other;
            return m_closed
                ? Error { -ESHUTDOWN, "the service is shutting down" }
                : Error { -EEXIST,
                      "A container session with the supplied name '" + name + "' already exists" };
        });
    }
    m_published.emplace(key, kj::addRef(*session));
    log_info("container session '" + session->name + "' (id " + std::to_string(session->identity.session_id)
        + ") created for uid " + std::to_string(session->identity.uid));
    if (!start_vm)
        return Result<Created>(Created { session->view(), true });
    ContainerSession& ref = *session;
    return ensure_vm(ref).then(
        [this, session = kj::mv(session)](Status started) mutable -> kj::Promise<Result<Created>> {
            arm_idle_timer(*session);
            if (started)
                return Result<Created>(Created { session->view(), true });
            // A session that could not start its VM is not left behind.
            m_published.erase({ session->identity.uid, session->name });
            return end(kj::mv(session)).then([started = kj::mv(started)]() mutable {
                return Result<Created>(started.take_error());
            });
        });
}

// The session is unpublished already: its VM stops, plugins see it stop, its id stops resolving.
kj::Promise<void> ContainerSessions::end(kj::Own<ContainerSession> session)
{
    session->m_ending = true;
    ContainerSession& ref = *session;
    return stop_vm(ref)
        .then([this, &ref]() { return m_hooks.session_stopping(ref); })
        .then([this, session = kj::mv(session)]() mutable {
            m_by_id.erase(session->identity.session_id);
            if (!session->m_tmpfs.empty()) {
                ::umount2(session->m_tmpfs.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
                ::rmdir(session->m_tmpfs.c_str());
                session->m_tmpfs.clear();
            }
            log_info("container session '" + session->name + "' (id "
                + std::to_string(session->identity.session_id) + ") ended");
        });
}

std::vector<ContainerSessionView> ContainerSessions::list(uid_t owner, bool everyone) const
{
    std::vector<ContainerSessionView> out;
    for (const auto& [key, session] : m_published)
        if (everyone || key.first == owner)
            out.push_back(session->view());
    return out;
}

Result<ContainerSessionView> ContainerSessions::show(uid_t owner, const std::string& name)
{
    auto found = find(owner, name);
    if (!found)
        return found.take_error();
    return found.value()->view();
}

kj::Promise<Status> ContainerSessions::terminate(uid_t owner, const std::string& name)
{
    auto found = find(owner, name);
    if (!found)
        return Status(found.take_error());
    m_published.erase({ owner, name });
    return end(kj::mv(found.value())).then([]() { return Status(); });
}

kj::Promise<void> ContainerSessions::terminate_all(bool forever)
{
    m_closed = m_closed || forever;
    auto published = std::exchange(m_published, {});
    auto ends = kj::heapArrayBuilder<kj::Promise<void>>(published.size());
    for (auto& [key, session] : published)
        ends.add(end(kj::mv(session)));
    return kj::joinPromises(ends.finish());
}

kj::Promise<Result<int>> ContainerSessions::exec(
    uid_t owner, const std::string& name, ProgramSpec spec, std::array<Fd, 3> stdio, bool detach)
{
    auto found = find(owner, name);
    if (!found)
        return Result<int>(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& ref = *session;
    ++ref.m_active;
    if (auto* running = std::get_if<ContainerSession::Running>(&ref.m_vm))
        running->idle_timer = nullptr;
    auto done = kj::defer([this, &ref]() {
        --ref.m_active;
        arm_idle_timer(ref);
    });
    return ensure_vm(ref)
        .then([&ref, spec = std::move(spec), stdio = std::move(stdio), detach](
                  Status started) mutable -> kj::Promise<Result<int>> {
            if (!started)
                return Result<int>(started.take_error());
            VmInstance* vm = ref.serving_vm();
            if (!vm)
                return Result<int>(
                    Error { BH_E_VM_NOT_RUNNING, "the VM stopped before the program started" });
            return call_holding(*vm, [&](VmInstance& vm) {
                return detach ? vm.run_detached(std::move(spec), std::move(stdio))
                              : vm.run("", std::move(spec), std::move(stdio));
            });
        })
        .attach(kj::mv(done))
        .attach(kj::mv(session));
}

kj::Promise<Result<bool>> ContainerSessions::idle(uid_t owner, const std::string& name)
{
    auto found = find(owner, name);
    if (!found)
        return Result<bool>(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found.value());
    bool was_idle = session->state() == VmState::idle;
    ContainerSession& ref = *session;
    return stop_vm(ref).attach(kj::mv(session)).then([was_idle]() { return Result<bool>(was_idle); });
}

kj::Promise<Status> ContainerSessions::ensure_vm(ContainerSession& session)
{
    if (session.m_ending || m_closed)
        return Status(
            Error { BH_E_VM_NOT_RUNNING, "the container session '" + session.name + "' is ending" });
    switch (session.state()) {
    case VmState::idle:
        return start_vm(session);
    case VmState::starting:
        return std::get<ContainerSession::Starting>(session.m_vm).attempt.addBranch();
    case VmState::running:
        return Status();
    case VmState::stopping:
        return std::get<ContainerSession::Stopping>(session.m_vm).done.addBranch().then([this, &session]() {
            return ensure_vm(session);
        });
    }
    KJ_UNREACHABLE;
}

kj::Promise<Status> ContainerSessions::start_vm(ContainerSession& session)
{
    VmSettings settings;
    settings.network = session.options.network;
    settings.idle_timeout_s = 0; // ours, not VmInstance's
    // The VM's cgroup is delegated to its root (the session's user): each container gets a
    // cgroup of its own below it (oci-helper.sh).
    VmCgroupRequest limits { session.options.memory_mb << 20, session.options.cpu_millis,
        session.identity.uid };
    auto attempt = VmInstance::start(m_env, session.identity, settings, limits)
                       .then([this, &session](Result<kj::Own<VmInstance>> vm) -> kj::Promise<Status> {
                           if (!vm) {
                               enter(session, ContainerSession::Idle {});
                               return Status(vm.take_error());
                           }
                           return adopt_vm(session, kj::mv(vm.value()));
                       });
    auto& starting
        = std::get<ContainerSession::Starting>(session.m_vm = ContainerSession::Starting { attempt.fork() });
    return starting.attempt.addBranch();
}

// The storage goes in first: a VM whose storage cannot be mounted never runs.
kj::Promise<Status> ContainerSessions::adopt_vm(ContainerSession& session, kj::Own<VmInstance> vm)
{
    auto storage = duplicate(session.storage);
    if (!storage) {
        enter(session, ContainerSession::Idle {});
        return call_holding(kj::mv(vm), [](VmInstance& vm) {
            return vm.stop();
        }).then([error = storage.take_error()]() mutable { return Status(error); });
    }
    VmInstance& ref = *vm;
    auto mounted = ref.mount(std::move(storage.value()), storage_mountpoint, false, "storage");
    return mounted.then([this, &session, vm = kj::mv(vm)](Status status) mutable -> kj::Promise<Status> {
        if (!status) {
            enter(session, ContainerSession::Idle {});
            return call_holding(kj::mv(vm), [](VmInstance& vm) {
                return vm.stop();
            }).then([status = kj::mv(status)]() mutable { return kj::mv(status); });
        }
        log_info("VM started for container session '" + session.name + "' (init pid "
            + std::to_string(vm->init_pid()) + ")");
        VmInstance* raw = vm.get();
        auto announced = m_hooks.vm_started(session).fork();
        auto branch = announced.addBranch();
        enter(session, ContainerSession::Running { kj::mv(vm), kj::mv(announced) });
        auto& running = std::get<ContainerSession::Running>(session.m_vm);
        running.watcher = raw->on_failure()
                              .then([this, &session, raw]() {
                                  m_tasks.add(kj::evalLater([this, &session, raw]() -> kj::Promise<void> {
                                      if (session.serving_vm() != raw)
                                          return kj::READY_NOW;
                                      log_warning("the VM of container session '" + session.name
                                          + "' ended unexpectedly");
                                      return stop_vm(session);
                                  }));
                              })
                              .eagerlyEvaluate(nullptr);
        return branch.then([this, &session]() {
            arm_idle_timer(session);
            save_index(session); // what changed while the VM was stopped
            return Status();
        });
    });
}

void ContainerSessions::arm_idle_timer(ContainerSession& session)
{
    auto* running = std::get_if<ContainerSession::Running>(&session.m_vm);
    if (!running)
        return;
    running->idle_timer = nullptr;
    // Without storage, the VM holds the session's only state: it runs until the session ends.
    if (session.options.storage.empty() || session.m_active > 0 || session.options.idle_timeout_s == 0)
        return;
    running->idle_timer
        = m_env.timer.afterDelay(session.options.idle_timeout_s * kj::SECONDS)
              .then([this, &session]() {
                  log_info("the VM of container session '" + session.name + "' is idle; stopping it");
                  m_tasks.add(stop_vm(session));
              })
              .eagerlyEvaluate(nullptr);
}

// on_container_vm_stopping runs while the VM still serves calls; then the stop is committed (calls
// fail with BH_E_VM_NOT_RUNNING) and the VM ends, with everything that ran in it.
kj::Promise<void> ContainerSessions::stop_vm(ContainerSession& session)
{
    switch (session.state()) {
    case VmState::idle:
        return kj::READY_NOW;
    case VmState::starting:
        return std::get<ContainerSession::Starting>(session.m_vm)
            .attempt.addBranch()
            .then([this, &session](Status) { return stop_vm(session); });
    case VmState::stopping:
        return std::get<ContainerSession::Stopping>(session.m_vm).done.addBranch();
    case VmState::running:
        break;
    }
    auto& running = std::get<ContainerSession::Running>(session.m_vm);
    auto vm = kj::addRef(*running.vm);
    auto chain = running.announced.addBranch()
                     .then([this, &session]() { return m_hooks.vm_stopping(session); })
                     .then([&session, vm = kj::mv(vm)]() mutable {
                         std::get<ContainerSession::Stopping>(session.m_vm).committed = true;
                         return call_holding(kj::mv(vm), [](VmInstance& vm) { return vm.stop(); });
                     })
                     .then([this, &session]() {
                         log_info("the VM of container session '" + session.name + "' stopped");
                         session.m_plugin_mounts.clear();
                         enter(session, ContainerSession::Idle {});
                     });
    kj::Own<VmInstance> held = kj::addRef(*running.vm);
    enter(session, ContainerSession::Stopping { kj::mv(held), false, chain.fork() });
    return std::get<ContainerSession::Stopping>(session.m_vm).done.addBranch();
}

// The session's own tmpfs, in the service's private staging folder (never on the host's shared
// mounts), owned by the session's user: the VM's root.
Status ContainerSessions::make_tmpfs(ContainerSession& session)
{
    std::string path
        = m_env.staging_dir + "/storage-" + std::to_string(session.identity.session_id) + "-XXXXXX";
    if (!::mkdtemp(path.data()))
        return Error::from_errno(errno, "cannot create the storage of '" + session.name + "'");
    std::string data = "mode=0755,uid=" + std::to_string(session.identity.uid)
        + ",gid=" + std::to_string(session.identity.gid);
    if (session.options.memory_mb > 0)
        data += ",size=" + std::to_string(session.options.memory_mb) + "m";
    if (::mount("bulkhead-session", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) < 0) {
        Error error = Error::from_errno(errno, "cannot mount the storage of '" + session.name + "'");
        ::rmdir(path.c_str());
        return error;
    }
    session.m_tmpfs = path;
    session.storage = Fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!session.storage) {
        Error error = Error::from_errno(errno, "cannot open the storage of '" + session.name + "'");
        ::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
        ::rmdir(path.c_str());
        session.m_tmpfs.clear();
        return error;
    }
    return {};
}

// --- Plugin calls ------------------------------------------------------------------------------

kj::Promise<int> ContainerSessions::plugin_mount(
    uint32_t id, std::string host_path, std::string mountpoint, bool read_only)
{
    ContainerSession* session = find_by_id(id);
    if (!session)
        return BH_E_SESSION_NOT_FOUND;
    if (mountpoint.empty() || mountpoint.front() != '/' || host_path.empty() || host_path.front() != '/')
        return -EINVAL;
    Fd dir(::open(host_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir)
        return -errno;
    VmInstance* vm = session->serving_vm();
    if (!vm)
        return BH_E_VM_NOT_RUNNING;
    auto ref = kj::addRef(*session);
    return call_holding(*vm, [&](VmInstance& vm) {
        return vm.mount(std::move(dir), mountpoint, read_only, "plugin");
    }).then([session = kj::mv(ref), mountpoint](Status status) mutable {
        if (!status)
            return status.error().code;
        session->m_plugin_mounts.insert(mountpoint);
        return 0;
    });
}

kj::Promise<int> ContainerSessions::plugin_unmount(uint32_t id, std::string mountpoint)
{
    ContainerSession* session = find_by_id(id);
    if (!session)
        return BH_E_SESSION_NOT_FOUND;
    if (mountpoint.empty() || mountpoint.front() != '/')
        return -EINVAL;
    VmInstance* vm = session->serving_vm();
    if (!vm)
        return BH_E_VM_NOT_RUNNING;
    if (!session->m_plugin_mounts.contains(mountpoint))
        return -ENOENT; // not a plugin's mount: never the session's storage
    auto ref = kj::addRef(*session);
    return call_holding(*vm, [&](VmInstance& vm) {
        return vm.unmount(mountpoint);
    }).then([session = kj::mv(ref), mountpoint](Status status) mutable {
        if (!status)
            return status.error().code;
        session->m_plugin_mounts.erase(mountpoint);
        return 0;
    });
}

kj::Promise<Result<host::ProcessStart>> ContainerSessions::plugin_create_process(
    uint32_t id, std::string executable, std::vector<std::string> argv, std::vector<std::string> env)
{
    using Started = Result<host::ProcessStart>;
    ContainerSession* session = find_by_id(id);
    if (!session)
        return Started(Error { BH_E_SESSION_NOT_FOUND, "no container session " + std::to_string(id) });
    VmInstance* vm = session->serving_vm();
    if (!vm)
        return Started(Error { BH_E_VM_NOT_RUNNING, "the container session has no running VM" });
    auto in = make_pipe();
    auto out = make_pipe();
    auto err = make_pipe();
    auto exit = make_pipe();
    if (!in || !out || !err || !exit)
        return Started(Error::from_errno(errno, "cannot create a process's pipes"));
    ProgramSpec spec { std::move(executable), std::move(argv), std::move(env), "" };
    std::array<Fd, 3> theirs { std::move(in->read), std::move(out->write), std::move(err->write) };
    return call_holding(*vm, [&](VmInstance& vm) { return vm.spawn(std::move(spec), std::move(theirs)); })
        .then([in = std::move(in.value()), out = std::move(out.value()), err = std::move(err.value()),
                  exit = std::move(exit.value())](Result<VmInstance::Spawned> spawned) mutable -> Started {
            if (!spawned)
                return spawned.take_error();
            return host::ProcessStart { kj::heap<VmProcess>(kj::mv(spawned->process), std::move(exit.write)),
                { std::move(in.write), std::move(out.read), std::move(err.read) }, std::move(exit.read) };
        });
}

} // namespace bh::service
