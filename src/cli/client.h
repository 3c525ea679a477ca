// Client: the CLI's connection to bulkheadd (connect, version handshake, error printing).
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <proto/control.capnp.h>

namespace bh::cli {

// A failure as the CLI prints it: the message, then "Error code: <operation>/<symbol>".
struct Failure {
    Error error;
    std::string operation;
};

// Prints a failure on stderr and returns the CLI's exit code for it (1).
int report(const Failure& failure);

// A connected, version-checked control session. Lives on the CLI's one event loop.
class Client {
public:
    // Connects to <runtime_dir>/control.sock and says hello.
    static Result<kj::Own<Client>> connect(kj::AsyncIoContext& io, const std::string& runtime_dir);
    Client(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> stream);

    proto::Control::Client& control() { return m_control; }
    kj::WaitScope& wait_scope() { return m_io.waitScope; }
    kj::AsyncIoContext& io() { return m_io; }

private:
    Status hello();

    kj::AsyncIoContext& m_io;
    kj::Own<kj::AsyncCapabilityStream> m_stream;
    capnp::TwoPartyClient m_rpc;
    proto::Control::Client m_control = nullptr;
};

// Runs a request and converts a disconnect into a Failure naming `operation`.
template<typename Promise>
auto wait_for(Client& client, Promise&& promise, const std::string& operation)
    -> Result<decltype(kj::mv(promise).wait(client.wait_scope()))>
{
    try {
        return kj::mv(promise).wait(client.wait_scope());
    } catch (const kj::Exception& e) {
        return Error { -ECONNRESET,
            "lost the connection to the Bulkhead service during " + operation + ": "
                + e.getDescription().cStr() };
    }
}

} // namespace bh::cli
