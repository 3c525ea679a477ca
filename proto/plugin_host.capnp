# The contract between bulkheadd and one bulkhead-pluginhost: the service drives the plugin's
# hooks (PluginHost) and the plugin calls the service back (PluginHostCallback). Reached only over
# the socketpair the service created when it spawned the host.
@0xd0100a8253d46f41;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bh::proto");
using Common = import "common.capnp";

# Versioning: a host refuses an initialize() whose major version differs from its own, and the
# service refuses a host answering with another major. Minor versions only add fields/methods.
const pluginHostMajor :UInt32 = 2;
const pluginHostMinor :UInt32 = 3;

struct Version {
  major @0 :UInt32;
  minor @1 :UInt32;
  revision @2 :UInt32;
}

struct SessionInfo {
  sessionId @0 :UInt32;
  uid @1 :UInt32;
  gid @2 :UInt32;
  userName @3 :Text;
}

# Nullable text fields of the C API are absent pointers here (never set), not empty strings.
struct DistributionInfo {
  id @0 :Data;              # 16 bytes
  name @1 :Text;
  pidNamespace @2 :UInt64;  # 0 for an offline distribution
  package @3 :Text;
  initPid @4 :UInt32;       # 0 for an offline distribution
  flavor @5 :Text;
  version @6 :Text;
}

struct ContainerSessionInfo {
  sessionId @0 :UInt32;
  displayName @1 :Text;
  applicationPid @2 :Int32;
  uid @3 :UInt32;
  gid @4 :UInt32;
  userName @5 :Text;
}

struct HookResult {
  code @0 :Int32;           # what the hook returned; 0 or a negative errno/BH_E_* code
  message @1 :Text;         # set only when a failing veto hook called plugin_error
}

interface PluginHost {
  # The first call. Loads the plugin (dlopen, entry point) on the host's hook thread from
  # `plugin`: a memfd the service filled with the file's bytes, sealed against any change and
  # verified (ownership, sha256 pin, Ed25519 signature) before sending it (2.0; in 1.x the host
  # verified a path itself, and linked libcrypto for it). The host refuses an unsealed fd.
  # pluginPath only names the plugin (dladdr, messages).
  # hooks: bit i set when hook i of bh_plugin_hooks_v1 is non-NULL.
  initialize @0 (major :UInt32, minor :UInt32, pluginPath :Text, pluginName :Text,
                 serviceVersion :Version, callback :PluginHostCallback, plugin :Common.Fd)
      -> (outcome :Common.Outcome, major :UInt32, minor :UInt32, hooks :UInt32, hookLane :Bool);
  # hookLane (2.3): the host's hook thread reads HookRequest messages from the hook lane (see
  # "Lanes" below) and answers each with a HookResult; the service then sends every hook there
  # and none through the methods below.

  # One method per hook; each resolves when the plugin's hook has returned. Calls are queued
  # to the hook thread and run one at a time, in arrival order.
  onVmStarted @1 (session :SessionInfo, customConfigFlags :UInt32) -> (result :HookResult);
  onVmStopping @2 (session :SessionInfo) -> (result :HookResult);
  onDistributionStarted @3 (session :SessionInfo, distribution :DistributionInfo)
      -> (result :HookResult);
  onDistributionStopping @4 (session :SessionInfo, distribution :DistributionInfo)
      -> (result :HookResult);
  onDistributionRegistered @5 (session :SessionInfo, distribution :DistributionInfo)
      -> (result :HookResult);
  onDistributionUnregistered @6 (session :SessionInfo, distribution :DistributionInfo)
      -> (result :HookResult);
  # 2.1: the container session hooks.
  onContainerSessionCreated @7 (session :ContainerSessionInfo) -> (result :HookResult);
  onContainerSessionStopping @8 (session :ContainerSessionInfo) -> (result :HookResult);
  onContainerVmStarted @9 (session :ContainerSessionInfo) -> (result :HookResult);
  onContainerVmStopping @10 (session :ContainerSessionInfo) -> (result :HookResult);
  # 2.2: the container and image hooks. text: the inspect JSON (onContainerStarted,
  # onImageCreated) or the container's or image's Id (onContainerStopping, onImageDeleted), at most
  # 1 MiB. The service never sends them to a host that answered initialize with minor < 2: it
  # clears their bits from that host's hook mask.
  onContainerStarted @11 (session :ContainerSessionInfo, text :Text) -> (result :HookResult);
  onContainerStopping @12 (session :ContainerSessionInfo, text :Text) -> (result :HookResult);
  onImageCreated @13 (session :ContainerSessionInfo, text :Text) -> (result :HookResult);
  onImageDeleted @14 (session :ContainerSessionInfo, text :Text) -> (result :HookResult);
}

# A process a plugin started in a container session's VM. Dropping the capability (process_release,
# or the host's death) kills the program if it still runs.
interface ContainerProcess {
  # code: 0 and exitCode, or -EBUSY while it runs.
  exitCode @0 () -> (code :Int32, exitCode :Int32);
}

interface PluginHostCallback {
  # The service functions of bh_plugin_api_v1. Every result is 0 or a negative code, exactly
  # what the plugin's call returns. hostPath (absolute) is opened by the service: a missing folder
  # is -ENOENT.
  mountFolder @0 (session :UInt32, hostPath :Text, vmPath :Text, readOnly :Bool, name :Text)
      -> (code :Int32);
  # distribution: 16 bytes, or absent for the VM's root namespace.
  executeBinary @1 (session :UInt32, distribution :Data, path :Text, argv :List(Text))
      -> (code :Int32, socket :Common.Fd);
  # 2.1: the container-session functions. A mountpoint may be unmounted only by the host that
  # mounted it.
  containerMountFolder @2 (session :UInt32, hostPath :Text, mountpoint :Text, readOnly :Bool)
      -> (code :Int32);
  containerUnmountFolder @3 (session :UInt32, mountpoint :Text) -> (code :Int32);
  # env empty: the default environment. On success: the process, the host's ends of its stdin,
  # stdout and stderr, and an fd that polls readable once it exited.
  containerCreateProcess @4 (session :UInt32, executable :Text, argv :List(Text), env :List(Text))
      -> (code :Int32, process :ContainerProcess, stdin :Common.Fd, stdout :Common.Fd,
          stderr :Common.Fd, exit :Common.Fd);
}

# --- Lanes (2.3) -------------------------------------------------------------------------------
# The hot path skips the RPC layer's call/return/finish and the host's event loop: every message
# is one of the structs below, one request and one reply, read and written by the thread that
# runs plugin code. This connection stays the control plane (initialize, crash detection, fd
# capabilities of container processes). The service creates both sockets when it spawns the host:
#
# - The hook lane (the host's fd 5, SOCK_STREAM, Cap'n Proto's standard stream framing): the
#   service writes HookRequest, the host's hook thread answers each with a HookResult, in order.
# - The call registry (the host's fd 6, SOCK_SEQPACKET): a plugin thread's first call makes a
#   SOCK_SEQPACKET socketpair, its call lane, and sends one end here (one byte, SCM_RIGHTS). On
#   its lane the thread sends one CallRequest per packet and blocks for the CallReply (with the
#   socket of executeBinary as SCM_RIGHTS), so threads never queue behind each other in the host.
#   A host may register at most 64 lanes; threads beyond those, and calls too large for a packet,
#   take the PluginHostCallback methods.

struct HookRequest {
  hook @0 :UInt32;                  # bit index in bh_plugin_hooks_v1 (the service's Hook enum)
  session @1 :SessionInfo;          # the vm_* and distribution_* hooks
  customConfigFlags @2 :UInt32;     # on_vm_started
  distribution @3 :DistributionInfo;
  container @4 :ContainerSessionInfo; # the container_* and image_* hooks
  text @5 :Text;                    # as the text of onContainerStarted and the like
}

struct CallRequest {
  session @0 :UInt32;
  union {
    mountFolder @1 :MountFolderArgs;
    executeBinary @2 :ExecuteArgs;
    containerMountFolder @3 :ContainerMountArgs;
    containerUnmountFolder @4 :Text;  # the mountpoint
  }
}

struct MountFolderArgs {
  hostPath @0 :Text;
  vmPath @1 :Text;
  readOnly @2 :Bool;
  name @3 :Text;
}

struct ExecuteArgs {
  distribution @0 :Data;            # 16 bytes, or absent for the VM's root namespace
  path @1 :Text;
  argv @2 :List(Text);
}

struct ContainerMountArgs {
  hostPath @0 :Text;
  mountpoint @1 :Text;
  readOnly @2 :Bool;
}

struct CallReply {
  code @0 :Int32;                   # what the plugin's call returns; executeBinary's socket
                                    # rides along (SCM_RIGHTS) exactly when code is 0
}
