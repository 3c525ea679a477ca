// The shared half of the benchmarks: event loop, plugin loading, floors and reporting.
#include "harness.h"

#include "plugin/plugin-runtime.h"

#include <cmath>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <sched.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

extern char** environ;

namespace bh::bench {

namespace {

    struct Loop {
        kj::AsyncIoContext io = kj::setupAsyncIo();
    };

    Loop& loop()
    {
        static Loop* instance = new Loop; // never destroyed: hosts and plugin threads outlive main
        return *instance;
    }

    // The benchmark's service side of the plugin API. Answering mount_folder at once with an
    // error code is the cheapest call that still makes the full trip (plugin thread, stub, host
    // loop, socket, service loop and back); the real service answers a call for a session it does
    // not know the same way.
    class BenchTarget final : public host::CallTarget {
    public:
        kj::Promise<int> mount_folder(uint32_t, std::string, std::string, bool, std::string) override
        {
            return mount_answer;
        }
        kj::Promise<Result<Fd>> execute(
            uint32_t, std::optional<Uuid>, std::string, std::vector<std::string>) override
        {
            return Result<Fd>(Error { -ENOSYS, "the benchmark serves no execute_binary" });
        }
        kj::Promise<int> container_mount(uint32_t, std::string, std::string, bool) override
        {
            return -ENOSYS;
        }
        kj::Promise<int> container_unmount(uint32_t, std::string) override { return -ENOSYS; }
        kj::Promise<Result<host::ProcessStart>> create_process(
            uint32_t, std::string, std::vector<std::string>, std::vector<std::string>) override
        {
            return Result<host::ProcessStart>(Error { -ENOSYS, "the benchmark serves no processes" });
        }
    };

    BenchTarget& target()
    {
        static BenchTarget* instance = new BenchTarget;
        return *instance;
    }

    service::PluginEnvironment& environment()
    {
        static service::PluginEnvironment* env = [] {
            Fd host(open(BENCH_PLUGIN_HOST, O_PATH | O_CLOEXEC));
            if (!host)
                die(std::string("cannot open ") + BENCH_PLUGIN_HOST + ": " + strerror(errno));
            auto& io = loop().io;
            return new service::PluginEnvironment { *io.lowLevelProvider, io.unixEventPort,
                io.provider->getTimer(), host.release(), BULKHEAD_VERSION, "/nonexistent", false };
        }();
        return *env;
    }

    service::PluginConfig plugin_config(const std::string& name, service::Isolation isolation)
    {
        service::PluginConfig config;
        config.name = name;
        config.path = BENCH_PLUGIN_PATH;
        config.isolation = isolation;
        return config;
    }

    // The stubs of in-process plugins reach the service side through the process-wide route.
    void route_in_process_stubs()
    {
        static bool routed = false;
        if (!routed)
            host::route_stubs_to(target(), host::parse_version(BULKHEAD_VERSION), environment().port);
        routed = true;
    }

    // fd 3 in the child must be the socket; posix_spawn's dup2 onto itself would keep CLOEXEC.
    Fd above_three(Fd fd)
    {
        if (fd.get() > 3)
            return fd;
        Fd moved(fcntl(fd.get(), F_DUPFD_CLOEXEC, 10));
        if (!moved)
            die(std::string("fcntl: ") + strerror(errno));
        return moved;
    }

    std::vector<std::function<void()>>& die_cleanups()
    {
        static auto* cleanups = new std::vector<std::function<void()>>; // die() may run at exit
        return *cleanups;
    }

    ChildProcess adopt(pid_t pid)
    {
        Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
        if (!pidfd)
            die(std::string("pidfd_open: ") + strerror(errno));
        return ChildProcess(pid, std::move(pidfd)); // pidfd_open fds are always CLOEXEC
    }

    // The CPUs in /sys/devices/system/cpu/online ("0-3,6"), as far as this process may run on
    // them: a CPU outside its affinity mask (a cpuset, taskset) cannot compete with it.
    std::vector<int> online_cpus()
    {
        cpu_set_t allowed;
        CPU_ZERO(&allowed);
        if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
            die(std::string("sched_getaffinity: ") + strerror(errno));
        std::vector<int> cpus;
        std::ifstream in("/sys/devices/system/cpu/online");
        std::string range;
        while (std::getline(in, range, ',')) {
            int first = 0, last = 0;
            int fields = sscanf(range.c_str(), "%d-%d", &first, &last);
            if (fields < 1)
                die("cannot read /sys/devices/system/cpu/online: '" + range + "'");
            if (fields == 1)
                last = first;
            for (int cpu = first; cpu <= last && cpu < CPU_SETSIZE; ++cpu)
                if (CPU_ISSET(cpu, &allowed))
                    cpus.push_back(cpu);
        }
        if (cpus.empty())
            die("no online CPU to load");
        return cpus;
    }

    // In the forked child: only async-signal-safe calls. Reports 'y' on `ready` once pinned to
    // `cpu` ('n' if it cannot be), then spins until killed.
    [[noreturn]] void spin_on(int cpu, pid_t parent, int ready)
    {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        bool pinned = prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() == parent
            && sched_setaffinity(0, sizeof(set), &set) == 0;
        char answer = pinned ? 'y' : 'n';
        (void)!write(ready, &answer, 1);
        if (!pinned)
            _exit(127);
        // Holds none of the benchmark's sockets: a host or helper waiting for EOF still gets it.
        syscall(SYS_close_range, 0U, ~0U, 0U);
        for (;;)
            asm volatile("" ::: "memory");
    }

} // namespace

BusyLoad::BusyLoad()
{
    std::vector<int> cpus = online_cpus();
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        die(std::string("pipe2: ") + strerror(errno));
    Fd read_end(ready[0]), write_end(ready[1]);
    pid_t parent = getpid();
    for (int cpu : cpus) {
        pid_t pid = fork();
        if (pid < 0)
            die(std::string("fork: ") + strerror(errno));
        if (pid == 0)
            spin_on(cpu, parent, write_end.get());
        m_children.push_back(pid);
    }
    write_end.reset();
    for (size_t i = 0; i < cpus.size(); ++i) {
        char answer = 0;
        ssize_t n;
        while ((n = read(read_end.get(), &answer, 1)) < 0 && errno == EINTR) { }
        if (n != 1 || answer != 'y')
            die("a busy loop could not be pinned to its CPU"); // the others die with us: pdeathsig
    }
}

BusyLoad::~BusyLoad()
{
    for (pid_t pid : m_children)
        kill(pid, SIGKILL);
    for (pid_t pid : m_children)
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) { }
}

void die(const std::string& why)
{
    std::cerr << "benchmark failed: " << why << std::endl;
    auto cleanups = std::exchange(die_cleanups(), {}); // a cleanup that dies runs none again
    for (auto cleanup = cleanups.rbegin(); cleanup != cleanups.rend(); ++cleanup)
        (*cleanup)();
    _exit(1); // hosts die with us (parent-death signal); nothing to unwind
}

void on_die(std::function<void()> cleanup)
{
    die_cleanups().push_back(std::move(cleanup));
}

kj::WaitScope& wait_scope()
{
    return loop().io.waitScope;
}

const char* isolation_name(Isolation isolation)
{
    return isolation == Isolation::process ? "process" : "in_process";
}

kj::Own<service::PluginLink> spawn_host(const std::string& name)
{
    auto link = service::start_plugin_host(
        environment(), plugin_config(name, service::Isolation::process), target());
    if (!link)
        die(link.error().message);
    return kj::mv(link.value());
}

kj::Own<service::PluginLink> load_plugin(Isolation isolation, const std::string& name)
{
    kj::Own<service::PluginLink> link;
    if (isolation == Isolation::process) {
        link = spawn_host(name);
    } else {
        route_in_process_stubs();
        link = service::load_in_process(plugin_config(name, service::Isolation::none), environment().port);
    }
    auto hooks = link->load({}).wait(wait_scope());
    if (!hooks)
        die("bench-plugin failed to load: " + hooks.error().message);
    return link;
}

void stop_host(kj::Own<service::PluginLink> link)
{
    if (link->pid() == 0)
        return; // in-process: the runtime stops its hook thread when destroyed
    link->terminate();
    (void)link->on_death().wait(wait_scope());
}

int run_order(service::PluginLink& link, const std::string& order)
{
    host::HookCall call;
    call.hook = host::Hook::distribution_registered;
    call.session = { 1, 0, 0, "root" };
    call.distro.name = order;
    return link.call(std::move(call)).wait(wait_scope()).code;
}

Helper spawn_helper(const char* mode)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        die(std::string("socketpair: ") + strerror(errno));
    Fd ours(fds[0]);
    Fd theirs = above_three(Fd(fds[1]));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
    char* argv[] = { const_cast<char*>(BENCH_FLOOR_HELPER), const_cast<char*>(mode), nullptr };
    pid_t pid = 0;
    int error = posix_spawn(&pid, BENCH_FLOOR_HELPER, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0)
        die(std::string("posix_spawn ") + BENCH_FLOOR_HELPER + ": " + strerror(error));
    return { adopt(pid), std::move(ours) };
}

void ping_pong(int socket)
{
    char buffer[64] = {};
    if (write(socket, buffer, sizeof(buffer)) != static_cast<ssize_t>(sizeof(buffer)))
        die(std::string("ping: ") + strerror(errno));
    for (size_t got = 0; got < sizeof(buffer);) {
        ssize_t n = read(socket, buffer + got, sizeof(buffer) - got);
        if (n <= 0)
            die("the echo helper went away");
        got += static_cast<size_t>(n);
    }
}

double pingpong_floor_ns(int64_t count)
{
    Helper echo = spawn_helper("echo");
    ping_pong(echo.socket.get()); // the helper is running and its pages are in
    auto start = Clock::now();
    for (int64_t i = 0; i < count; ++i)
        ping_pong(echo.socket.get());
    double ns = seconds_since(start) * 1e9 / static_cast<double>(count);
    echo.socket.reset(); // EOF: the helper exits
    (void)echo.process.wait();
    return ns;
}

void report(benchmark::State& state, const Report& r)
{
    if (!std::isfinite(r.value) || !std::isfinite(r.floor) || r.value <= 0 || r.floor <= 0)
        state.SkipWithError("a measurement was zero or not finite");
    double ratio = r.is_rate ? r.floor / r.value : r.value / r.floor;
    state.SetLabel(r.unit);
    state.counters["value"] = r.value;
    state.counters["floor"] = r.floor;
    state.counters["ratio"] = ratio;
    if (r.target_kind == TargetKind::none)
        return;
    const char* target = r.target_kind == TargetKind::max_ratio ? "target_max_ratio"
        : r.target_kind == TargetKind::max_value                ? "target_max_value"
                                                                : "target_min_value";
    state.counters[target] = r.target;
}

pid_t host_template_pid()
{
    return service::host_template_pid(environment());
}

} // namespace bh::bench
