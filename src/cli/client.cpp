// Client: connecting to the control socket and the version handshake.
#include "cli/client.h"

#include "ipc/fd-cap.h"

#include <bulkhead/plugin_api.h>
#include <iostream>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace bh::cli {

int report(const Failure& failure)
{
    std::cerr << failure.error.message << "\n"
              << "Error code: " << failure.operation << "/" << bh_result_name(failure.error.code)
              << std::endl;
    return 1;
}

Result<kj::Own<Client>> Client::connect(kj::AsyncIoContext& io, const std::string& runtime_dir)
{
    std::string path = runtime_dir + "/control.sock";
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address { .sun_family = AF_UNIX };
    if (path.size() >= sizeof(address.sun_path))
        return Error { -ENAMETOOLONG, "the control socket path '" + path + "' is too long" };
    std::copy(path.begin(), path.end(), address.sun_path);
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0)
        return Error::from_errno(
            errno, "cannot reach the Bulkhead service at " + path + " (is bulkheadd running?)");
    auto stream
        = io.lowLevelProvider->wrapUnixSocketFd(fd.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    auto client = kj::heap<Client>(io, kj::mv(stream));
    BH_TRY(client->hello());
    return kj::mv(client);
}

Client::Client(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> stream)
    : m_io(io)
    , m_stream(kj::mv(stream))
    , m_rpc(*m_stream, ipc::max_fds_per_message)
{
}

Status Client::hello()
{
    auto request = m_rpc.bootstrap().castAs<proto::Bootstrap>().helloRequest();
    request.setMajor(proto::CONTROL_MAJOR);
    request.setMinor(proto::CONTROL_MINOR);
    auto reply = wait_for(*this, request.send(), "the version check");
    if (!reply)
        return reply.take_error();
    BH_TRY(ipc::to_status(reply->getOutcome()));
    m_control = reply->getControl();
    return {};
}

} // namespace bh::cli
