// Unpacking a user's archive in bulkhead-unpack, a confined process of its own: the service never
// parses an archive.
#pragma once

#include "base/result.h"
#include "base/spawn.h"
#include "unpack/rootfs-archive.h"
#include "unpack/rootfs-import.h"

#include <kj/async-unix.h>
#include <optional>
#include <string>
#include <sys/types.h>

namespace bh::service {

struct UnpackJob {
    int unpack_exe_fd; // O_PATH fd of bulkhead-unpack
    int archive_fd; // as the client sent it: a regular file, a pipe or a socket open for reading
    std::string target; // the rootfs directory to create; its parent must exist and be root's
    uid_t owner;
    gid_t group;
    // The owner's /etc/subuid and /etc/subgid ranges, mapped as in their VMs (subordinate-ids.h).
    std::optional<SubordinateIds> subordinate;
    ImportLimits limits;
};

// Creates `job.target` (mode 0755; the owner's when the owner is not root) and extracts the
// archive into it with bulkhead-unpack, started in new PID, network, IPC and UTS namespaces:
//  - a user's archive (owner != 0) as root of a user namespace mapping owner:group, so what it
//    writes is the owner's (no remapping pass), a parser bug gets that user's ids and no more,
//    and the filesystem's reserve for root holds against it; with a subordinate range mapped at
//    1..N as in the user's VMs, the archive's owners are kept up to N (beyond: refused);
//  - root's archive (which only root can send) as root, keeping the archive's owners.
// Either way it is chrooted into the target with only file capabilities (see src/unpack/main.cpp).
// Resolves with its result: how many device nodes it skipped, or the Error it reported ("cannot register from
// tar: ..."), or -EIO when it ended without one. Destroying the promise kills it (SIGKILL, reaped before the
// destructor returns), so whatever it wrote can then be removed safely. What it wrote stays on
// failure, for the caller to remove. Must be called on the thread that runs the event loop (the
// process dies with the thread that started it). The process's report is never taken for what it
// wrote: measure the tree (measure_tree).
kj::Promise<Result<uint64_t>> unpack_rootfs(kj::UnixEventPort& port, const UnpackJob& job);

struct PackJob {
    int unpack_exe_fd;
    int out_fd; // the client's, open for writing
    std::string name; // the distribution, for messages
    std::string rootfs;
    uid_t owner;
    gid_t group;
    std::optional<SubordinateIds> subordinate;
    TarCompression compression;
};

// `bulkhead export`: writes the tree at `job.rootfs` as a tar (compressed as asked) to
// `job.out_fd`, from bulkhead-unpack --pack, confined as for unpacking (the distribution's own ids,
// chrooted into that tree, reading with CAP_DAC_OVERRIDE only). Errors name the distribution.
// Destroying the promise kills it. Called on the event loop's thread, like unpack_rootfs.
kj::Promise<Status> pack_rootfs(kj::UnixEventPort& port, const PackJob& job);

} // namespace bh::service
