// Marginal memory per idle host: what N loaded, idle plugin hosts (each with its guardian) cost
// the system, per host, against the same count of idle minimal processes (bench/README.md).
#include "harness.h"

#include <dirent.h>
#include <fstream>
#include <sstream>
#include <thread>

using namespace bh::bench;

namespace {

// Long enough for the hosts to finish starting up (their guardians forked, the loader done).
constexpr auto settle = std::chrono::milliseconds(300);

struct Memory {
    double pss_kib = 0; // proportional set size: shared pages divided among their users
    double private_kib = 0; // pages only this process maps
};

// From /proc/PID/smaps_rollup; zero for a process that is gone.
Memory memory_of(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    Memory memory;
    std::string key;
    double kib = 0;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        if (!(fields >> key >> kib))
            continue;
        if (key == "Pss:")
            memory.pss_kib += kib;
        else if (key == "Private_Clean:" || key == "Private_Dirty:")
            memory.private_kib += kib;
    }
    return memory;
}

// The children of `parent` (a host's guardian), from /proc/*/stat.
std::vector<pid_t> children_of(pid_t parent)
{
    std::vector<pid_t> children;
    DIR* proc = opendir("/proc");
    if (!proc)
        die("cannot read /proc");
    while (dirent* entry = readdir(proc)) {
        pid_t pid = atoi(entry->d_name);
        if (pid <= 0)
            continue;
        std::ifstream in(std::string("/proc/") + entry->d_name + "/stat");
        std::string stat;
        std::getline(in, stat);
        auto close = stat.rfind(')'); // the command name may hold spaces and parentheses
        int ppid = 0;
        char state = 0;
        if (close != std::string::npos && std::istringstream(stat.substr(close + 1)) >> state >> ppid
            && ppid == parent)
            children.push_back(pid);
    }
    closedir(proc);
    return children;
}

// A process and its children: a host and its guardian.
Memory family_memory(pid_t pid)
{
    Memory total = memory_of(pid);
    for (pid_t child : children_of(pid)) {
        Memory memory = memory_of(child);
        total.pss_kib += memory.pss_kib;
        total.private_kib += memory.private_kib;
    }
    return total;
}

// MemAvailable from /proc/meminfo: the kernel's own estimate, noisy on a shared machine.
double mem_available_kib()
{
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit) {
        if (key == "MemAvailable:")
            return kib;
    }
    die("no MemAvailable in /proc/meminfo");
}

// MiB of Pss per idle floor-helper, with `count` of them running.
double floor_mib(int count)
{
    std::vector<Helper> helpers;
    for (int i = 0; i < count; ++i)
        helpers.push_back(spawn_helper("idle"));
    std::this_thread::sleep_for(settle);
    double kib = 0;
    for (auto& helper : helpers)
        kib += memory_of(helper.process.pid()).pss_kib;
    for (auto& helper : helpers) {
        helper.socket.reset();
        (void)helper.process.wait();
    }
    return kib / 1024 / count;
}

void BM_host_memory(benchmark::State& state)
{
    int count = static_cast<int>(state.range(0));
    Memory total;
    double available_drop_kib = 0;
    for (auto _ : state) {
        double before = mem_available_kib();
        std::vector<kj::Own<bh::service::PluginLink>> links;
        for (int i = 0; i < count; ++i)
            links.push_back(load_plugin(Isolation::process, "bench-" + std::to_string(i)));
        std::this_thread::sleep_for(settle);
        available_drop_kib = before - mem_available_kib();
        total = {};
        for (auto& link : links) {
            Memory memory = family_memory(link->pid());
            total.pss_kib += memory.pss_kib;
            total.private_kib += memory.private_kib;
        }
        // The host template the hosts were forked from, shared by them: counted in full, so each
        // host carries its share of it (its children, the hosts, are the service's, not its own).
        if (pid_t host_template = host_template_pid(); host_template > 0) {
            Memory memory = memory_of(host_template);
            total.pss_kib += memory.pss_kib;
            total.private_kib += memory.private_kib;
        }
        for (auto& link : links)
            stop_host(kj::mv(link));
    }
    state.counters["private_mib"] = total.private_kib / 1024 / count;
    state.counters["memavailable_mib"] = available_drop_kib / 1024 / count;
    report(state,
        { "MiB/host (Pss)", total.pss_kib / 1024 / count, floor_mib(count), false, TargetKind::max_value,
            0.3 });
}

} // namespace

// One iteration each: the measurement is a snapshot, not a timing.
BENCHMARK(BM_host_memory)
    ->ArgName("hosts")
    ->Arg(1)
    ->Arg(8)
    ->Arg(32)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
