// The host's end of the call lanes: one socket per plugin thread, registered on first use.
#include "plugin/call-lanes.h"

#include "ipc/fd-cap.h"
#include "ipc/packet.h"

#include <atomic>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <proto/plugin_host.capnp.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
#endif

namespace bh::host {

namespace {

    // Written once by enable_call_lanes before any plugin thread exists; read-only after.
    int g_registry = -1;
    std::atomic<unsigned> g_lanes { 0 };

    // What one thread owns. Its destructor runs when the thread exits: the service sees the lane
    // close and forgets it, and the slot is free for another thread.
    struct ThreadLane {
        Fd socket;
        pid_t owner = 0; // the process that made it: a forked child never shares its parent's
        bool refused = false; // no lane for this thread: it takes the route
        bool closed = false; // the service closed the lane: every call is -ESHUTDOWN
        ~ThreadLane()
        {
            if (socket)
                g_lanes.fetch_sub(1, std::memory_order_relaxed);
        }
    };
    thread_local ThreadLane t_lane;

    // This thread's lane socket, made and registered on first use; -1: take the route.
    int lane_socket()
    {
        ThreadLane& lane = t_lane;
        if (lane.socket)
            return lane.owner == getpid() ? lane.socket.get() : -1;
        if (lane.refused)
            return -1;
        if (g_lanes.fetch_add(1, std::memory_order_relaxed) >= max_call_lanes) {
            g_lanes.fetch_sub(1, std::memory_order_relaxed);
            lane.refused = true;
            return -1;
        }
        int ends[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) < 0) {
            g_lanes.fetch_sub(1, std::memory_order_relaxed);
            lane.refused = true;
            return -1;
        }
        Fd ours(ends[0]), theirs(ends[1]);
        const kj::byte hello = 1;
        int passed = theirs.get();
        if (!ipc::send_packet(g_registry, kj::arrayPtr(&hello, 1), kj::arrayPtr(&passed, 1))) {
            g_lanes.fetch_sub(1, std::memory_order_relaxed);
            lane.refused = true;
            return -1;
        }
        lane.socket = std::move(ours);
        lane.owner = getpid();
        return lane.socket.get();
    }

} // namespace

#if defined(__SANITIZE_THREAD__)
namespace {
    char g_service_order; // only its address matters: the service's loop, as TSan sees it
}
void lane_sent()
{
    __tsan_release(&g_service_order);
}
void lane_received()
{
    __tsan_acquire(&g_service_order);
}
#else
void lane_sent()
{
}
void lane_received()
{
}
#endif

void enable_call_lanes(Fd registry)
{
    g_registry = registry.release();
}

bool call_lanes_enabled()
{
    return g_registry >= 0;
}

std::optional<LaneAnswer> call_on_lane(capnp::MessageBuilder& request)
{
    if (!call_lanes_enabled())
        return std::nullopt;
    if (t_lane.closed)
        return LaneAnswer { -ESHUTDOWN };
    int socket = lane_socket();
    if (socket < 0)
        return std::nullopt;
    lane_sent();
    if (Status sent = ipc::send_message(socket, request); !sent) {
        if (sent.error().code == -EMSGSIZE)
            return std::nullopt; // too large for a packet: the route carries any size
        t_lane.closed = true;
        return LaneAnswer { -ESHUTDOWN };
    }
    capnp::word buffer[32];
    auto packet = ipc::receive_packet(socket, kj::arrayPtr(buffer, 32).asBytes(), 1);
    lane_received();
    if (!packet || packet->size == 0) {
        t_lane.closed = true; // the service closed it (it is going away, or so is this host)
        return LaneAnswer { -ESHUTDOWN };
    }
    if (packet->size % sizeof(capnp::word) != 0)
        return LaneAnswer { -EPROTO };
    LaneAnswer answer;
    if (kj::runCatchingExceptions([&]() {
            capnp::FlatArrayMessageReader reader(
                kj::arrayPtr(buffer, packet->size / sizeof(capnp::word)), ipc::receive_options(64));
            int code = reader.getRoot<proto::CallReply>().getCode();
            answer.code = code <= 0 ? code : -EPROTO;
        })
        != nullptr) {
        return LaneAnswer { -EPROTO };
    }
    if (answer.code == 0 && !packet->fds.empty())
        answer.fd = std::move(packet->fds.front());
    return answer;
}

} // namespace bh::host
