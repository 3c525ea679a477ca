// Packets: one SOCK_SEQPACKET message and the fds it carries (SCM_RIGHTS), and one Cap'n Proto
// message per packet. The lanes between bulkheadd and a plugin host's threads are made of them
// (proto/plugin_host.capnp, "Lanes").
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <capnp/message.h>
#include <kj/array.h>
#include <vector>

namespace bh::ipc {

// Sends `bytes` as one packet with `fds` attached. Blocks or not as the socket does (or never,
// with MSG_DONTWAIT in `flags`). Errors:
// -EAGAIN (a non-blocking socket is full), -EMSGSIZE (larger than the socket can carry),
// -EPIPE or -ECONNRESET (the peer is gone), as errno says.
Status send_packet(
    int socket, kj::ArrayPtr<const kj::byte> bytes, kj::ArrayPtr<const int> fds = nullptr, int flags = 0);
// One Cap'n Proto message as one packet (its flat form, no segment table framing beyond it).
Status send_message(
    int socket, capnp::MessageBuilder& message, kj::ArrayPtr<const int> fds = nullptr, int flags = 0);

struct Packet {
    size_t size = 0; // 0: the peer closed its end (we never send empty packets)
    std::vector<Fd> fds; // O_CLOEXEC
};

// Receives one packet into `buffer`, with at most `max_fds` fds. A packet longer than the buffer,
// or with more fds than allowed, is an error (-EMSGSIZE), and every fd it carried is closed.
// Blocks or not as the socket does (-EAGAIN); EINTR is retried. `flags`: MSG_DONTWAIT, say, for a
// socket whose peer holds its file description too and could clear O_NONBLOCK.
Result<Packet> receive_packet(int socket, kj::ArrayPtr<kj::byte> buffer, unsigned max_fds, int flags = 0);

// A word-aligned receive buffer of `bytes` bytes.
kj::Array<capnp::word> packet_buffer(size_t bytes);

} // namespace bh::ipc
