// Call lanes: each plugin thread's own channel to the service (proto/plugin_host.capnp, "Lanes").
//
// In bulkhead-pluginhost, a plugin thread that calls mount_folder, execute_binary* or the
// container mount functions sends its request on its own SOCK_SEQPACKET socket and blocks there
// for the reply: no event loop of the host in between, and no queue shared with other threads.
// The service serves every lane on its loop. In bulkheadd (isolation = "none") lanes are never
// enabled and every call takes the stub route.
#pragma once

#include "base/fd.h"

#include <capnp/message.h>
#include <optional>

namespace bh::host {

// How many lanes one host may register; threads beyond these take the stub route. The service
// holds a host to the same limit.
inline constexpr unsigned max_call_lanes = 64;

// Enables lanes for this process. `registry`: the SOCK_SEQPACKET socket on which the service
// takes each new lane's other end. Call once, before any plugin code runs.
void enable_call_lanes(Fd registry);
bool call_lanes_enabled();

struct LaneAnswer {
    int code = 0; // 0 or a negative code, as the plugin's call returns it
    Fd fd; // execute_binary's socket, with code 0
};

// Sends `request` (a proto::CallRequest) on the calling thread's lane, made at its first call, and
// blocks for the answer: -ESHUTDOWN once the service closed the lane. nullopt when this call
// must take the stub route instead: lanes are not enabled, this thread got none (the limit), or
// the request is too large for one packet.
std::optional<LaneAnswer> call_on_lane(capnp::MessageBuilder& request);

// What the lanes order, told to ThreadSanitizer, which cannot see through a socket: every
// message a host's thread sends reaches the service's one loop, and every answer or hook it
// reads was written by that loop after everything it had read before. So a thread's send
// happens before what the service does next, as with the mutex of the stub route these lanes
// replace. No-ops unless built with -fsanitize=thread.
void lane_sent();
void lane_received();

} // namespace bh::host
