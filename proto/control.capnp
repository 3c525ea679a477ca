# The control protocol: the bulkhead CLI (any user) talks to bulkheadd over <runtime-dir>/control.sock.
@0xadfe9dfa35decf0b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bh::proto");

using Common = import "common.capnp";

# Version of this protocol. A client whose major differs is refused at hello(); a newer minor
# on either side is accepted (fields are only ever added).
const controlMajor :UInt32 = 1;
const controlMinor :UInt32 = 1;

# Which session a call acts on. Everyone acts on their own (SO_PEERCRED uid); only root may
# name another user's uid.
struct Target {
  uid @0 :Int64 = -1;
}

# Settings from the user's ~/.config/bulkhead/bulkhead.toml; the service applies the admin policy.
struct UserSettings {
  hasIdleTimeout @0 :Bool;
  idleTimeoutS @1 :UInt32;
  hasHostNetwork @2 :Bool;
  hostNetwork @3 :Bool;    # the old spelling of network: "host" or "none"
  init @4 :Text;           # empty: not set
  network @5 :Text;        # "none", "nat" or "host"; empty: not set (hasHostNetwork may be)
}

struct DistroInfo {
  name @0 :Text;
  uuid @1 :Text;
  package @2 :Text;
  flavor @3 :Text;
  version @4 :Text;
  isDefault @5 :Bool;
  running @6 :Bool;
  ownerUid @7 :UInt32;
  initPid @8 :UInt32;       # as seen from the VM; 0 when not running
  pidNamespace @9 :UInt64;  # inode; 0 when not running
  skippedDevices @10 :UInt64;  # only in register's answer: device nodes not imported (the
                               # distribution gets its own /dev)
  inPlace @11 :Text;           # register --in-place: the folder adopted; empty otherwise
}

struct SessionStatus {
  sessionId @0 :UInt32;
  uid @1 :UInt32;
  userName @2 :Text;
  vmRunning @3 :Bool;
  vmInitPid @4 :Int32;      # host pid of the VM's init; 0 when not running
  hostNetwork @5 :Bool;
  idleTimeoutS @6 :UInt32;
  customInit @7 :Text;
  runningDistros @8 :List(Text);
  customConfigFlags @9 :UInt32;
  network @10 :Text;        # "none", "nat" or "host" (hostNetwork: the same, as a Bool)
  networkProblem @11 :Text; # why the running VM has no network although it asked for nat; empty: none
}

struct PluginStatus {
  name @0 :Text;
  path @1 :Text;
  isolation @2 :Text;       # "process" or "none"
  pid @3 :Int32;            # of its host; 0 in-process or not started
  state @4 :Text;           # "not loaded", "running", "failed to load", "crashed"
  cause @5 :Text;           # why it failed or crashed, e.g. "killed by signal SIGKILL during on_vm_started"
}

struct VmLimitsStatus {
  pidsMax @0 :UInt64;       # each VM's pids.max; 0: no limit
  memoryMax @1 :UInt64;     # bytes; 0: no limit
  pids @2 :Text;            # where it is enforced: "cgroup v2", "cgroup v1", "not limited", "unavailable: why"
  memory @3 :Text;
}

struct ServiceStatus {
  version @0 :Text;
  pid @1 :Int32;
  sessions @2 :List(SessionStatus);
  distributions @3 :List(DistroInfo);
  plugins @4 :List(PluginStatus);
  vmLimits @5 :VmLimitsStatus;
}

interface Control {
  # The archive is a tar stream (any compression) read until EOF.
  # `producer`, when set, is asked once the archive was read to its end whether the client
  # produced it completely (it streams a directory); a failure there discards the import.
  register @0 (name :Text, archive :Common.Fd, package :Text, target :Target,
               producer :ArchiveProducer)
      -> (outcome :Common.Outcome, distro :DistroInfo);
  # `deleteInPlace`: a folder adopted with registerInPlace goes too (otherwise it stays).
  unregister @1 (name :Text, target :Target, deleteInPlace :Bool) -> (outcome :Common.Outcome);
  setDefault @2 (name :Text, target :Target) -> (outcome :Common.Outcome);
  start @3 (name :Text, settings :UserSettings, target :Target)
      -> (outcome :Common.Outcome, distro :DistroInfo);
  # Runs argv inside the distribution (empty name: the default one) with the given fds as its
  # stdin, stdout and stderr. Returns the raw wait status once the program exits. Dropping the
  # call (the client disconnects) kills the program. A program whose distribution was terminated
  # under it died with it: the outcome says so (BH_E_DISTRO_NOT_RUNNING) and waitStatus is set
  # too, to its SIGKILL death.
  # With `terminal`, the program runs on a new pseudo-terminal of the distribution instead (its
  # session leader, with it as controlling terminal; the std fds are not used), and the client
  # gets the terminal's master end through terminal.client once the program started: it relays
  # the user's terminal, sets the window size and sends signals through it (TIOCSIG).
  run @4 (distro :Text, user :Text, argv :List(Text), env :List(Text),
          stdin :Common.Fd, stdout :Common.Fd, stderr :Common.Fd,
          settings :UserSettings, target :Target, terminal :TerminalRequest,
          loginShell :Bool, cwd :Text)
      -> (outcome :Common.Outcome, waitStatus :Int32);
  # loginShell: argv is empty, and the program is the user's login shell (proto/vm.capnp).
  # cwd: where the program starts (absolute); empty: the user's home.
  terminate @5 (name :Text, target :Target) -> (outcome :Common.Outcome);
  shutdown @6 (all :Bool, target :Target) -> (outcome :Common.Outcome);
  list @7 (target :Target, all :Bool) -> (outcome :Common.Outcome, distros :List(DistroInfo));
  status @8 () -> (outcome :Common.Outcome, status :ServiceStatus);

  # The VM operations plugins use, exposed for administrators and plugin authors to try them.
  # hostDir: the folder, opened by the client (so it is reached with the client's rights).
  vmMount @9 (hostDir :Common.Fd, vmPath :Text, readOnly :Bool, name :Text,
              settings :UserSettings, target :Target) -> (outcome :Common.Outcome);
  vmExec @10 (path :Text, argv :List(Text), distro :Text, settings :UserSettings, target :Target)
      -> (outcome :Common.Outcome, socket :Common.Fd);

  # Writes the distribution's files as a tar to `out` (opened for writing by the client, so it
  # lands where the client may write), compressed as `compression` says: "none", "gzip", "xz" or
  # "zstd". Dropping the call stops it.
  export @11 (name :Text, out :Common.Fd, compression :Text, target :Target)
      -> (outcome :Common.Outcome);

  # Container sessions: named, per user (Target), each with a VM of its own started on demand.
  # create opens an existing session of that name unless `exclusive` (then EEXIST).
  containerSessionCreate @12 (name :Text, settings :ContainerSessionSettings, exclusive :Bool,
                              startVm :Bool, target :Target)
      -> (outcome :Common.Outcome, session :ContainerSessionInfo, created :Bool);
  containerSessionList @13 (target :Target, all :Bool)
      -> (outcome :Common.Outcome, sessions :List(ContainerSessionInfo));
  containerSessionShow @14 (name :Text, target :Target)
      -> (outcome :Common.Outcome, session :ContainerSessionInfo);
  containerSessionTerminate @15 (name :Text, target :Target) -> (outcome :Common.Outcome);
  # Runs argv in the session VM's root namespace (starting the VM if needed) with the given fds;
  # the raw wait status, or with `detach` 0 once it started. Dropping the call kills the program
  # (not a detached one).
  containerSessionExec @16 (name :Text, argv :List(Text), env :List(Text), stdin :Common.Fd,
                            stdout :Common.Fd, stderr :Common.Fd, detach :Bool, target :Target)
      -> (outcome :Common.Outcome, waitStatus :Int32);
  # Root only: stops the session's VM as its idle timer would; wasIdle when it had none.
  containerSessionIdle @17 (name :Text, target :Target) -> (outcome :Common.Outcome, wasIdle :Bool);

  # Images and containers of a container session (`session`), each starting its VM when needed.
  # Results are JSON text: the objects plugins get (../shared/spec/plugin-api.md, "The JSON handed
  # to hooks"), arrays of them for lists.
  # load: `archive` is a docker-archive the client opened; the result lists {Id, Tag} loaded.
  containerImageLoad @18 (session :Text, archive :Common.Fd, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  containerImageList @19 (session :Text, target :Target) -> (outcome :Common.Outcome, json :Text);
  containerImageInspect @20 (session :Text, reference :Text, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  # Removes the tag `reference` names, and the image with its last tag (or when named by id);
  # the result lists {Untagged} and {Deleted} steps.
  containerImageRemove @21 (session :Text, reference :Text, force :Bool, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  # Runs a container; unless `detach`, returns when its process ended, with its wait status,
  # stdio attached to the given fds (absent with `detach`: its output goes to its log). With
  # `terminal` (not with `detach`), the container's process gets a pseudo-terminal of its own as
  # its console instead of the fds, relayed to the client as `run`'s terminal is.
  containerRun @22 (session :Text, spec :ContainerSpec, stdin :Common.Fd, stdout :Common.Fd,
                    stderr :Common.Fd, target :Target, terminal :TerminalRequest)
      -> (outcome :Common.Outcome, id :Text, waitStatus :Int32);
  containerList @23 (session :Text, all :Bool, target :Target) -> (outcome :Common.Outcome, json :Text);
  containerInspect @24 (session :Text, container :Text, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  # Sends `signal` to the container's process; with `timeoutS` above 0 (stop), waits that long
  # for it to end, then kills it. kill (timeoutS 0) waits only for SIGKILL.
  containerStop @25 (session :Text, container :Text, signal :Int32, timeoutS :UInt32, target :Target)
      -> (outcome :Common.Outcome);
  containerRemove @26 (session :Text, container :Text, force :Bool, target :Target)
      -> (outcome :Common.Outcome);
  # Another reference to an image; fires no hook. The result is {Id, Tag}.
  containerImageTag @27 (session :Text, source :Text, reference :Text, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  # From and to a registry; `insecure` (plain HTTP) is refused unless the registry is on the
  # session's loopback. pull's result is load's.
  containerImagePull @28 (session :Text, reference :Text, insecure :Bool, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  containerImagePush @29 (session :Text, reference :Text, insecure :Bool, target :Target)
      -> (outcome :Common.Outcome);
  # A program in a running container, with the given fds (or, with `terminal`, a pseudo-terminal
  # of its own, as containerRun's); its wait status.
  containerExec @30 (session :Text, container :Text, command :List(Text), stdin :Common.Fd,
                     stdout :Common.Fd, stderr :Common.Fd, target :Target, terminal :TerminalRequest)
      -> (outcome :Common.Outcome, waitStatus :Int32);
  # What a detached container wrote, copied to `stdout`; with `follow`, then what it writes until
  # its process ends (or the call is dropped).
  containerLogs @31 (session :Text, container :Text, stdout :Common.Fd, target :Target, follow :Bool)
      -> (outcome :Common.Outcome);
  # Starts a created container, or again an exited one (its files as it left them), detached (its
  # output goes to its log). `volumes`: its volumes' folders opened again by the client, as
  # inspect's Mounts name them, for a container whose volumes are no longer mounted (an exited
  # one, or one created in a VM that has stopped since).
  containerStart @32 (session :Text, container :Text, target :Target, volumes :List(Volume))
      -> (outcome :Common.Outcome);
  # A tar of a root filesystem (plain, gzip, xz or zstd; a regular file the client opened) made a
  # one-layer image named `reference`; the result is load's.
  containerImageImport @33 (session :Text, archive :Common.Fd, reference :Text, target :Target)
      -> (outcome :Common.Outcome, json :Text);
  # Root only: adopts `directory` (absolute, canonical, root's and writable by root alone) as the
  # root filesystem of a distribution of root's, in place: nothing is copied.
  registerInPlace @34 (name :Text, directory :Text, package :Text) -> (outcome :Common.Outcome, distro :DistroInfo);
}

struct ContainerSpec {
  image @0 :Text;
  name @1 :Text;              # empty: made from the id
  command @2 :List(Text);     # empty: the image's
  env @3 :List(Text);         # KEY=VALUE, after the image's
  networkNone @4 :Bool;       # a network namespace of its own; else the session VM's
  detach @5 :Bool;
  remove @6 :Bool;            # removed once its process ended (not with detach)
  volumes @7 :List(Volume);   # host folders bound into the container
  createOnly @8 :Bool;        # create it (with detach): `containerStart` starts it later
}

struct Volume {
  folder @0 :Common.Fd;       # opened by the client for reading, with its rights
  hostPath @1 :Text;          # as the user named it (for inspect)
  containerPath @2 :Text;     # absolute
  readOnly @3 :Bool;
}

struct ContainerSessionInfo {
  sessionId @0 :UInt32;
  name @1 :Text;
  uid @2 :UInt32;
  userName @3 :Text;
  applicationPid @4 :Int32;
  storage @5 :Text;         # empty: a tmpfs that dies with the session
  memoryMb @6 :UInt64;      # 0: the admin's VM memory limit
  cpuMillis @7 :UInt32;     # thousandths of a CPU; 0: not limited
  hostNetwork @8 :Bool;
  idleTimeoutS @9 :UInt32;
  vmState @10 :Text;        # "idle", "starting", "running", "stopping"
  vmInitPid @11 :Int32;     # host pid of the VM's init; 0 without a VM
  network @12 :Text;        # "none", "nat" or "host"
}

struct ContainerSessionSettings {
  storage @0 :Common.Fd;    # the folder, opened by the client for reading; absent: a tmpfs
  storagePath @1 :Text;     # its absolute path, as the user named it
  memoryMb @2 :UInt64;
  cpuMillis @3 :UInt32;
  hostNetwork @4 :Bool;     # the old spelling of network = "host"
  idleTimeoutS @5 :UInt32 = 30;
  network @6 :Text;         # "none", "nat" or "host"; empty: hostNetwork says
}

struct TerminalRequest {
  client @0 :TerminalClient;
  rows @1 :UInt16;
  columns @2 :UInt16;
}

interface TerminalClient {
  # The master end of the program's pseudo-terminal, and the program; called once.
  attach @0 (master :Common.Fd, program :RunningProgram) -> ();
}

interface RunningProgram {
  # Sends the program (the session leader of its terminal) SIGHUP, SIGINT, SIGQUIT, SIGTERM,
  # SIGUSR1 or SIGUSR2, as the client received it; fails once the run has ended.
  signal @0 (signal :Int32) -> (outcome :Common.Outcome);
}

interface ArchiveProducer {
  result @0 () -> (outcome :Common.Outcome);
}

interface Bootstrap {
  # The first call on every connection: checks the protocol version.
  hello @0 (major :UInt32, minor :UInt32)
      -> (outcome :Common.Outcome, control :Control, serviceVersion :Text);
}
