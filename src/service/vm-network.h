// A VM's user-mode network (vm.network = "nat"): pasta, connected to the VM's network namespace.
#pragma once

#include "base/child-process.h"
#include "base/result.h"
#include "base/spawn.h"
#include "service/vm-cgroup.h"

#include <kj/async-io.h>
#include <kj/timer.h>

namespace bh::service {

// pasta (Debian's passt package), started for one VM. The caller keeps `pasta` as long as the
// VM lives (its destructor kills and reaps it); `ready` resolves once pasta has configured the
// VM's interface, or with what it printed when it could not.
struct NatNetwork {
    ChildProcess pasta;
    kj::Promise<Status> ready;
};

// Starts pasta for the VM whose init is `init` (not yet running anything of the user's),
// in the VM's cgroup, so it counts toward the VM's limits, and in the VM's PID namespace
// (`pid_namespace`), so it dies with the VM's init whatever happens to the service: pasta drops
// capabilities, which clears the parent-death signal.
//
// For a user's VM, pasta joins the VM's user namespace and is root there:
// its host uid is the user's, it holds capabilities over the VM's namespaces only, and every
// connection it makes for the VM is the user's own. Root's VM has no user namespace: pasta runs
// as root there, with the few capabilities it keeps for itself. No port of the host is forwarded
// into the VM nor the other way; the host's loopback is reachable at nat_host_address.
// `user`: the host ids the VM's root maps to; nullopt for root's VM.
Result<NatNetwork> start_nat_network(kj::LowLevelAsyncIoProvider& provider, kj::Timer& timer,
    const ChildProcess& init, int pid_namespace, const VmCgroup& cgroup, std::optional<Credentials> user);

} // namespace bh::service
