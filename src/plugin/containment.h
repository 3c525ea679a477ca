// What bulkhead-pluginhost does to itself before any plugin code runs.
#pragma once

#include "base/fd.h"
#include "base/result.h"

namespace bh::host {

// Takes a socket the service left on `fd` (`what` names it in errors): it must be a Unix socket of
// `type` whose peer is our parent (SO_PEERCRED), or the host refuses to run: only the service can
// start or reach a host. Marks it close-on-exec.
Result<Fd> adopt_service_socket(int fd, int type, const char* what);

// Makes everything the plugin will start die with this host, and this host die with the service.
// `cgroup` is the directory fd of an empty cgroup (v2) the service made for this host. We set
// PR_SET_PDEATHSIG(SIGKILL), move into that cgroup (every process the plugin starts inherits it),
// and fork a guardian that waits for our death (its own parent-death signal) and then writes
// cgroup.kill, which kills every process left in the cgroup. The host keeps an ordinary pid, so
// the service sees its real exit status (the signal of a crash, say), and plugin threads and
// child processes behave as anywhere else.
Status contain_descendants(Fd cgroup);

// The baseline every host runs with: no_new_privs, every fd above `highest_kept` closed, and
// unless the plugin's configuration asks for core dumps: not dumpable (no ptrace by others) and
// no cores.
Status harden(bool core_dumps, int highest_kept);

// Removes LD_PRELOAD, LD_LIBRARY_PATH and every other LD_* variable from our environment, so
// programs the plugin starts do not inherit them.
void scrub_loader_environment();

} // namespace bh::host
