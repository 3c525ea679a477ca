// The agent inside each VM and distribution: serves proto::Agent for the service, reaps as PID 1.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <kj/async-unix.h>
#include <map>
#include <optional>
#include <proto/vm.capnp.h>

namespace bh::vm {

// Reaps every child of this process (as a namespace's PID 1 it inherits orphans) and hands the
// wait status of the ones someone asked about to their waiters.
// Thread affinity: the agent's event-loop thread.
class Reaper {
public:
    explicit Reaper(kj::UnixEventPort& port)
        : m_port(port)
    {
    }
    // Runs forever, reaping on each SIGCHLD (captured before the event loop was set up).
    kj::Promise<void> run();
    // Starts remembering `pid`'s exit status.
    void watch(pid_t pid) { m_watched.emplace(pid, Watched {}); }
    // Resolves with `pid`'s wait status; `pid` must be watched.
    kj::Promise<int> wait_for(pid_t pid);
    // Stops remembering `pid` (its exit will be reaped and dropped).
    void forget(pid_t pid) { m_watched.erase(pid); }
    bool has_exited(pid_t pid) const;
    kj::UnixEventPort& port() { return m_port; }

private:
    struct Watched {
        std::optional<int> status;
        kj::Own<kj::PromiseFulfiller<int>> fulfiller;
    };
    void reap_all();

    kj::UnixEventPort& m_port;
    std::map<pid_t, Watched> m_watched;
};

enum class AgentRole { Vm, Distribution };

class Agent final : public proto::Agent::Server {
public:
    // `root_tree` is the distribution's detached root (Distribution role only).
    Agent(AgentRole role, Reaper& reaper, Fd root_tree);

protected:
    kj::Promise<void> version(VersionContext context) override;
    kj::Promise<void> setup(SetupContext context) override;
    kj::Promise<void> mount(MountContext context) override;
    kj::Promise<void> spawn(SpawnContext context) override;
    kj::Promise<void> startDistribution(StartDistributionContext context) override;
    kj::Promise<void> unmount(UnmountContext context) override;

private:
    Status setup_vm(proto::VmConfig::Reader config);
    void run_boot_command();

    AgentRole m_role;
    Reaper& m_reaper;
    Fd m_root_tree;
    bool m_set_up = false;
};

} // namespace bh::vm
