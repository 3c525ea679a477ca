// VmInstance: the service's handle on one running VM (its init, its agent, its distributions).
#pragma once

#include "base/child-process.h"
#include "base/fd.h"
#include "base/result.h"
#include "base/spawn.h"
#include "config/config.h"
#include "ipc/fd-cap.h"
#include "service/registry.h"
#include "service/vm-cgroup.h"

#include <kj/async-unix.h>
#include <map>
#include <proto/vm.capnp.h>

namespace bh::service {

// What every VM needs from the service; outlives every VM.
struct VmEnvironment {
    kj::LowLevelAsyncIoProvider& provider;
    kj::UnixEventPort& port;
    int vminit_exe_fd; // O_PATH fd of bulkhead-vminit, executed with execveat
    VmCgroups& cgroups; // each VM's init starts in a cgroup of its own from here
    kj::Timer& timer;
    // How long a SIGKILLed distribution or VM may take to end before it is abandoned: a process
    // in uninterruptible sleep (a FUSE server that never answers, a frozen cgroup) would hold
    // its PID namespace, and with it the stop, forever.
    kj::Duration stop_deadline;
    // Where abandoned VM inits wait to be reaped (and their cgroups removed) once they end;
    // outlives every VmInstance.
    kj::TaskSet& leftovers;
    // Where each VM's staging mount is made (<runtime-dir>/vm-mounts), in the service's own mount
    // namespace: see proto/vm.capnp, VmConfig.staging.
    std::string staging_dir;
};

// A VM's staging mount: a small tmpfs, shared (a peer group of its own), made before the VM is
// cloned so the VM holds a slave copy. Unmounted and removed when destroyed.
class StagingMount {
public:
    // Root's, mode 0711: the VM's init (as its user) passes through it, but no user may create,
    // rename or replace anything in it (the service mounts and unmounts there as root).
    static Result<StagingMount> create(const std::string& base, uint32_t session_id);
    StagingMount() = default;
    StagingMount(StagingMount&& other) noexcept
        : m_path(std::exchange(other.m_path, {}))
    {
    }
    StagingMount& operator=(StagingMount&& other) noexcept;
    ~StagingMount();
    const std::string& path() const { return m_path; }

private:
    explicit StagingMount(std::string path)
        : m_path(std::move(path))
    {
    }
    std::string m_path;
};

struct SessionIdentity {
    uint32_t session_id = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string user_name;
};

// A distribution running in a VM: its init (PID 1 of its own PID namespace) and agent.
struct RunningDistro {
    DistroRecord record;
    uint32_t init_pid = 0; // as seen from the VM
    uint64_t pid_namespace = 0; // inode
    Fd pidfd; // of its init; SIGKILL ends the whole distribution
    kj::Own<ipc::Connection> connection;
    proto::Agent::Client agent = nullptr;
    kj::Promise<void> watcher = nullptr; // removes the entry when the distribution dies
};

// The program of a run with a terminal, for its client's signals: reaches the program while the
// run lasts and nothing after; holding it never keeps the program alive (dropping the run's
// Process kills it). Thread affinity: the service's event loop.
class ProgramSignals final : public kj::Refcounted {
public:
    explicit ProgramSignals(proto::Process::Client process)
        : m_process(kj::mv(process))
    {
    }
    kj::Promise<Status> send(int signal);
    void end() { m_process = nullptr; }

private:
    kj::Maybe<proto::Process::Client> m_process;
};

// A pseudo-terminal for a program of `run`: its size, and who gets its master end (the agent's
// answer, checked to be a pseudo-terminal's master end) and its signals once the program started.
struct TerminalSpec {
    uint16_t rows = 0;
    uint16_t columns = 0;
    kj::Function<kj::Promise<void>(Fd master, kj::Own<ProgramSignals> program)> attach;
    // Set: the program makes the terminal and hands its master end over the console socket the
    // agent gives it (crun's --console-socket), instead of the agent opening one; the program's
    // stdio are then the fds given to run. A program that ends without handing one over is not
    // attached (its errors went to its stderr).
    bool handed_over = false;
};

// The error code of a `run` whose distribution or VM ended while the program ran: the program
// died with them (SIGKILL, from the end of its PID namespace). The message names the distribution.
constexpr int program_orphaned = -EOWNERDEAD;

// What `run` and `exec` start in a VM or distribution.
struct ProgramSpec {
    std::string path;
    std::vector<std::string> argv;
    std::vector<std::string> env;
    std::string user; // empty: root, or with default_user the distribution's default user
    bool default_user = false; // `run` without -u: the distribution's /etc/bulkhead.conf names whom
    std::optional<TerminalSpec> terminal; // run only: the program's stdio is this terminal
    bool login_shell = false; // path and argv empty: the user's login shell
    std::string cwd; // empty: the user's home
};

// One VM. Thread affinity: the service's event-loop thread. Refcounted so that operations in
// flight keep it alive; stop() ends it for everyone, and every later or pending operation fails
// with BH_E_VM_NOT_RUNNING (pending ones are cancelled, never left waiting).
class VmInstance final : public kj::Refcounted, private kj::TaskSet::ErrorHandler {
public:
    // Spawns the VM's init in new namespaces and its own cgroup, and builds its root. Fails with
    // what went wrong.
    // `limits`: what the VM's cgroup holds beyond the admin's limits (a container session's).
    static kj::Promise<Result<kj::Own<VmInstance>>> start(VmEnvironment& env, const SessionIdentity& identity,
        const VmSettings& settings, const VmCgroupRequest& limits = {});
    VmInstance(VmEnvironment& env, VmSettings settings, VmCgroup cgroup, StagingMount staging,
        ChildProcess init, Fd pid_namespace, kj::Own<ipc::Connection> connection, ChildProcess network);
    ~VmInstance();

    bool running() const { return !m_stopped; }
    pid_t init_pid() const { return m_init.pid(); }
    // vm.network = "nat" that could not be had (no pasta, no route out of the host): why. The VM
    // then runs with its loopback only.
    const std::string& network_problem() const { return m_network_problem; }
    const VmSettings& settings() const { return m_settings; }
    const std::map<std::string, kj::Own<RunningDistro>>& distributions() const { return m_distros; }
    const RunningDistro* find_distribution(const Uuid& uuid) const;

    // Runs once a distribution is up, inside its start attempt (callers of a concurrent start wait
    // for it too). A failure ends the distribution and is the attempt's result.
    using StartedHook = kj::Function<kj::Promise<Status>(const RunningDistro&)>;
    // Starts `record` from `rootfs` unless it runs already; concurrent starts share one attempt.
    kj::Promise<Status> start_distribution(
        const DistroRecord& record, const std::string& rootfs, StartedHook on_started);
    // Runs a program with the given stdio inside a running distribution (or in the VM's root
    // namespace when `distro` is empty); resolves with its wait status.
    kj::Promise<Result<int>> run(const std::string& distro, ProgramSpec spec, std::array<Fd, 3> stdio);
    // Starts a program with the given stdio in the VM's root namespace and resolves with 0 once it
    // runs; it lives until it exits or the VM ends.
    kj::Promise<Result<int>> run_detached(ProgramSpec spec, std::array<Fd, 3> stdio);
    // Starts a program with the given stdio in the VM's root namespace: its Process capability
    // (dropping it kills the program) and its pid in the VM.
    struct Spawned {
        proto::Process::Client process;
        int32_t pid = 0;
    };
    kj::Promise<Result<Spawned>> spawn(ProgramSpec spec, std::array<Fd, 3> stdio);
    // Detaches the mount at the absolute `vm_path` of the VM's root namespace.
    kj::Promise<Status> unmount(std::string vm_path);
    // Runs a program with stdin and stdout connected to the returned socket (stderr discarded).
    kj::Promise<Result<Fd>> exec(const std::string& distro, ProgramSpec spec);
    // Attaches the directory behind `dir` at the absolute `vm_path` of the VM's root namespace.
    kj::Promise<Status> mount(Fd dir, std::string vm_path, bool read_only, std::string name);
    // Kills one distribution and waits until its init is gone.
    kj::Promise<void> terminate_distribution(const std::string& name);
    // Stops every distribution, then the VM, then removes its cgroup; idempotent.
    kj::Promise<void> stop();
    // Resolves when the VM ends on its own (its init died or its agent hung up).
    kj::Promise<void> on_failure() { return m_failed.addBranch(); }

private:
    kj::Promise<Status> launch_distribution(DistroRecord record, std::string rootfs);
    kj::Promise<Status> run_started_hook(const std::string& name, StartedHook on_started);
    kj::Promise<Status> adopt_distribution(DistroRecord record, Fd service_end,
        capnp::Response<proto::Agent::StartDistributionResults> response);
    // `ended`: the error's message when the program's distribution or VM ends under it
    // (program_orphaned).
    kj::Promise<Result<int>> spawn_and_wait(
        proto::Agent::Client agent, ProgramSpec spec, std::array<Fd, 3> stdio, std::string ended);
    Result<proto::Agent::Client> agent_for(const std::string& distro);
    template<typename T> kj::Promise<Result<T>> guarded(kj::Promise<Result<T>> promise);
    kj::Promise<Status> guarded_status(kj::Promise<Status> promise);
    void taskFailed(kj::Exception&& exception) override;
    // `ended`, or the stop deadline: then `what` is logged as abandoned and `abandon` runs.
    kj::Promise<void> within_stop_deadline(
        kj::Promise<void> ended, std::string what, kj::Function<void()> abandon);

    VmEnvironment& m_env;
    VmSettings m_settings;
    // Declared before m_init: removed (and emptied) only once the init has been reaped.
    VmCgroup m_cgroup;
    StagingMount m_staging;
    uint64_t m_staged = 0; // trees staged so far: each gets the next number as its name
    ChildProcess m_init;
    ChildProcess m_network; // pasta (vm.network = "nat"); in m_cgroup, killed with it at the latest
    std::string m_network_problem;
    Fd m_pid_namespace; // the init's, opened at spawn: what a distribution's init must be below
    kj::Own<ipc::Connection> m_connection;
    proto::Agent::Client m_agent;
    std::map<std::string, kj::Own<RunningDistro>> m_distros;
    std::map<std::string, kj::ForkedPromise<Status>> m_starting;
    std::vector<std::string> m_mount_names;
    kj::Canceler m_canceler;
    // Programs started by exec() run until they exit; their Process capabilities live here.
    kj::TaskSet m_exec_waits { *this };
    // Removals of map entries whose own promise is the one noticing they are done (a distribution
    // that died, an attempt that finished): run from here, never from inside that promise, which
    // kj forbids destroying while it runs ("Promise callback destroyed itself").
    kj::TaskSet m_removals { *this };
    kj::ForkedPromise<void> m_failed;
    bool m_stopped = false;
    bool m_abandoned = false; // stop() gave up waiting: m_init and m_cgroup went to env.leftovers
};

// Calls `call(vm)` and keeps the VM alive until the promise it returns is done: its session may
// drop it (stopped, replaced) while the operation is in flight. Every operation on a session's VM
// goes through one of these two.
template<typename Call> auto call_holding(kj::Own<VmInstance> vm, Call&& call)
{
    VmInstance& ref = *vm;
    return call(ref).attach(kj::mv(vm));
}
template<typename Call> auto call_holding(VmInstance& vm, Call&& call)
{
    return call_holding(kj::addRef(vm), std::forward<Call>(call));
}

} // namespace bh::service
