// spawn_process: start a program, optionally in new namespaces, without fork()ing the caller.
#pragma once

#include "base/child-process.h"
#include "base/result.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bh {

struct Credentials {
    uid_t uid = 0;
    gid_t gid = 0;
};

// A user's subordinate id ranges: host ids start .. start + count - 1 of each.
struct SubordinateIds {
    uint32_t uid_start = 0;
    uint32_t uid_count = 0;
    uint32_t gid_start = 0;
    uint32_t gid_count = 0;
};

struct SpawnPlan {
    // The program; when `exec_fd` is set, it is executed through that fd (execveat) and `path`
    // only names it in messages, so no path lookup happens in the child.
    std::string path;
    int exec_fd = -1;
    std::vector<std::string> argv;
    std::vector<std::string> env;
    // (fd in the caller, fd number in the child). Everything above the highest number planned is
    // closed at exec, even an fd the caller inherited without O_CLOEXEC; 0, 1 and 2 are the
    // caller's unless planned.
    std::vector<std::pair<int, int>> fds;
    // CLONE_NEW* flags for the child.
    int namespaces = 0;
    // With CLONE_NEWUSER: root inside the new user namespace maps to these host ids, and the
    // child becomes that root before exec (so it keeps full capabilities in its namespace).
    std::optional<Credentials> map_root_to;
    // With map_root_to: ids 1..count inside map to these host ranges as well (the user's
    // /etc/subuid and /etc/subgid range, as newuidmap would map them).
    std::optional<SubordinateIds> subordinate;
    // An existing user namespace (an fd of it, the caller's) for the child to join and be root
    // in before exec: it then has every capability over what that namespace owns, and none
    // over the host's; its host ids are what root there maps to. Not with CLONE_NEWUSER.
    int join_user_namespace = -1;
    // An existing PID namespace (an fd of it) to create the child in: it then dies with that
    // namespace's init, whatever it does to its own parent-death signal.
    int join_pid_namespace = -1;
    // Without a user namespace: switch to these ids (and no supplementary groups) before exec.
    std::optional<Credentials> run_as;
    // Directory to start in; empty keeps the caller's.
    std::string cwd;
    // The child leads a new session whose controlling terminal is its fd 0 (a terminal's slave
    // end, planned in `fds`), as a login shell's is: job control and the terminal's signals work.
    bool controlling_terminal = false;
    // The child gets SIGKILL when the spawning thread dies. Spawn from a thread that lives as
    // long as the process (the event-loop thread), or the child dies with the thread.
    bool die_with_parent = true;
    // A cgroup v2 directory fd: the child is created inside that cgroup (clone3 with
    // CLONE_INTO_CGROUP). Moving a running process costs a cgroup-wide RCU synchronization (about
    // 10 ms measured here, a third of a host's activation); creating it there costs nothing.
    // Such a child is a copy-on-write clone rather than a CLONE_VM one (clone3 cannot run a
    // function on a new stack), which copies the caller's page tables once. Kernels before 5.7
    // cannot do this: there the child starts outside the cgroup and must join it itself (the
    // plugin host does).
    int cgroup_fd = -1;
};

// Starts the program described by `plan` using clone(CLONE_VM | CLONE_PIDFD): the caller's
// memory is never copied, so this costs the same in a 1 GiB service as in a tiny one. Returns
// once the program has been exec'd. An execve failure comes back as its errno (-ENOENT for a
// missing program), with a message naming the program.
Result<ChildProcess> spawn_process(const SpawnPlan& plan);

} // namespace bh
