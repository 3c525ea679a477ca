// Checking what an agent says about a process against what the service can observe itself.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <cstdint>
#include <sys/types.h>

namespace bh::service {

// What the kernel says about a distribution's init, given its pidfd.
struct VerifiedInit {
    pid_t host_pid = 0;
    uint32_t pid_in_vm = 0; // its pid as seen from the VM's PID namespace
    uint64_t pid_namespace = 0; // the inode of its own PID namespace
};

// Opens the PID namespace of the process behind `pidfd` (the VM init's, at its start).
Result<Fd> open_pid_namespace(int pidfd);

// Checks that `pidfd` is a pidfd of a process that is PID 1 of a PID namespace whose parent is
// `parent_pidns` (an fd of the VM's PID namespace): the only thing a distribution's init can be.
// An agent runs as the root of a user's VM, so a pidfd it sends is that user's input: it could
// be of any host process, which `terminate` would then SIGKILL as root. Fails with -EPERM for a
// process outside that namespace, -EBADF for an fd that is not a pidfd, -ESRCH for a process
// that ended before it could be checked. The numbers returned are read from the kernel, not
// from the agent.
Result<VerifiedInit> verify_distribution_init(int pidfd, int parent_pidns);

} // namespace bh::service
