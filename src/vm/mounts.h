// Building the roots of a VM and of a distribution inside it (runs in bulkhead-vminit).
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <string>

namespace bh::vm {

struct VmRootConfig {
    std::string hostname;
    bool host_network = false;
    std::string staging; // the service's staging mount, kept (as a slave) at staged_mounts; may be empty
};

// Where the VM keeps its copy of the service's staging mount (VmConfig.staging).
inline constexpr const char* staged_mounts = "/run/bulkhead/mounts";

// In a fresh mount namespace: a tmpfs root with the host's /usr, /bin, /sbin, /lib* read-only,
// its own /proc, a minimal /dev and a /tmp; pivots into it. Also sets the hostname and brings
// up loopback in a private network namespace.
Status build_vm_root(const VmRootConfig& config);

// In a fresh mount namespace inside the VM: attaches the detached tree `root_tree` as the
// distribution's root, gives it its own /proc and a minimal /dev, and pivots into it.
// With a `nat_dns` address (vm.network = "nat"), the distribution's /etc/resolv.conf is, in its
// mount namespace only, a file naming that DNS forwarder (pasta's): a regular file is covered, a
// missing one is created empty first (the one change on disk), a symlink is left to the distribution.
Status build_distribution_root(Fd root_tree, const std::string& nat_dns);

// Moves the tree the service staged as `name` (digits only) under staged_mounts to `vm_path`.
Status attach_staged(const std::string& name, const std::string& vm_path, bool read_only);
// Detaches the mount at the absolute `vm_path` (never following a symlink there).
Status detach_mount(const std::string& vm_path);

} // namespace bh::vm
