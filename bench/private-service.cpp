// The private bulkheadd of bench-e2e and bench-exec.
#include "private-service.h"

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace bh::bench {

namespace {

    const std::string bin_dir = fs::path(BENCH_PLUGIN_HOST).parent_path();

    int wait_status(pid_t pid)
    {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) { }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

    std::vector<char*> pointers(const std::vector<std::string>& strings)
    {
        std::vector<char*> out;
        for (auto& s : strings)
            out.push_back(const_cast<char*>(s.c_str()));
        return out;
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
        Fd m_fd;
    };

    // In the forked child: only async-signal-safe calls until execve.
    [[noreturn]] void exec_daemon(pid_t parent, const char* log, char** argv, char** envp)
    {
        // Dies with the benchmark however it ends (die(), a crash, ^C): a leftover service would
        // keep its VMs and plugin hosts, and its cgroups, for good.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(127);
        execve(argv[0], argv, envp);
        _exit(127);
    }

} // namespace

int run_program(const std::vector<std::string>& argv, const std::vector<std::string>& env, const Io& io)
{
    std::vector<char*> args = pointers(argv), envp = pointers(env);
    args.push_back(nullptr);
    for (char** e = environ; *e; ++e)
        envp.push_back(*e);
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    int flags = O_WRONLY | O_CREAT | (io.append ? O_APPEND : O_TRUNC);
    posix_spawn_file_actions_addopen(&actions, 1, io.out.c_str(), flags, 0644);
    if (io.err.empty())
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    else
        posix_spawn_file_actions_addopen(&actions, 2, io.err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid = 0;
    int error = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    return error != 0 ? -1 : wait_status(pid);
}

PrivateService::PrivateService(const fs::path& root, const std::string& name, const ServiceSetup& setup)
    : m_dir(root / name)
{
    for (auto sub : { "cfg/plugins.d", "state", "run", "home", "so" })
        fs::create_directories(m_dir / sub);
    write_config(setup);
    for (int i = 0; i < setup.plugins; ++i)
        install_plugin(i, setup.in_process);
    spawn_daemon();
    cli({ "register", "bench", "--rootfs", (root / "rootfs").string() });
    cli({ "shutdown" });
}

PrivateService::~PrivateService()
{
    if (m_pid > 0) {
        kill(m_pid, SIGTERM); // stops its VMs and hosts the normal way
        (void)wait_status(m_pid);
    }
}

void PrivateService::kill_now()
{
    if (m_pid > 0) {
        kill(m_pid, SIGKILL); // its VMs and hosts follow: parent-death signals, host guardians
        (void)wait_status(m_pid);
    }
    m_pid = 0;
}

void PrivateService::spawn_daemon()
{
    NotifySocket notify(m_dir / "notify.sock");
    std::vector<std::string> argv { bin_dir + "/bulkheadd", "--config-dir", m_dir / "cfg", "--state-dir",
        m_dir / "state", "--runtime-dir", m_dir / "run" };
    std::vector<std::string> env { "NOTIFY_SOCKET=" + (m_dir / "notify.sock").string(),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin" };
    std::vector<char*> args = pointers(argv), envp = pointers(env);
    args.push_back(nullptr);
    envp.push_back(nullptr);
    std::string log = m_dir / "daemon.log";
    pid_t parent = getpid();
    m_pid = fork();
    if (m_pid < 0)
        die(std::string("fork: ") + strerror(errno));
    if (m_pid == 0)
        exec_daemon(parent, log.c_str(), args.data(), envp.data());
    notify.wait_ready();
}

int PrivateService::run_cli(std::vector<std::string> args, const Io& io)
{
    args.insert(args.begin(), bin_dir + "/bulkhead");
    return run_program(args,
        { "BULKHEAD_RUNTIME_DIR=" + (m_dir / "run").string(), "HOME=" + (m_dir / "home").string() }, io);
}

void PrivateService::cli(std::vector<std::string> args)
{
    std::string command = args.empty() ? "" : args[0];
    int status = run_cli(std::move(args), { (m_dir / "cli.log").string(), true });
    if (status != 0)
        die("bulkhead " + command + " failed (" + std::to_string(status) + "); see "
            + (m_dir / "cli.log").string() + " and daemon.log");
}

std::string PrivateService::cli_output(std::vector<std::string> args)
{
    std::string command = args.empty() ? "" : args[0];
    fs::path out = m_dir / "cli.out";
    int status = run_cli(std::move(args), { out.string(), false, (m_dir / "cli.log").string() });
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (status != 0)
        die("bulkhead " + command + " failed (" + std::to_string(status) + "); see "
            + (m_dir / "cli.log").string() + " and daemon.log");
    return text;
}

// `bulkhead list --json` gives the distribution's init as the VM sees it (init_pid) and the inode
// of its PID namespace (pid_namespace), not its host pid. The init is the one process in that
// namespace with pid 1 there; its NSpid line (host pid, ..., pid in the VM, 1) also names
// init_pid just before the 1, which the check below requires as well.
pid_t PrivateService::distribution_init(const std::string& distro)
{
    auto list = nlohmann::json::parse(cli_output({ "list", "--json" }), nullptr, false);
    if (!list.is_array())
        die("bulkhead list --json did not print a JSON array");
    uint64_t pid_namespace = 0, init_in_vm = 0;
    for (const auto& d : list)
        if (d.value("name", "") == distro && d.value("running", false)) {
            pid_namespace = d.value("pid_namespace", uint64_t(0));
            init_in_vm = d.value("init_pid", uint64_t(0));
        }
    if (pid_namespace == 0 || init_in_vm == 0)
        die("bulkhead list --json shows no running distribution '" + distro + "'");
    std::vector<pid_t> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        struct stat ns { };
        if (stat((entry.path() / "ns/pid").c_str(), &ns) < 0 || ns.st_ino != pid_namespace)
            continue; // gone meanwhile, or in another namespace
        std::ifstream status(entry.path() / "status");
        std::string line;
        while (std::getline(status, line))
            if (line.rfind("NSpid:", 0) == 0) {
                std::istringstream fields(line.substr(6));
                std::vector<uint64_t> pids;
                for (uint64_t pid; fields >> pid;)
                    pids.push_back(pid);
                if (pids.size() >= 3 && pids.back() == 1 && pids[pids.size() - 2] == init_in_vm)
                    found.push_back(static_cast<pid_t>(pids.front()));
            }
    }
    if (found.size() != 1)
        die(std::to_string(found.size()) + " processes look like the init of '" + distro + "' (pid "
            + std::to_string(init_in_vm) + " in the VM, PID namespace " + std::to_string(pid_namespace)
            + "); expected one");
    return found.front();
}

void PrivateService::expect_plugins_running(int plugins)
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

fs::path PrivateService::plugin_path(int index) const
{
    return m_dir / "so" / ("bench-" + std::to_string(index) + ".so");
}

// network = "none": the floors (bwrap --unshare-all, nsenter) set up no network either; what nat
// adds to a VM's start (pasta) is the network's cost, not isolation's (bench/README.md).
void PrivateService::write_config(const ServiceSetup& setup)
{
    std::ofstream toml(m_dir / "cfg/bulkhead.toml");
    toml << "[vm]\nnetwork = \"none\"\n";
    if (setup.vm_stays_up)
        toml << "idle_timeout_s = 0\n";
}

// One .so per plugin: the same file under two names is loaded once.
void PrivateService::install_plugin(int index, bool in_process)
{
    fs::path so = plugin_path(index);
    fs::copy_file(BENCH_PLUGIN_PATH, so, fs::copy_options::overwrite_existing);
    fs::permissions(so, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
    std::ofstream toml(m_dir / "cfg/plugins.d" / ("bench-" + std::to_string(index) + ".toml"));
    toml << "path = \"" << so.string() << "\"\n";
    if (in_process)
        toml << "isolation = \"none\"\n";
}

BenchRoot& BenchRoot::get()
{
    static BenchRoot instance;
    return instance;
}

BenchRoot::BenchRoot()
{
    char dir[] = "/tmp/bulkhead-bench.XXXXXX";
    if (!mkdtemp(dir))
        die(std::string("mkdtemp: ") + strerror(errno));
    m_root = dir;
    // die() skips destructors, so the services are killed here (their parent-death signal would
    // also do it, a moment later); the directory stays, for the logs die()'s message points to.
    on_die([this]() {
        for (auto& [name, service] : m_services)
            if (service) // null while its constructor runs: its parent-death signal covers that
                service->kill_now();
    });
    fs::permissions(m_root,
        fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read
            | fs::perms::others_exec);
    if (run_program(
            { BENCH_SOURCE_DIR "/tests/rootfs/make-test-rootfs.sh", (m_root / "rootfs").string() }, {})
        != 0)
        die("make-test-rootfs.sh failed");
}

BenchRoot::~BenchRoot()
{
    m_services.clear(); // each service stops its VMs before the directories go
    remove_all();
}

void BenchRoot::remove_all()
{
    std::error_code ignored;
    fs::remove_all(m_root, ignored);
}

PrivateService& BenchRoot::service(const std::string& name, const ServiceSetup& setup, bool* created)
{
    auto& slot = m_services[name];
    if (created)
        *created = !slot;
    if (!slot)
        slot = std::make_unique<PrivateService>(m_root, name, setup);
    return *slot;
}

} // namespace bh::bench
