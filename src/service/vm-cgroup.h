// VmCgroups: a cgroup per VM capping its processes and memory, on cgroup v2 or v1 (hybrid hosts).
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "base/spawn.h"
#include "config/config.h"

#include <optional>
#include <string>
#include <vector>

namespace bh::service {

// Where each VM limit is enforced, for `bulkhead status`.
struct VmLimitsView {
    uint64_t pids_max = 0; // 0: no limit
    uint64_t memory_max = 0; // bytes; 0: no limit
    std::string pids; // "cgroup v2", "cgroup v1", "not limited", or why it cannot be enforced
    std::string memory;
};

// The cgroups of one VM: a cgroup2 directory whenever a cgroup2 hierarchy is mounted (the VM's
// init is created in it, and cgroup.kill empties it), and on hybrid hosts a directory in the v1
// pids and memory hierarchies too. Move-only; destroying it kills what is left and removes the
// directories. Thread affinity: the service's event loop (plain file writes).
class VmCgroup {
public:
    VmCgroup() = default;
    VmCgroup(VmCgroup&& other) noexcept { *this = std::move(other); }
    VmCgroup& operator=(VmCgroup&& other) noexcept;
    ~VmCgroup() { remove(); }

    // For SpawnPlan::cgroup_fd; -1 when there is no cgroup2 directory.
    int clone_fd() const { return m_v2_fd ? m_v2_fd.get() : -1; }
    // Starts `plan` inside this cgroup, so that it runs nothing outside it: created in the cgroup2
    // directory (CLONE_INTO_CGROUP) and, on hybrid hosts, born in the v1 pids and memory
    // directories, because the calling thread moves itself into them for the span of the clone
    // and back into each one's parent (the service's own) right after. A thread that moves
    // itself skips the kernel's global threadgroup lock, whose writer waits for an RCU grace
    // period: moving the child by pid afterwards cost 8 to 25 ms here, on the service's loop.
    // What it does not enter that way is joined by pid after the clone, as before: a cpu
    // directory (its quota would throttle the service's thread) and a memory one limited below
    // 16 MiB (the clone's own charges must not bring that memcg's OOM killer onto the service).
    // For that span the service's thread counts as one of the VM's tasks, and what it allocates
    // is charged to the VM's memory: so call it only while the cgroup holds nothing of the
    // user's (a new VM's, before its setup request), where the VM can neither fill pids.max nor
    // its memory to make the clone fail or bring the OOM killer on the service's thread. Aborts
    // the service if its thread cannot move back.
    Result<ChildProcess> spawn(SpawnPlan plan) const;
    // Kills every process left and removes the directories; idempotent. One that cannot be
    // removed is logged and left for the next start of the service.
    void remove();

private:
    friend class VmCgroups;
    std::string m_v2; // empty: none
    Fd m_v2_fd;
    std::vector<std::string> m_v1;
    std::vector<std::string> m_v1_born_in; // of m_v1, where spawn()'s child is born (see there)
};

// Limits one VM asks for on top of the admin's (a container session's --memory and --cpus).
struct VmCgroupRequest {
    uint64_t memory_max = 0; // bytes; 0: the admin's limit
    uint32_t cpu_millis = 0; // thousandths of a CPU; 0: no CPU limit
    // The cgroup2 directory is delegated to this host uid (the VM's root), as systemd's
    // Delegate= does: it may make up to max_delegated_cgroups cgroups below it, two deep, and
    // move its processes among them (a container session gives each container one). The limit
    // files stay root's.
    std::optional<uid_t> delegate_to;
};

inline constexpr unsigned max_delegated_cgroups = 512;

// Makes the VMs' cgroups with the admin's limits. Thread affinity: the service's event loop.
class VmCgroups {
public:
    // Finds the hierarchies, enables pids and memory for our children on cgroup v2, removes
    // the VM cgroups a killed service left, and logs once each limit it cannot enforce.
    explicit VmCgroups(const VmLimits& limits);
    // A controller that is unavailable is skipped (the VM runs without that limit, as logged at
    // start-up); failing to make a directory or write a limit is an error. What `request` asks
    // for is never skipped: a memory or CPU limit that cannot be applied is an error saying why,
    // and a memory limit above the admin's is refused.
    Result<VmCgroup> create(uint32_t session_id, const VmCgroupRequest& request = {});
    const VmLimitsView& view() const { return m_view; }
    // Whether `request` can be applied: what create() would refuse, checked before anything is made.
    Status check(const VmCgroupRequest& request);

private:
    struct Controller {
        const char* name; // "pids", "memory", "cpu"
        uint64_t limit; // the admin's; 0: none
        std::string v1_parent; // the v1 directory to create in; empty: v2 (or not enforced)
        bool v2 = false;
        std::optional<std::string> problem; // unset: not located yet; "": located; else why not
    };
    Status apply(const Controller& controller, uint64_t limit, const std::string& dir, bool v2) const;
    // Where the admin's limit goes, for the view; logs a limit that cannot be enforced.
    std::string place(Controller& controller);
    // Where a limit of `controller` goes (v2 or v1), decided the first time one is asked for:
    // "" once located, else why it cannot be.
    std::string locate(Controller& controller);
    Status apply_cpu(VmCgroup& cgroup, const std::string& name, uint32_t cpu_millis);
    static Status delegate(VmCgroup& cgroup, uid_t uid);

    std::string m_v2_base;
    std::vector<Controller> m_controllers;
    VmLimitsView m_view;
    unsigned m_serial = 0;
    Controller m_cpu { "cpu", 0 };
};

} // namespace bh::service
