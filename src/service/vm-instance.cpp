// VmInstance: spawning the VM init, talking to its agents, distributions, teardown.
#include "service/vm-instance.h"

#include "base/log.h"
#include "base/spawn.h"
#include "ipc/process-watch.h"
#include "service/namespace-check.h"
#include "service/subordinate-ids.h"
#include "service/vm-network.h"

#include <bulkhead/plugin_api.h>
#include <csignal>
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

namespace bh::service {

namespace {

    struct SocketPair {
        Fd ours;
        Fd theirs;
    };

    Result<SocketPair> make_socketpair()
    {
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
            return Error::from_errno(errno, "cannot create a socket pair");
        return SocketPair { Fd(fds[0]), Fd(fds[1]) };
    }

    Error vm_gone(const std::string& what)
    {
        return Error { BH_E_VM_NOT_RUNNING, what + ": the VM is not running" };
    }

    int namespaces_for(const SessionIdentity& identity, const VmSettings& settings)
    {
        // A cgroup namespace too: the VM sees its own cgroup as the root of the cgroup2 tree it
        // mounts (what crun needs to run containers there), never the host's paths.
        int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
        if (settings.network != NetworkMode::host)
            flags |= CLONE_NEWNET;
        if (identity.uid != 0)
            flags |= CLONE_NEWUSER;
        return flags;
    }

    void fill_spawn_request(
        proto::SpawnRequest::Builder request, const ProgramSpec& spec, std::array<Fd, 3>& stdio)
    {
        request.setPath(spec.path);
        auto argv = request.initArgv(spec.argv.size());
        for (size_t i = 0; i < spec.argv.size(); ++i)
            argv.set(i, spec.argv[i]);
        auto env = request.initEnv(spec.env.size());
        for (size_t i = 0; i < spec.env.size(); ++i)
            env.set(i, spec.env[i]);
        request.setUser(spec.user);
        request.setDefaultUser(spec.default_user && spec.user.empty());
        request.setLoginShell(spec.login_shell);
        request.setCwd(spec.cwd);
        if (spec.terminal) {
            auto size = request.initTerminal();
            size.setRows(spec.terminal->rows);
            size.setColumns(spec.terminal->columns);
            request.setConsoleSocket(spec.terminal->handed_over);
            if (!spec.terminal->handed_over)
                return;
        }
        request.setStdin(ipc::wrap_fd(std::move(stdio[0])));
        request.setStdout(ipc::wrap_fd(std::move(stdio[1])));
        request.setStderr(ipc::wrap_fd(std::move(stdio[2])));
    }

    // The agent's word that `fd` is the master end of the program's pseudo-terminal is not
    // taken: it must be the ptmx device (5:2), and answer TIOCGPTN as only a master does.
    Status check_terminal_master(int fd)
    {
        struct stat st;
        unsigned number = 0;
        if (::fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 5 || minor(st.st_rdev) != 2
            || ::ioctl(fd, TIOCGPTN, &number) < 0)
            return Error { -EPROTO,
                "the agent answered a terminal that is not a pseudo-terminal's master end" };
        return {};
    }

    // What a tree handed to a VM must carry. A clone of a host mount keeps the host mount's peer
    // group: attached in the VM, a mount made under it by VM root (the user) would propagate back
    // to the host (with a shared /, onto the host's own /etc). MS_PRIVATE cuts it from every peer
    // group, recursively. `extra` adds mount attributes (MOUNT_ATTR_NOSUID, ...).
    Result<Fd> clone_for_vm(
        int dirfd, const char* path, unsigned flags, uint64_t extra, const std::string& what)
    {
        Fd tree(open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | flags));
        if (!tree)
            return Error::from_errno(errno, what);
        mount_attr attr {};
        attr.attr_set = extra;
        attr.propagation = MS_PRIVATE;
        if (mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
            return Error::from_errno(errno, what + ": cannot make its mounts private");
        return tree;
    }

    Result<Fd> duplicate(int fd)
    {
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
            return Error::from_errno(errno, "cannot duplicate a socket");
        return Fd(copy);
    }

    // Members in this order: a failure destroys the init (killed and reaped) before its cgroup.
    struct SpawnedInit {
        VmCgroup cgroup;
        ChildProcess init;
    };

    // Spawns `plan` in a new VM cgroup (VmCgroup::spawn: born in it, or moved into what it could
    // not be born in before it runs anything). The VM init runs nothing of the user's before the
    // setup request, so the cgroup counts everything the VM will ever start.
    Result<SpawnedInit> spawn_in_cgroup(
        VmCgroups& cgroups, uint32_t session_id, const VmCgroupRequest& limits, SpawnPlan plan)
    {
        auto cgroup = cgroups.create(session_id, limits);
        if (!cgroup)
            return cgroup.take_error();
        auto init = cgroup->spawn(std::move(plan));
        if (!init)
            return init.take_error();
        return SpawnedInit { std::move(cgroup.value()), std::move(init.value()) };
    }

} // namespace

Result<StagingMount> StagingMount::create(const std::string& base, uint32_t session_id)
{
    if (::mkdir(base.c_str(), 0700) < 0 && errno != EEXIST)
        return Error::from_errno(errno, "cannot create " + base);
    std::string path = base + "/" + std::to_string(session_id) + "-XXXXXX";
    if (!::mkdtemp(path.data()))
        return Error::from_errno(errno, "cannot create a staging folder in " + base);
    StagingMount staging(path);
    if (::mount("bulkhead-staging", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711")
        < 0) {
        Error error = Error::from_errno(errno, "cannot mount the staging folder " + path);
        ::rmdir(path.c_str());
        staging.m_path.clear();
        return error;
    }
    // A peer group of its own: private first, so it joins none it was mounted under.
    if (::mount(nullptr, path.c_str(), nullptr, MS_PRIVATE, nullptr) < 0
        || ::mount(nullptr, path.c_str(), nullptr, MS_SHARED, nullptr) < 0)
        return Error::from_errno(errno, "cannot make the staging folder " + path + " shared");
    return staging;
}

StagingMount& StagingMount::operator=(StagingMount&& other) noexcept
{
    if (this != &other) {
        this->~StagingMount();
        m_path = std::exchange(other.m_path, {});
    }
    return *this;
}

StagingMount::~StagingMount()
{
    if (m_path.empty())
        return;
    ::umount2(m_path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    ::rmdir(m_path.c_str());
}

kj::Promise<Result<kj::Own<VmInstance>>> VmInstance::start(VmEnvironment& env,
    const SessionIdentity& identity, const VmSettings& settings, const VmCgroupRequest& limits)
{
    auto pair = make_socketpair();
    if (!pair)
        return Result<kj::Own<VmInstance>>(pair.take_error());
    // The init gets /dev/null as stdio, not the service's: VM root can take any fd of its init
    // (pidfd_getfd), and the service's stderr is its log.
    Fd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null_fd)
        return Result<kj::Own<VmInstance>>(
            Error::from_errno(errno, "cannot create the VM: cannot open /dev/null"));
    SpawnPlan plan {
        .path = "bulkhead-vminit",
        .exec_fd = env.vminit_exe_fd,
        .argv = { "bulkhead-vminit", "vm" },
        .fds
        = { { null_fd.get(), 0 }, { null_fd.get(), 1 }, { null_fd.get(), 2 }, { pair->theirs.get(), 3 } },
        .namespaces = namespaces_for(identity, settings),
    };
    if (identity.uid != 0) {
        plan.map_root_to = Credentials { identity.uid, identity.gid };
        // Read at each VM's start, so an admin's change to the files applies to the next VM.
        auto subordinate = subordinate_ids_of(identity.user_name, identity.uid, identity.gid);
        if (!subordinate)
            return Result<kj::Own<VmInstance>>(
                Error { subordinate.error().code, "cannot create the VM: " + subordinate.error().message });
        plan.subordinate = subordinate.value();
    }
    // Made before the VM is cloned, so that the VM's copy of the mounts has it.
    auto staging = StagingMount::create(env.staging_dir, identity.session_id);
    if (!staging)
        return Result<kj::Own<VmInstance>>(
            Error { staging.error().code, "cannot create the VM: " + staging.error().message });
    auto spawned = spawn_in_cgroup(env.cgroups, identity.session_id, limits, std::move(plan));
    if (!spawned)
        return Result<kj::Own<VmInstance>>(
            Error { spawned.error().code, "cannot create the VM: " + spawned.error().message });
    // Opened now, while the init cannot yet run anything of the user's: the reference every
    // pid its agent sends is checked against.
    auto pid_namespace = open_pid_namespace(spawned->init.pidfd());
    if (!pid_namespace)
        return Result<kj::Own<VmInstance>>(
            Error { pid_namespace.error().code, "cannot create the VM: " + pid_namespace.error().message });
    // nat: pasta joins the VM's network namespace while the init sets its root up. Not having
    // it is no reason to refuse the VM (an offline host has no route for pasta to use): the VM
    // then has its loopback only, and the reason is logged and shown by `bulkhead status`.
    ChildProcess network;
    kj::Promise<Status> network_ready = Status();
    if (settings.network == NetworkMode::nat) {
        std::optional<Credentials> user;
        if (identity.uid != 0)
            user = Credentials { identity.uid, identity.gid };
        auto nat = start_nat_network(
            env.provider, env.timer, spawned->init, pid_namespace->get(), spawned->cgroup, user);
        if (nat) {
            network = std::move(nat->pasta);
            network_ready = kj::mv(nat->ready);
        } else {
            network_ready = Status(nat.take_error());
        }
    }
    auto connection
        = kj::heap<ipc::Connection>(env.provider, std::move(pair->ours), capnp::rpc::twoparty::Side::CLIENT);
    std::string staging_path = staging->path();
    auto vm = kj::refcounted<VmInstance>(env, settings, std::move(spawned->cgroup),
        std::move(staging.value()), std::move(spawned->init), std::move(pid_namespace.value()),
        kj::mv(connection), std::move(network));
    auto request = vm->m_agent.setupRequest();
    auto config = request.initConfig();
    config.setHostname("bulkhead");
    config.setHostNetwork(settings.network == NetworkMode::host);
    config.setCustomInit(settings.init);
    config.setStaging(staging_path);
    auto setup = request.send().then([](auto response) { return ipc::to_status(response.getOutcome()); });
    auto network_up = network_ready.then([vm = vm.get(), session = identity.session_id](Status status) {
        if (status)
            return;
        vm->m_network_problem = status.error().message;
        vm->m_network = ChildProcess();
        log_warning("session " + std::to_string(session)
            + ": the VM runs without a network: " + vm->m_network_problem);
    });
    return ipc::catch_disconnect<void>(kj::mv(setup), "the VM's init hung up during setup")
        .then([network_up = kj::mv(network_up)](Status status) mutable -> kj::Promise<Status> {
            return network_up.then([status = std::move(status)]() mutable { return std::move(status); });
        })
        .then([vm = kj::mv(vm)](Status status) mutable -> Result<kj::Own<VmInstance>> {
            if (!status)
                return Error { status.error().code, "cannot create the VM: " + status.error().message };
            return kj::mv(vm);
        });
}

VmInstance::VmInstance(VmEnvironment& env, VmSettings settings, VmCgroup cgroup, StagingMount staging,
    ChildProcess init, Fd pid_namespace, kj::Own<ipc::Connection> connection, ChildProcess network)
    : m_env(env)
    , m_settings(std::move(settings))
    , m_cgroup(std::move(cgroup))
    , m_staging(std::move(staging))
    , m_init(std::move(init))
    , m_network(std::move(network))
    , m_pid_namespace(std::move(pid_namespace))
    , m_connection(kj::mv(connection))
    , m_agent(m_connection->bootstrap().castAs<proto::Agent>())
    , m_failed(ipc::when_exited(env.port, m_init.pidfd()).exclusiveJoin(m_connection->on_disconnect()).fork())
{
}

VmInstance::~VmInstance()
{
    // Still stuck at the service's exit: not waited for (that could block forever); the
    // system's init reaps it once it ends.
    if (m_abandoned)
        (void)m_init.detach();
    m_canceler.cancel("the VM was destroyed");
}

void VmInstance::taskFailed(kj::Exception&& exception)
{
    // A program started by exec() whose agent went away: the VM is ending; nothing to do. (A
    // removal does not fail, short of a destructor throwing; that too leaves nothing to do.)
    (void)exception;
}

template<typename T> kj::Promise<Result<T>> VmInstance::guarded(kj::Promise<Result<T>> promise)
{
    return m_canceler.wrap(kj::mv(promise)).catch_([](kj::Exception&& e) -> Result<T> {
        return Error { BH_E_VM_NOT_RUNNING,
            std::string("the VM stopped during the operation (") + e.getDescription().cStr() + ")" };
    });
}

kj::Promise<Status> VmInstance::guarded_status(kj::Promise<Status> promise)
{
    return m_canceler.wrap(kj::mv(promise)).catch_([](kj::Exception&& e) -> Status {
        return Error { BH_E_VM_NOT_RUNNING,
            std::string("the VM stopped during the operation (") + e.getDescription().cStr() + ")" };
    });
}

const RunningDistro* VmInstance::find_distribution(const Uuid& uuid) const
{
    for (const auto& [name, distro] : m_distros) {
        if (distro->record.uuid == uuid)
            return distro.get();
    }
    return nullptr;
}

Result<proto::Agent::Client> VmInstance::agent_for(const std::string& distro)
{
    if (m_stopped)
        return vm_gone("cannot run a program");
    if (distro.empty())
        return m_agent;
    auto it = m_distros.find(distro);
    if (it == m_distros.end())
        return Error { BH_E_DISTRO_NOT_RUNNING, "the distribution '" + distro + "' is not running" };
    return it->second->agent;
}

kj::Promise<Status> VmInstance::start_distribution(
    const DistroRecord& record, const std::string& rootfs, StartedHook on_started)
{
    if (m_stopped)
        return Status(vm_gone("cannot start '" + record.name + "'"));
    // An attempt in progress first: its distribution may already be listed while its hook runs.
    auto it = m_starting.find(record.name);
    if (it != m_starting.end())
        return it->second.addBranch();
    if (m_distros.contains(record.name))
        return Status();
    auto attempt = launch_distribution(record, rootfs)
                       .then([this, name = record.name, on_started = kj::mv(on_started)](
                                 Status status) mutable -> kj::Promise<Status> {
                           if (!status)
                               return kj::mv(status);
                           return run_started_hook(name, kj::mv(on_started));
                       })
                       .then([this, name = record.name](Status status) {
                           m_removals.add(kj::evalLater([this, name]() { m_starting.erase(name); }));
                           return status;
                       });
    it = m_starting.emplace(record.name, attempt.fork()).first;
    return it->second.addBranch();
}

kj::Promise<Status> VmInstance::run_started_hook(const std::string& name, StartedHook on_started)
{
    auto it = m_distros.find(name);
    if (it == m_distros.end())
        return Status(
            Error { BH_E_DISTRO_NOT_RUNNING, "the distribution '" + name + "' stopped while starting" });
    return on_started(*it->second).then([this, name](Status status) -> kj::Promise<Status> {
        if (status)
            return kj::mv(status);
        return terminate_distribution(name).then(
            [status = kj::mv(status)]() mutable { return kj::mv(status); });
    });
}

kj::Promise<Status> VmInstance::launch_distribution(DistroRecord record, std::string rootfs)
{
    // Private, so mounts made inside the distribution stay there; suid and devices as imported
    // (the distribution's own sudo must work; its files are owned by the user's mapped ids).
    auto tree = clone_for_vm(AT_FDCWD, rootfs.c_str(), 0, 0, "cannot open the root of '" + record.name + "'");
    if (!tree)
        return Status(tree.take_error());
    auto pair = make_socketpair();
    if (!pair)
        return Status(pair.take_error());
    auto request = m_agent.startDistributionRequest();
    request.setName(record.name);
    request.setRootTree(ipc::wrap_fd(std::move(tree.value())));
    request.setChannel(ipc::wrap_fd(std::move(pair->theirs)));
    auto started = request.send().then(
        [this, record = std::move(record), ours = std::move(pair->ours)](auto response) mutable {
            return adopt_distribution(std::move(record), std::move(ours), kj::mv(response));
        });
    return guarded_status(ipc::catch_disconnect<void>(kj::mv(started), "the VM's init hung up"));
}

kj::Promise<Status> VmInstance::adopt_distribution(
    DistroRecord record, Fd service_end, capnp::Response<proto::Agent::StartDistributionResults> response)
{
    Status started = ipc::to_status(response.getOutcome());
    if (!started)
        return kj::mv(started);
    // The agent's initPid and pidNamespace are not used: they are read from the pidfd instead.
    auto distro = kj::heap<RunningDistro>();
    distro->record = std::move(record);
    distro->connection = kj::heap<ipc::Connection>(
        m_env.provider, std::move(service_end), capnp::rpc::twoparty::Side::CLIENT);
    distro->agent = distro->connection->bootstrap().castAs<proto::Agent>();
    auto setup_request = distro->agent.setupRequest();
    if (m_network.valid())
        setup_request.initConfig().setNatDns(nat_dns_address);
    auto setup = setup_request.send();
    return ipc::unwrap_fd(response.getPidfd())
        .then([setup = kj::mv(setup)](Result<Fd> pidfd) mutable {
            return setup.then([pidfd = std::move(pidfd)](auto reply) mutable -> Result<Fd> {
                BH_TRY(ipc::to_status(reply.getOutcome()));
                return std::move(pidfd);
            });
        })
        .then([this, distro = kj::mv(distro)](Result<Fd> pidfd) mutable -> Status {
            // The agent runs as root of a user's VM, so the pidfd is that user's input: it could be
            // of any host process (which terminate would SIGKILL), or no pidfd at all (which would
            // never report an exit). It must be the init of a PID namespace just below the VM's.
            auto init = pidfd ? verify_distribution_init(pidfd.value().get(), m_pid_namespace.get())
                              : Result<VerifiedInit>(pidfd.take_error());
            if (!init) {
                log_warning("the VM's agent sent no valid distribution init for '" + distro->record.name
                    + "': " + init.error().message);
                return Error { init.error().code,
                    "cannot start '" + distro->record.name + "': " + init.error().message };
            }
            distro->init_pid = init->pid_in_vm;
            distro->pid_namespace = init->pid_namespace;
            distro->pidfd = std::move(pidfd.value());
            std::string name = distro->record.name;
            RunningDistro* raw = distro.get();
            distro->watcher = ipc::when_exited(m_env.port, raw->pidfd.get())
                                  .exclusiveJoin(raw->connection->on_disconnect())
                                  .then([this, name, raw]() {
                                      // Erasing the entry destroys this very promise: not from here.
                                      m_removals.add(kj::evalLater([this, name, raw]() {
                                          auto it = m_distros.find(name);
                                          if (it != m_distros.end() && it->second.get() == raw)
                                              m_distros.erase(it);
                                      }));
                                  })
                                  .eagerlyEvaluate(nullptr);
            m_distros.emplace(name, kj::mv(distro));
            return {};
        });
}

kj::Promise<Result<int>> VmInstance::run(const std::string& distro, ProgramSpec spec, std::array<Fd, 3> stdio)
{
    auto agent = agent_for(distro);
    if (!agent)
        return Result<int>(agent.take_error());
    std::string ended = distro.empty() ? "the VM stopped while the program ran"
                                       : "distribution '" + distro + "' was terminated while the program ran";
    return guarded(spawn_and_wait(agent.value(), std::move(spec), std::move(stdio), std::move(ended)));
}

kj::Promise<Result<int>> VmInstance::spawn_and_wait(
    proto::Agent::Client agent, ProgramSpec spec, std::array<Fd, 3> stdio, std::string ended)
{
    auto request = agent.spawnRequest();
    fill_spawn_request(request.initRequest(), spec, stdio);
    auto terminal = std::move(spec.terminal);
    auto waited = request.send().then([terminal = kj::mv(terminal), ended = std::move(ended)](
                                          auto response) mutable -> kj::Promise<Result<int>> {
        Status status = ipc::to_status(response.getOutcome());
        if (!status)
            return Result<int>(status.take_error());
        auto process = response.getProcess();
        // The terminal's master goes to the client before the wait: it relays the program's I/O.
        kj::Promise<Status> attached = Status();
        auto signals = kj::refcounted<ProgramSignals>(process);
        if (terminal && (!terminal->handed_over || response.hasTerminal()))
            attached = ipc::unwrap_fd(response.getTerminal())
                           .then([attach = kj::mv(terminal->attach), program = kj::addRef(*signals)](
                                     Result<Fd> master) mutable -> kj::Promise<Status> {
                               if (!master)
                                   return Status(master.take_error());
                               if (Status checked = check_terminal_master(master->get()); !checked)
                                   return kj::mv(checked);
                               return attach(std::move(master.value()), kj::mv(program)).then([]() {
                                   return Status();
                               });
                           });
        // Once the run is over (or cancelled), the client's signals reach nothing.
        auto over = kj::defer([signals = kj::mv(signals)]() mutable { signals->end(); });
        // `process` lives in the continuation: dropping it (cancellation) kills the program.
        return attached
            .then([process, ended](Status attached) mutable -> kj::Promise<Result<int>> {
                if (!attached)
                    return Result<int>(attached.take_error());
                // The agent went away while the program ran: the end of its PID namespace
                // took the program along.
                return process.waitRequest()
                    .send()
                    .then([process](auto reply) mutable -> Result<int> { return reply.getWaitStatus(); })
                    .catch_([ended](kj::Exception&& e) -> Result<int> {
                        if (e.getType() == kj::Exception::Type::DISCONNECTED)
                            return Error { program_orphaned, ended };
                        return Error { -EPROTO,
                            std::string("the agent's answer about the program: ")
                                + e.getDescription().cStr() };
                    });
            })
            .attach(kj::mv(over));
    });
    return ipc::catch_disconnect<int>(kj::mv(waited), "the agent running the program hung up");
}

kj::Promise<Status> ProgramSignals::send(int signal)
{
    KJ_IF_MAYBE (process, m_process) {
        auto request = process->signalRequest();
        request.setSignal(signal);
        return ipc::catch_disconnect<void>(
            request.send().then([](auto reply) { return ipc::to_status(reply.getOutcome()); }),
            "the agent running the program hung up");
    }
    return Status(Error { -ESRCH, "the program has ended" });
}

kj::Promise<Result<VmInstance::Spawned>> VmInstance::spawn(ProgramSpec spec, std::array<Fd, 3> stdio)
{
    if (m_stopped)
        return Result<Spawned>(vm_gone("cannot run '" + spec.path + "'"));
    auto request = m_agent.spawnRequest();
    fill_spawn_request(request.initRequest(), spec, stdio);
    auto spawned = request.send().then([](auto response) -> Result<Spawned> {
        BH_TRY(ipc::to_status(response.getOutcome()));
        return Spawned { response.getProcess(), response.getPid() };
    });
    return guarded(ipc::catch_disconnect<Spawned>(
        kj::mv(spawned), "the VM stopped during the operation", BH_E_VM_NOT_RUNNING));
}

kj::Promise<Result<int>> VmInstance::run_detached(ProgramSpec spec, std::array<Fd, 3> stdio)
{
    return spawn(std::move(spec), std::move(stdio)).then([this](Result<Spawned> spawned) -> Result<int> {
        if (!spawned)
            return spawned.take_error();
        // The program runs until it exits; holding its Process until then keeps it alive.
        auto process = kj::mv(spawned->process);
        m_exec_waits.add(process.waitRequest().send().ignoreResult().attach(kj::mv(process)));
        return 0;
    });
}

kj::Promise<Status> VmInstance::unmount(std::string vm_path)
{
    if (m_stopped)
        return Status(vm_gone("cannot unmount '" + vm_path + "'"));
    auto request = m_agent.unmountRequest();
    request.setVmPath(vm_path);
    auto done = request.send().then([](auto response) { return ipc::to_status(response.getOutcome()); });
    return guarded_status(ipc::catch_disconnect<void>(
        kj::mv(done), "the VM stopped during the operation", BH_E_VM_NOT_RUNNING));
}

kj::Promise<Result<Fd>> VmInstance::exec(const std::string& distro, ProgramSpec spec)
{
    auto agent = agent_for(distro);
    auto pair = make_socketpair();
    Fd null_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    if (!agent || !pair || !null_fd)
        return Result<Fd>(
            !agent ? agent.take_error() : Error::from_errno(errno, "cannot run '" + spec.path + "'"));
    auto theirs = duplicate(pair->theirs.get());
    if (!theirs)
        return Result<Fd>(theirs.take_error());
    std::array<Fd, 3> stdio { std::move(pair->theirs), std::move(theirs.value()), std::move(null_fd) };
    auto request = agent.value().spawnRequest();
    fill_spawn_request(request.initRequest(), spec, stdio);
    auto spawned
        = request.send().then([this, ours = std::move(pair->ours)](auto response) mutable -> Result<Fd> {
              BH_TRY(ipc::to_status(response.getOutcome()));
              // The program runs until it exits; holding its Process until then keeps it alive.
              auto process = response.getProcess();
              m_exec_waits.add(process.waitRequest().send().ignoreResult().attach(kj::mv(process)));
              return std::move(ours);
          });
    // The agent hanging up means its init died: the distribution or the VM is gone (terminated
    // or crashed while the call was in flight), which callers must see as such.
    bool in_distribution = !distro.empty();
    return guarded(ipc::catch_disconnect<Fd>(kj::mv(spawned),
        in_distribution ? "the distribution '" + distro + "' stopped during the operation"
                        : std::string("the VM stopped during the operation"),
        in_distribution ? BH_E_DISTRO_NOT_RUNNING : BH_E_VM_NOT_RUNNING));
}

kj::Promise<Status> VmInstance::mount(Fd dir, std::string vm_path, bool read_only, std::string name)
{
    if (m_stopped)
        return Status(vm_gone("cannot mount at '" + vm_path + "'"));
    if (vm_path.empty() || vm_path.front() != '/')
        return Status(Error { -EINVAL, "cannot mount at '" + vm_path + "': the VM path must be absolute" });
    // A host folder in a VM: private (see clone_for_vm), and no setuid program or device node of
    // the host's gains anything there. Read-only when asked, before it reaches the VM: mounted in
    // the staging mount, it propagates into the VM locked (VM root cannot clear those flags nor
    // unmount a submount to see what the host hid under it), and the agent moves it into place.
    std::string what = "cannot mount at '" + vm_path + "'";
    auto tree = clone_for_vm(dir.get(), "", AT_EMPTY_PATH,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (read_only ? MOUNT_ATTR_RDONLY : 0), what);
    if (!tree)
        return Status(tree.take_error());
    std::string staged_name = std::to_string(++m_staged);
    std::string staged = m_staging.path() + "/" + staged_name;
    if (::mkdir(staged.c_str(), 0700) < 0)
        return Status(Error::from_errno(errno, what + ": cannot create " + staged));
    if (move_mount(tree.value().get(), "", AT_FDCWD, staged.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0) {
        Error error = Error::from_errno(errno, what + ": cannot stage it");
        ::rmdir(staged.c_str());
        return Status(std::move(error));
    }
    // Once the agent has moved it (or failed to), the service's side goes; unmounting it also
    // takes the VM's copy away if it is still where it arrived.
    auto unstage = kj::defer([staged]() {
        ::umount2(staged.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
        ::rmdir(staged.c_str());
    });
    auto request = m_agent.mountRequest();
    request.setStaged(staged_name);
    request.setVmPath(vm_path);
    request.setReadOnly(read_only);
    auto mounted = request.send().then([this, name = std::move(name)](auto response) -> Status {
        Status status = ipc::to_status(response.getOutcome());
        if (status)
            m_mount_names.push_back(name);
        return status;
    });
    return guarded_status(ipc::catch_disconnect<void>(
                              kj::mv(mounted), "the VM stopped during the operation", BH_E_VM_NOT_RUNNING))
        .attach(kj::mv(unstage));
}

kj::Promise<void> VmInstance::within_stop_deadline(
    kj::Promise<void> ended, std::string what, kj::Function<void()> abandon)
{
    return ended.exclusiveJoin(
        m_env.timer.afterDelay(m_env.stop_deadline)
            .then([this, what = std::move(what), abandon = kj::mv(abandon)]() mutable {
                log_warning(what + " did not end within " + std::to_string(m_env.stop_deadline / kj::SECONDS)
                    + " s of SIGKILL (a process in uninterruptible sleep?); abandoned");
                abandon();
            }));
}

kj::Promise<void> VmInstance::terminate_distribution(const std::string& name)
{
    auto it = m_distros.find(name);
    if (it == m_distros.end()) {
        // A start in progress that has not listed its distribution yet: terminating now would
        // leave it running, unseen, once the start adopts it. Once listed, it is killed at once.
        auto starting = m_starting.find(name);
        if (starting != m_starting.end())
            return starting->second.addBranch().then([this, name](Status) {
                return m_distros.contains(name) ? terminate_distribution(name)
                                                : kj::Promise<void>(kj::READY_NOW);
            });
        return kj::READY_NOW;
    }
    kj::Own<RunningDistro> distro = kj::mv(it->second);
    m_distros.erase(it);
    syscall(SYS_pidfd_send_signal, distro->pidfd.get(), SIGKILL, nullptr, 0);
    int pidfd = distro->pidfd.get();
    // Abandoned, what is left of it stays in the VM until the VM ends.
    return within_stop_deadline(ipc::when_exited(m_env.port, pidfd), "the distribution '" + name + "'", []() {
    }).attach(kj::mv(distro));
}

kj::Promise<void> VmInstance::stop()
{
    if (m_stopped)
        return m_abandoned ? kj::Promise<void>(kj::READY_NOW) : ipc::when_exited(m_env.port, m_init.pidfd());
    m_stopped = true;
    m_canceler.cancel("the VM is stopping");
    auto stops = kj::heapArrayBuilder<kj::Promise<void>>(m_distros.size());
    std::vector<std::string> names;
    for (const auto& [name, distro] : m_distros)
        names.push_back(name);
    for (const auto& name : names)
        stops.add(terminate_distribution(name));
    return kj::joinPromises(stops.finish()).then([this]() {
        (void)m_init.kill(SIGKILL);
        // pasta lives in the VM's PID namespace, whose dying init waits until every process of
        // the namespace has been reaped: pasta is ours to reap first.
        kj::Promise<void> network_gone = kj::READY_NOW;
        if (m_network.valid()) {
            (void)m_network.kill(SIGKILL);
            network_gone = ipc::when_exited(m_env.port, m_network.pidfd()).then([this]() {
                (void)m_network.try_wait();
            });
        }
        // The init's death ended its PID namespace; what is left in the cgroup goes with it.
        auto ended = network_gone.then([this]() { return ipc::when_exited(m_env.port, m_init.pidfd()); })
                         .then([this]() { m_cgroup.remove(); });
        return within_stop_deadline(
            kj::mv(ended), "the VM (init pid " + std::to_string(m_init.pid()) + ")", [this]() {
                // The service goes on without it: this instance waits in env.leftovers until the
                // init ends, then reaps it and removes its cgroup.
                m_abandoned = true;
                m_env.leftovers.add(
                    ipc::when_exited(m_env.port, m_init.pidfd()).then([self = kj::addRef(*this)]() mutable {
                        (void)self->m_init.try_wait();
                        self->m_cgroup.remove();
                    }));
            });
    });
}

} // namespace bh::service
