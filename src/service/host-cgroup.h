// HostCgroup: one cgroup (v2) per plugin host, so everything a plugin starts can be killed at once.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <string>

namespace bh::service {

// Created empty in cgroup2_base() (beside the service's own cgroup); the host is created in it
// (or moves itself in) before any plugin code runs, and every process the plugin starts inherits
// it. Thread affinity: none (plain syscalls).
class HostCgroup {
public:
    // Fails when no cgroup2 hierarchy is mounted: plugins are then not started at all, since
    // nothing could contain what they spawn.
    static Result<HostCgroup> create(const std::string& label);
    HostCgroup() = default;
    HostCgroup(HostCgroup&&) noexcept = default;
    HostCgroup& operator=(HostCgroup&&) noexcept = default;
    // Kills what is left and removes the directory (best effort: it may still be draining).
    ~HostCgroup();

    int fd() const { return m_dir.get(); }
    // SIGKILLs every process in the cgroup (cgroup.kill).
    void kill() const;
    // Whether any process is still in it (cgroup.events).
    bool populated() const;
    // Caps the number of processes (and threads) in the cgroup: pids.max. Needs the pids
    // controller enabled for this cgroup in the cgroup2 hierarchy; -ENOTSUP when it is not.
    Status limit_processes(uint64_t count) const;
    // Removes the directory; fails with EBUSY while processes remain.
    Status remove();

private:
    std::string m_path;
    Fd m_dir;
};

// Removes the empty host cgroups a killed service left behind (the guardians emptied them).
void remove_stale_host_cgroups();

} // namespace bh::service
