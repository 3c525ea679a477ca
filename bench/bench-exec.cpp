// execute_binary: a plugin runs /bin/true in its running VM, gets the fd back and reads it until
// EOF, against the service doing the same on the host with socketpair + posix_spawn, measured in
// the same run (bench/README.md). Runs the real bulkheadd in a private temporary directory.
#include "private-service.h"

#include <fstream>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace bh::bench;

namespace {

// execute_binary calls per hook: registering and unregistering the distribution that carries the
// order costs tens of milliseconds, untimed, so each hook does enough calls to be worth it.
constexpr int64_t calls_per_hook = 50;

fs::path empty_rootfs()
{
    fs::path dir = BenchRoot::get().path() / "empty";
    fs::create_directories(dir);
    return dir;
}

// One bulkheadd per isolation, with one bench-plugin and a VM that stays up once started.
PrivateService& exec_service(Isolation isolation)
{
    bool created = false;
    ServiceSetup setup {
        .plugins = 1, .in_process = isolation == Isolation::in_process, .vm_stays_up = true
    };
    auto& instance
        = BenchRoot::get().service(std::string("exec-") + isolation_name(isolation), setup, &created);
    if (created) {
        instance.cli({ "run", "--", "/bin/true" }); // plugin activation and the VM, untimed
        instance.expect_plugins_running(1);
    }
    return instance;
}

struct ExecResult {
    int64_t calls = 0;
    double ns = 0;
    int code = 1;
};

ExecResult read_result(const fs::path& file)
{
    ExecResult result;
    std::ifstream in(file);
    if (!(in >> result.calls >> result.ns >> result.code))
        die("bench-plugin left no exec result in " + file.string());
    return result;
}

// Registers a distribution named as an exec order (bench-plugin.c), so the plugin's
// on_distribution_registered makes `calls` execute_binary calls; returns the seconds the plugin
// measured around them. The registration itself is not timed.
double exec_order_seconds(PrivateService& service, int64_t calls)
{
    static int serial = 0;
    std::string name = "exec-" + std::to_string(calls) + "-" + std::to_string(++serial);
    fs::path file = service.plugin_path(0).string() + ".exec";
    fs::remove(file);
    service.cli({ "register", name, "--rootfs", empty_rootfs().string() });
    service.cli({ "unregister", name });
    ExecResult result = read_result(file);
    if (result.code != 0 || result.calls != calls)
        die("execute_binary failed after " + std::to_string(result.calls) + " calls with "
            + bh_result_name(result.code));
    return result.ns / 1e9;
}

void read_until_eof(int fd)
{
    char buffer[64];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0 || (n < 0 && errno == EINTR)) { }
    if (n < 0)
        die(std::string("read: ") + strerror(errno));
}

// The floor, done here as the service would do it for itself: /bin/true with one end of a
// socketpair as its stdout, our copy of that end closed, the other read until EOF, the child reaped.
void spawn_true_locally()
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        die(std::string("socketpair: ") + strerror(errno));
    bh::Fd ours(fds[0]), theirs(fds[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, theirs.get(), 1); // dup2 clears CLOEXEC on fd 1
    char* argv[] = { const_cast<char*>("true"), nullptr };
    pid_t pid = 0;
    int error = posix_spawn(&pid, "/bin/true", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0)
        die(std::string("posix_spawn /bin/true: ") + strerror(error));
    theirs.reset();
    read_until_eof(ours.get());
    ours.reset();
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) { }
}

double floor_us(int64_t calls)
{
    spawn_true_locally(); // warm, as the benchmark was
    auto start = Clock::now();
    for (int64_t i = 0; i < calls; ++i)
        spawn_true_locally();
    return seconds_since(start) * 1e6 / static_cast<double>(calls);
}

void BM_execute_binary(benchmark::State& state, Isolation isolation)
{
    PrivateService& service = exec_service(isolation);
    (void)exec_order_seconds(service, calls_per_hook); // warm: pages in, caches, the first exec
    double total = 0;
    for (auto _ : state) {
        double seconds = exec_order_seconds(service, calls_per_hook);
        state.SetIterationTime(seconds);
        total += seconds;
    }
    int64_t calls = state.iterations() * calls_per_hook;
    double us = total * 1e6 / static_cast<double>(calls);
    report(state, { "µs/call", us, floor_us(calls), false, TargetKind::max_ratio, 1.1 });
}

} // namespace

BENCHMARK_CAPTURE(BM_execute_binary, process, Isolation::process)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_execute_binary, in_process, Isolation::in_process)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
