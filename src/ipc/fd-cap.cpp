// fd capabilities and fd-passing connections.
#include "ipc/fd-cap.h"

#include <fcntl.h>
#include <unistd.h>

namespace bh::ipc {

namespace {

    class FdServer final : public proto::Fd::Server {
    public:
        explicit FdServer(Fd fd)
            : m_fd(std::move(fd))
        {
        }
        kj::Maybe<int> getFd() override { return m_fd.get(); }

    private:
        Fd m_fd;
    };

    // Why a capability came without its fd. recvmsg drops the SCM_RIGHTS fds it cannot install
    // (the receiver is at RLIMIT_NOFILE) and only says so with MSG_CTRUNC, which kj does not
    // report: the capability then arrives empty. If we cannot open an fd now either, that is the
    // errno the caller gets, rather than blaming the peer.
    Error missing_fd()
    {
        int probe = ::open("/", O_PATH | O_CLOEXEC);
        if (probe < 0 && (errno == EMFILE || errno == ENFILE))
            return Error::from_errno(errno, "no file descriptor was left to receive one");
        if (probe >= 0)
            ::close(probe);
        return Error { -EBADF, "the peer sent a capability that carries no file descriptor" };
    }

} // namespace

capnp::ReaderOptions receive_options(uint64_t max_words)
{
    // Our messages are small; cap what a peer can make us traverse (in words). Cap'n Proto also
    // refuses, on its header alone, a message larger than this, before buffering any of it.
    capnp::ReaderOptions options;
    options.traversalLimitInWords = max_words;
    options.nestingLimit = 16;
    return options;
}

proto::Fd::Client wrap_fd(Fd fd)
{
    return kj::heap<FdServer>(std::move(fd));
}

kj::Promise<Result<Fd>> unwrap_fd(proto::Fd::Client cap)
{
    // The fd belongs to the capability: keep it alive until we have our own duplicate.
    auto fd_promise = cap.getFd();
    return fd_promise
        .then([](kj::Maybe<int> maybe_fd) -> Result<Fd> {
            KJ_IF_MAYBE (fd, maybe_fd) {
                int copy = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0)
                    return Error::from_errno(errno, "cannot duplicate a received fd");
                return Fd(copy);
            }
            return missing_fd();
        })
        .attach(kj::mv(cap));
}

Connection::Connection(kj::LowLevelAsyncIoProvider& provider, Fd socket, capnp::rpc::twoparty::Side side,
    kj::Maybe<capnp::Capability::Client> bootstrap)
    : m_stream(provider.wrapUnixSocketFd(socket.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP))
    , m_network(*m_stream, max_fds_per_message, side, receive_options())
    , m_rpc(capnp::makeRpcServer(m_network,
          kj::mv(bootstrap).orDefault(
              capnp::Capability::Client(KJ_EXCEPTION(UNIMPLEMENTED, "no bootstrap")))))
{
}

capnp::Capability::Client Connection::bootstrap()
{
    capnp::MallocMessageBuilder message(8);
    auto vat = message.getRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(m_network.getSide() == capnp::rpc::twoparty::Side::CLIENT
            ? capnp::rpc::twoparty::Side::SERVER
            : capnp::rpc::twoparty::Side::CLIENT);
    return m_rpc.bootstrap(vat);
}

void set_outcome(proto::Outcome::Builder out, const Error& error, kj::StringPtr operation)
{
    out.setCode(error.code);
    out.setMessage(error.message);
    out.setOperation(operation);
}

Status to_status(proto::Outcome::Reader outcome)
{
    if (outcome.getCode() == 0)
        return {};
    int code = outcome.getCode() < 0 ? outcome.getCode() : -EPROTO;
    return Error { code, outcome.getMessage().cStr() };
}

} // namespace bh::ipc
