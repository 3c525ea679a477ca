// File descriptors as Cap'n Proto capabilities (SCM_RIGHTS underneath), and fd-passing connections.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <proto/common.capnp.h>

namespace bh::ipc {

// How many fds one message may carry; every protocol of ours needs at most 3 (stdio).
constexpr unsigned max_fds_per_message = 4;

// Wraps an fd we own into a capability; the fd is closed when the last reference is dropped.
proto::Fd::Client wrap_fd(Fd fd);

// Extracts a private O_CLOEXEC duplicate of the fd carried by a capability received from a peer.
// A capability that carries no fd gives -EMFILE (or -ENFILE) when we have no fd left to receive
// it into (the kernel then drops it), and -EBADF otherwise (a misbehaving peer).
kj::Promise<Result<Fd>> unwrap_fd(proto::Fd::Client cap);

// How large a message from a peer may be, in words: 8 MiB, which every protocol of ours stays far
// below (the control protocol, which any local user speaks, takes a smaller limit).
constexpr uint64_t default_max_message_words = 1024 * 1024;

// The reader options for messages from a peer: at most `max_words` words, nesting 16 deep.
capnp::ReaderOptions receive_options(uint64_t max_words = default_max_message_words);

// One two-party RPC connection over a Unix socket with fd passing, owning the socket.
class Connection {
public:
    Connection(kj::LowLevelAsyncIoProvider& provider, Fd socket, capnp::rpc::twoparty::Side side,
        kj::Maybe<capnp::Capability::Client> bootstrap = nullptr);

    // The peer's bootstrap capability.
    capnp::Capability::Client bootstrap();
    // Resolves when the peer disconnects (EOF, reset, or a malformed message).
    kj::Promise<void> on_disconnect() { return m_network.onDisconnect(); }

private:
    kj::Own<kj::AsyncCapabilityStream> m_stream;
    capnp::TwoPartyVatNetwork m_network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> m_rpc;
};

// Fills an Outcome from an Error (code, message, operation).
void set_outcome(proto::Outcome::Builder out, const Error& error, kj::StringPtr operation);
// Reads an Outcome back into a Status.
Status to_status(proto::Outcome::Reader outcome);

// Runs `promise`; a Cap'n Proto exception (the peer disconnected, or broke the protocol) becomes
// an Error with `code` and a message naming `what`.
template<typename T>
kj::Promise<Result<T>> catch_disconnect(
    kj::Promise<Result<T>> promise, std::string what, int code = -ECONNRESET)
{
    return promise.catch_([what = std::move(what), code](kj::Exception&& e) -> Result<T> {
        return Error { code, what + ": " + std::string(e.getDescription().cStr()) };
    });
}

} // namespace bh::ipc
