// Packets over SOCK_SEQPACKET, with SCM_RIGHTS.
#include "ipc/packet.h"

#include <capnp/serialize.h>
#include <cstring>
#include <sys/socket.h>

namespace bh::ipc {

namespace {

    constexpr unsigned max_fds_in_packet = 8; // the host template takes 6 (host-template.h)

} // namespace

Status send_packet(int socket, kj::ArrayPtr<const kj::byte> bytes, kj::ArrayPtr<const int> fds, int flags)
{
    if (fds.size() > max_fds_in_packet)
        return Error { -EINVAL, "too many fds for one packet" };
    iovec iov { const_cast<kj::byte*>(bytes.begin()), bytes.size() };
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_in_packet)] {};
    msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fds.size() > 0) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* header = CMSG_FIRSTHDR(&msg);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(header), fds.begin(), sizeof(int) * fds.size());
    }
    for (;;) {
        ssize_t sent = sendmsg(socket, &msg, MSG_NOSIGNAL | flags);
        if (sent == static_cast<ssize_t>(bytes.size()))
            return {};
        if (sent >= 0)
            return Error { -EMSGSIZE, "a packet was cut short" };
        if (errno != EINTR)
            return Error::from_errno(errno, "cannot send a packet");
    }
}

Status send_message(int socket, capnp::MessageBuilder& message, kj::ArrayPtr<const int> fds, int flags)
{
    kj::Array<capnp::word> flat = capnp::messageToFlatArray(message);
    return send_packet(socket, flat.asBytes(), fds, flags);
}

Result<Packet> receive_packet(int socket, kj::ArrayPtr<kj::byte> buffer, unsigned max_fds, int flags)
{
    iovec iov { buffer.begin(), buffer.size() };
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_in_packet)] {};
    msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t got;
    do
        got = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags);
    while (got < 0 && errno == EINTR);
    if (got < 0)
        return Error::from_errno(errno, "cannot receive a packet");
    Packet packet;
    packet.size = static_cast<size_t>(got);
    for (cmsghdr* header = CMSG_FIRSTHDR(&msg); header; header = CMSG_NXTHDR(&msg, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
            packet.fds.emplace_back(fd); // owned at once, so an error below closes them
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return Error { -EMSGSIZE,
            "a packet larger than " + std::to_string(buffer.size()) + " bytes, or with too many fds" };
    if (packet.fds.size() > max_fds)
        return Error { -EMSGSIZE,
            "a packet with " + std::to_string(packet.fds.size()) + " fds, where at most "
                + std::to_string(max_fds) + " may come" };
    return packet;
}

kj::Array<capnp::word> packet_buffer(size_t bytes)
{
    return kj::heapArray<capnp::word>((bytes + sizeof(capnp::word) - 1) / sizeof(capnp::word));
}

} // namespace bh::ipc
