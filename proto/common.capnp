# Types shared by every Bulkhead IPC contract.
@0xeddce01fa6ee726b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bh::proto");

# A file descriptor travelling as a capability: the sending side's server implements getFd(),
# and Cap'n Proto moves the fd with SCM_RIGHTS. The receiver gets its own duplicate.
interface Fd {}

# The outcome of an operation: code 0 is success; otherwise a negative errno or a BH_E_* code
# from plugin_api.h, a sentence saying what failed, on what, and why, and the operation path
# printed in the "Error code:" line (for example "Bulkhead/Service/RegisterDistribution").
struct Outcome {
  code @0 :Int32;
  message @1 :Text;
  operation @2 :Text;
}
