// Cgroup file-system helpers shared by the plugin hosts' and the VMs' cgroups (v2 and v1).
#pragma once

#include "base/result.h"

#include <string>
#include <sys/types.h>

namespace bh::service {

// The directory the service's own cgroups go in, in the cgroup2 hierarchy: the service's own
// cgroup, or its parent when the service moved itself into the leaf `service_leaf_name` (see
// enable_v2_controllers). Empty when no cgroup2 hierarchy is mounted.
std::string cgroup2_base();
// The service's own cgroup in the v1 hierarchy of `controller` ("pids", "memory"). Empty when
// that controller is not mounted as a v1 hierarchy (a pure cgroup2 host).
std::string cgroup1_own_dir(const std::string& controller);
// The cgroup2 directory of process `pid`; empty when it is gone or no cgroup2 is mounted.
std::string cgroup2_dir_of(pid_t pid);

inline constexpr const char* service_leaf_name = "bulkhead-service";

// The pure parts of the functions above, for tests. The directory, from `mountinfo`
// (/proc/self/mountinfo) and `proc_cgroup` (/proc/PID/cgroup), of the cgroup of the v1 hierarchy
// of `controller`, or of the cgroup2 one when `controller` is empty; empty when there is none.
std::string cgroup_dir_in(
    const std::string& mountinfo, const std::string& proc_cgroup, const std::string& controller);
// `dir` without a last component named service_leaf_name.
std::string without_service_leaf(std::string dir);

// Enables `controllers` ("+pids +memory" style words, one at a time) for the children of
// cgroup2_base(). A cgroup with processes may not pass controllers on ("no internal processes"),
// so when the service sits in the base itself it first moves itself into the leaf
// `<base>/bulkhead-service`. Returns the controllers it could not enable, with why, or "".
std::string enable_v2_controllers(const std::string& base, const std::string& controllers);

// Writes `text` to the file `name` of the cgroup directory `dir`; the error names the file.
Status write_cgroup_file(const std::string& dir, const std::string& name, const std::string& text);

// The whole content of the file `name` of the cgroup directory `dir`; empty if unreadable.
std::string read_cgroup_file(const std::string& dir, const std::string& name);

// Takes `dir` and what is below it back from a delegate (chowned to root, top-down), then
// kills everything in it (cgroup.kill on v2; on v1, SIGKILL to each
// pid in cgroup.procs, again until none is left), then removes it, waiting at most about a
// second for the killed processes to leave. EBUSY when they did not: start-up removes it then.
Status kill_and_remove_cgroup(const std::string& dir);

// The files of a cgroup2 directory a delegate may write besides the directory itself (cgroup v2's
// "Delegation Containment"): VmCgroups::delegate gives them away, removal takes them back.
inline constexpr const char* delegated_cgroup_files[]
    = { "cgroup.procs", "cgroup.threads", "cgroup.subtree_control" };

// Removes the cgroups named `<prefix><pid>-...` in `parent` whose service `<pid>` is gone: kills
// what is left in each and waits for it to leave (at most a second each; logged if it does not).
void remove_stale_cgroups(const std::string& parent, const std::string& prefix);

} // namespace bh::service
