// hostile-client: what a local user could send to bulkheadd without the bulkhead CLI, for the
// integration tests of tests/integration/hostile-user.sh. Every subcommand is an attack the
// service must survive; each prints what happened and exits 0 when the service held.
//
//   hostile-client RUNTIME-DIR mount-opath HOST-DIR VM-PATH   vmMount with an O_PATH fd of HOST-DIR
//   hostile-client RUNTIME-DIR register-dir DIR NAME          register NAME from a directory fd of DIR
//   hostile-client RUNTIME-DIR oversized                      a header announcing a 32 MiB message
//   hostile-client RUNTIME-DIR connections N                  N connections, each says hello; prints
//                                                             how many were served, holds them until
//                                                             stdin closes
//   hostile-client RUNTIME-DIR calls N                        N `run -- sleep 4245` pipelined on one
//                                                             connection; prints how many were refused
#include "cli/client.h"
#include "ipc/fd-cap.h"

#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <kj/async-io.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace {

using bh::Fd;

Fd raw_connect(const std::string& runtime_dir)
{
    std::string path = runtime_dir + "/control.sock";
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address { .sun_family = AF_UNIX };
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) {
        std::perror(path.c_str());
        std::exit(2);
    }
    return fd;
}

// Sends one call carrying an fd of DIR opened with `flags`; `fill` sets the request's fields. Prints
// `done` if the service accepted it, else reports its error as the CLI would.
template<typename Method, typename Fill>
int send_with_dir_fd(kj::AsyncIoContext& io, const std::string& runtime_dir, Method method, const char* dir,
    int flags, Fill fill, const char* done)
{
    auto client = bh::cli::Client::connect(io, runtime_dir);
    if (!client)
        return bh::cli::report({ client.take_error(), "HostileClient/Connect" });
    Fd fd(::open(dir, flags | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        std::perror(dir);
        return 2;
    }
    auto request = (client.value()->control().*method)(nullptr);
    fill(request, bh::ipc::wrap_fd(std::move(fd)));
    auto reply = request.send().wait(io.waitScope);
    bh::Status status = bh::ipc::to_status(reply.getOutcome());
    if (!status)
        return bh::cli::report({ status.take_error(), reply.getOutcome().getOperation().cStr() });
    std::cout << done << std::endl;
    return 0;
}

int mount_opath(kj::AsyncIoContext& io, const std::string& runtime_dir, const char* dir, const char* vm_path)
{
    using Control = bh::proto::Control::Client;
    auto fill = [vm_path](auto& request, auto fd) {
        request.setHostDir(kj::mv(fd));
        request.setVmPath(vm_path);
    };
    return send_with_dir_fd(io, runtime_dir, &Control::vmMountRequest, dir, O_PATH, fill, "mounted");
}

// Registers NAME with a directory fd as its "archive": the process that unpacks it is chrooted
// into the new tree, and a directory fd from outside would be its way out.
int register_dir(kj::AsyncIoContext& io, const std::string& runtime_dir, const char* dir, const char* name)
{
    using Control = bh::proto::Control::Client;
    auto fill = [name](auto& request, auto fd) {
        request.setName(name);
        request.setArchive(kj::mv(fd));
    };
    return send_with_dir_fd(io, runtime_dir, &Control::registerRequest, dir, O_RDONLY, fill, "registered");
}

// Cap'n Proto's stream framing: (segment count - 1), then each segment's size in words.
int oversized(const std::string& runtime_dir)
{
    Fd fd = raw_connect(runtime_dir);
    uint32_t header[2] = { 0, 4u * 1024 * 1024 }; // one segment of 4 Mi words: 32 MiB
    std::vector<char> body(64 * 1024, 0);
    if (::write(fd.get(), header, sizeof(header)) != sizeof(header))
        return std::perror("write"), 2;
    (void)!::write(fd.get(), body.data(), body.size());
    // The service may answer with an abort message before it hangs up: read past it.
    timeval ten_seconds { 10, 0 };
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &ten_seconds, sizeof(ten_seconds));
    char reply[4096];
    for (;;) {
        ssize_t n = ::recv(fd.get(), reply, sizeof(reply), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            std::cout << "closed" << std::endl;
            return 0;
        }
        if (n < 0 && errno != EINTR)
            break;
    }
    std::cout << "held: the service is still waiting for the rest of a 32 MiB message" << std::endl;
    return 1;
}

int connections(kj::AsyncIoContext& io, const std::string& runtime_dir, int count)
{
    std::vector<kj::Own<bh::cli::Client>> held;
    int served = 0;
    for (int i = 0; i < count; ++i) {
        auto client = bh::cli::Client::connect(io, runtime_dir);
        if (!client)
            continue;
        ++served;
        held.push_back(kj::mv(client.value()));
    }
    std::cout << served << std::endl;
    char c;
    while (::read(0, &c, 1) > 0) { }
    return 0;
}

// N `run -- sleep 4245` calls pipelined on one connection, none waited for: prints how many the
// service refused within 2 s (the rest are in progress), then hangs up, which must end them all.
int calls(kj::AsyncIoContext& io, const std::string& runtime_dir, int count)
{
    auto client = bh::cli::Client::connect(io, runtime_dir);
    if (!client)
        return bh::cli::report({ client.take_error(), "HostileClient/Connect" });
    int refused = 0;
    kj::Vector<kj::Promise<void>> pending;
    for (int i = 0; i < count; ++i) {
        auto request = client.value()->control().runRequest();
        auto argv = request.initArgv(2);
        argv.set(0, "sleep");
        argv.set(1, "4245");
        request.setStdin(bh::ipc::wrap_fd(Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC))));
        request.setStdout(bh::ipc::wrap_fd(Fd(::open("/dev/null", O_WRONLY | O_CLOEXEC))));
        request.setStderr(bh::ipc::wrap_fd(Fd(::open("/dev/null", O_WRONLY | O_CLOEXEC))));
        pending.add(request.send()
                        .then([](auto) {},
                            [&refused](kj::Exception&& e) {
                                if (std::strstr(e.getDescription().cStr(), "calls in progress"))
                                    ++refused;
                            })
                        .eagerlyEvaluate(nullptr));
    }
    io.provider->getTimer().afterDelay(2 * kj::SECONDS).wait(io.waitScope);
    std::cout << refused << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3) {
        std::cerr << "usage: hostile-client RUNTIME-DIR (mount-opath DIR VM-PATH | register-dir DIR NAME | "
                     "oversized | connections N | calls N)\n";
        return 2;
    }
    std::string runtime_dir = argv[1], what = argv[2];
    auto io = kj::setupAsyncIo();
    if (what == "mount-opath" && argc == 5)
        return mount_opath(io, runtime_dir, argv[3], argv[4]);
    if (what == "register-dir" && argc == 5)
        return register_dir(io, runtime_dir, argv[3], argv[4]);
    if (what == "oversized")
        return oversized(runtime_dir);
    if (what == "connections" && argc == 4)
        return connections(io, runtime_dir, std::atoi(argv[3]));
    if (what == "calls" && argc == 4)
        return calls(io, runtime_dir, std::atoi(argv[3]));
    std::cerr << "hostile-client: unknown or incomplete command '" << what << "'\n";
    return 2;
}
