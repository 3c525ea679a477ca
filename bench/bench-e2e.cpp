// End to end: `bulkhead run -- /bin/true` on a stopped VM (VM start + distribution start + the
// program), with 0 and with 8 isolated no-op plugins, against bubblewrap setting up comparable
// namespaces and running /bin/true (bench/README.md). Runs the real bulkheadd in a private
// temporary directory, as the integration tests do.
#include "harness.h"

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace bh::bench;
namespace fs = std::filesystem;

namespace {

constexpr int plugin_count = 8;
const std::string bin_dir = fs::path(BENCH_PLUGIN_HOST).parent_path();

struct Io {
    std::string out = "/dev/null"; // stdout and stderr
    bool append = false;
};

// posix_spawn + waitpid: the exit status, or -1 when it could not start.
int run_program(const std::vector<std::string>& argv, const std::vector<std::string>& env, const Io& io = {})
{
    std::vector<char*> args, envp;
    for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (auto& e : env)
        envp.push_back(const_cast<char*>(e.c_str()));
    for (char** e = environ; *e; ++e)
        envp.push_back(*e);
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    int flags = O_WRONLY | O_CREAT | (io.append ? O_APPEND : O_TRUNC);
    posix_spawn_file_actions_addopen(&actions, 1, io.out.c_str(), flags, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    int error = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) { }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A datagram socket bound where bulkheadd's sd_notify goes; waits (10 s at most) for READY=1.
class NotifySocket {
public:
    explicit NotifySocket(const std::string& path)
        : m_fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0))
    {
        sockaddr_un address { .sun_family = AF_UNIX };
        path.copy(address.sun_path, sizeof(address.sun_path) - 1);
        timeval deadline { 10, 0 };
        setsockopt(m_fd.get(), SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline));
        if (bind(m_fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0)
            die("cannot bind " + path + ": " + strerror(errno));
    }
    void wait_ready()
    {
        char message[4096];
        for (;;) {
            ssize_t n = recv(m_fd.get(), message, sizeof(message) - 1, 0);
            if (n < 0)
                die("bulkheadd did not report READY=1 within 10 s");
            message[n] = '\0';
            if (strstr(message, "READY=1"))
                return;
        }
    }

private:
    bh::Fd m_fd;
};

// One private bulkheadd with `plugins` copies of bench-plugin.so (one .so per plugin: the same
// file under two names is loaded once) and the busybox test distribution registered as "bench".
class Service {
public:
    Service(const fs::path& root, int plugins)
        : m_dir(root / ("plugins-" + std::to_string(plugins)))
    {
        for (auto sub : { "cfg/plugins.d", "state", "run", "home", "so" })
            fs::create_directories(m_dir / sub);
        for (int i = 0; i < plugins; ++i)
            install_plugin(i);
        NotifySocket notify(m_dir / "notify.sock");
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(
            &actions, 1, (m_dir / "daemon.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::string daemon = bin_dir + "/bulkheadd", cfg = m_dir / "cfg", state = m_dir / "state",
                    run = m_dir / "run", env = "NOTIFY_SOCKET=" + (m_dir / "notify.sock").string();
        char* argv[] = { daemon.data(), const_cast<char*>("--config-dir"), cfg.data(),
            const_cast<char*>("--state-dir"), state.data(), const_cast<char*>("--runtime-dir"), run.data(),
            nullptr };
        char* envp[] = { env.data(), const_cast<char*>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nullptr };
        int error = posix_spawn(&m_pid, daemon.c_str(), &actions, nullptr, argv, envp);
        posix_spawn_file_actions_destroy(&actions);
        if (error != 0)
            die("cannot start " + daemon + ": " + strerror(error));
        notify.wait_ready();
        cli({ "register", "bench", "--rootfs", (root / "rootfs").string() });
        cli({ "shutdown" });
    }
    ~Service()
    {
        kill(m_pid, SIGTERM);
        int status = 0;
        while (waitpid(m_pid, &status, 0) < 0 && errno == EINTR) { }
    }

    void cli(std::vector<std::string> args)
    {
        args.insert(args.begin(), bin_dir + "/bulkhead");
        int status = run_program(args,
            { "BULKHEAD_RUNTIME_DIR=" + (m_dir / "run").string(), "HOME=" + (m_dir / "home").string() },
            { (m_dir / "cli.log").string(), true });
        if (status != 0)
            die("bulkhead " + args[1] + " failed (" + std::to_string(status) + "); see "
                + (m_dir / "cli.log").string() + " and daemon.log");
    }

    // VM start + distribution start + /bin/true, from a stopped VM; the VM is stopped after, untimed.
    double run_true_seconds()
    {
        auto start = Clock::now();
        cli({ "run", "--", "/bin/true" });
        double seconds = seconds_since(start);
        cli({ "shutdown" });
        return seconds;
    }

    // Numbers with plugins that failed to load would be numbers without plugins.
    void expect_plugins_running(int plugins)
    {
        fs::path status = m_dir / "status.txt";
        int rc = run_program({ bin_dir + "/bulkhead", "status" },
            { "BULKHEAD_RUNTIME_DIR=" + (m_dir / "run").string(), "HOME=" + (m_dir / "home").string() },
            { status.string(), false });
        std::ifstream in(status);
        std::string line;
        int running = 0;
        while (std::getline(in, line))
            running += line.rfind("Plugin ", 0) == 0 && line.find(": running") != std::string::npos;
        if (rc != 0 || running != plugins)
            die(std::to_string(running) + " of " + std::to_string(plugins) + " plugins running; see "
                + status.string());
    }

private:
    void install_plugin(int i)
    {
        fs::path so = m_dir / "so" / ("bench-" + std::to_string(i) + ".so");
        fs::copy_file(BENCH_PLUGIN_PATH, so, fs::copy_options::overwrite_existing);
        fs::permissions(so, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
        std::ofstream toml(m_dir / "cfg/plugins.d" / ("bench-" + std::to_string(i) + ".toml"));
        toml << "path = \"" << so.string() << "\"\n";
    }

    fs::path m_dir;
    pid_t m_pid = 0;
};

// The temporary root: the test distribution and one service per plugin count, made on first use
// and removed at exit.
struct World {
    fs::path root;
    std::map<int, std::unique_ptr<Service>> services;

    World()
    {
        char dir[] = "/tmp/bulkhead-bench.XXXXXX";
        if (!mkdtemp(dir))
            die(std::string("mkdtemp: ") + strerror(errno));
        root = dir;
        fs::permissions(root,
            fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read
                | fs::perms::others_exec);
        if (run_program(
                { BENCH_SOURCE_DIR "/tests/rootfs/make-test-rootfs.sh", (root / "rootfs").string() }, {})
            != 0)
            die("make-test-rootfs.sh failed");
    }
    ~World()
    {
        services.clear(); // each service stops its VMs before the directories go
        std::error_code ignored;
        fs::remove_all(root, ignored);
    }
    Service& service(int plugins)
    {
        auto& slot = services[plugins];
        if (!slot) {
            slot = std::make_unique<Service>(root, plugins);
            (void)slot->run_true_seconds(); // activation (first VM only) and warm caches: untimed
            slot->expect_plugins_running(plugins);
        }
        return *slot;
    }
};

World& world()
{
    static World instance;
    return instance;
}

double bwrap_seconds()
{
    auto start = Clock::now();
    int status = run_program(
        { "bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "/bin/true" }, {});
    if (status != 0)
        die("bwrap failed with status " + std::to_string(status));
    return seconds_since(start);
}

// plugins:0 against bubblewrap (target 1.2x); plugins:8 against plugins:0 measured in the same
// run (target 1.1x: the plugins add at most 10%).
void BM_end_to_end(benchmark::State& state)
{
    int plugins = static_cast<int>(state.range(0));
    Service& service = world().service(plugins);
    double total = 0;
    for (auto _ : state) {
        double seconds = service.run_true_seconds();
        state.SetIterationTime(seconds);
        total += seconds;
    }
    double ms = total * 1e3 / static_cast<double>(state.iterations());
    int64_t samples = std::max<int64_t>(state.iterations(), 5);
    double floor = 0;
    if (plugins == 0) {
        for (int64_t i = 0; i < samples; ++i)
            floor += bwrap_seconds();
    } else {
        Service& bare = world().service(0);
        for (int64_t i = 0; i < samples; ++i)
            floor += bare.run_true_seconds();
    }
    floor = floor * 1e3 / static_cast<double>(samples);
    report(state, { "ms/run", ms, floor, false, TargetKind::max_ratio, plugins == 0 ? 1.2 : 1.1 });
}

} // namespace

BENCHMARK(BM_end_to_end)
    ->ArgName("plugins")
    ->Arg(0)
    ->Arg(plugin_count)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
