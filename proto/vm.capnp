# The VM agent protocol: bulkheadd talks to the init of each VM and of each distribution
# (bulkhead-vminit) over a private socketpair. The service treats every answer as untrusted:
# the agent runs inside the user's VM.
@0xbd36805cd945880b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bh::proto");

using Common = import "common.capnp";

const agentMajor :UInt32 = 1;

struct VmConfig {
  hostname @0 :Text;
  hostNetwork @1 :Bool;
  customInit @2 :Text;     # empty: bulkhead-vminit stays PID 1
  # A shared mount of the service's (a path in the namespace the VM was cloned from) that the VM
  # keeps a slave copy of: trees the service mounts there propagate into the VM, and arrive
  # locked (their submounts cannot be unmounted, their read-only, nosuid and nodev flags cannot
  # be cleared), since they cross from the service's user namespace into the VM's.
  staging @3 :Text;
  # Set when the service connected the VM's network namespace to pasta (vm.network = "nat"): the
  # address pasta forwards DNS queries from, which each distribution's /etc/resolv.conf names.
  natDns @4 :Text;
}

struct SpawnRequest {
  path @0 :Text;
  argv @1 :List(Text);
  env @2 :List(Text);
  stdin @3 :Common.Fd;
  stdout @4 :Common.Fd;
  stderr @5 :Common.Fd;
  user @6 :Text;           # empty: root of the VM
  # Set: the program gets a new pseudo-terminal of the distribution's own devpts as its stdin,
  # stdout and stderr, leads a new session and has it as controlling terminal; stdin, stdout and
  # stderr above are not used. The master end comes back in spawn's `terminal`.
  terminal @7 :TerminalSize;
  # Set: path and argv are empty, and the program is the user's shell from the distribution's
  # /etc/passwd (/bin/sh without one), started as a login shell (argv[0] "-" and its name).
  loginShell @8 :Bool;
  # The directory to start in (absolute, entered as the user); empty: the user's home, or /.
  cwd @9 :Text;
  # Set with `terminal`: the program makes its pseudo-terminal itself and hands the master end
  # over a console socket (crun's --console-socket): a listening unix socket the agent makes,
  # its path in the program's environment as BULKHEAD_CONSOLE_SOCKET. stdin, stdout and stderr
  # above are the program's. The first master end received comes back in spawn's `terminal`, of
  # `terminal`'s size, and spawn answers once it came, or without one once the program ended.
  consoleSocket @10 :Bool;
  # Set with an empty `user`, in a distribution: the program runs as the distribution's default
  # user, named by `[user] default` in its /etc/bulkhead.conf (root without one).
  defaultUser @11 :Bool;
}

struct TerminalSize {
  rows @0 :UInt16;
  columns @1 :UInt16;
}

interface Process {
  # Resolves with the raw wait status once the process has exited.
  wait @0 () -> (waitStatus :Int32);
  # Sends `signal` to the process (through its pidfd: never to a recycled pid); nothing once it
  # has exited.
  signal @1 (signal :Int32) -> (outcome :Common.Outcome);
  # Dropping the Process capability kills the process if it still runs.
}

interface Agent {
  version @0 () -> (major :UInt32);
  # VM init only: builds the VM's root and pivots into it. Called once, first.
  setup @1 (config :VmConfig) -> (outcome :Common.Outcome);
  # Moves the tree the service mounted at `staged` (a name of digits) in the staging mount
  # (VmConfig.staging) to the absolute vmPath. `tree` is no longer used (a tree attached by the
  # agent itself would not be locked).
  mount @2 (tree :Common.Fd, vmPath :Text, readOnly :Bool, staged :Text) -> (outcome :Common.Outcome);
  # An execve failure comes back as its negated errno in outcome.code.
  spawn @3 (request :SpawnRequest)
      -> (outcome :Common.Outcome, process :Process, pid :Int32, terminal :Common.Fd);
  # VM init only: starts a distribution init in its own mount and PID namespaces, pivoted into
  # rootTree, serving this protocol on `channel`.
  startDistribution @4 (name :Text, rootTree :Common.Fd, channel :Common.Fd)
      -> (outcome :Common.Outcome, initPid :UInt32, pidNamespace :UInt64, pidfd :Common.Fd);
  # VM init only: detaches the mount at the absolute vmPath (what mount attached there).
  unmount @5 (vmPath :Text) -> (outcome :Common.Outcome);
}
