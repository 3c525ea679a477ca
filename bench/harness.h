// What every benchmark shares: one KJ event loop on the benchmark thread, real plugin hosts and
// in-process plugins loaded the way the service loads them, the floors, and how results are
// reported (value, floor and ratio counters; bench/README.md explains them).
#pragma once

#include "base/child-process.h"
#include "base/fd.h"
#include "service/plugin-link.h"

#include <benchmark/benchmark.h>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace bh::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start)
{
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// The event loop of the benchmark thread, created on first use. Google Benchmark runs every
// benchmark on its main thread, which also lives as long as the process: the hosts' parent-death
// signal is tied to the thread that spawned them.
kj::WaitScope& wait_scope();

// The code the benchmark's service side answers every mount_folder with (see BenchTarget).
constexpr int mount_answer = BH_E_SESSION_NOT_FOUND;

// A loaded plugin, isolated in a host process or in-process.
enum class Isolation { process, in_process };
const char* isolation_name(Isolation isolation);

// Spawns (or loads in-process) bench-plugin.so and runs its entry point. Aborts the benchmark
// run with a message on failure: numbers measured without a working plugin mean nothing.
kj::Own<service::PluginLink> load_plugin(Isolation isolation, const std::string& name);
// Spawns a host for bench-plugin.so without initializing it: the first half of activation.
kj::Own<service::PluginLink> spawn_host(const std::string& name);
// Kills a host and waits until it and its guardian are gone and its cgroup is removed.
void stop_host(kj::Own<service::PluginLink> link);

// Runs on_distribution_registered with `order` as the distribution's name (see bench-plugin.c)
// and returns the hook's code.
int run_order(service::PluginLink& link, const std::string& order);

// A floor-helper process started with posix_spawn, holding the other end of a socketpair as fd 3.
struct Helper {
    ChildProcess process;
    Fd socket;
};
Helper spawn_helper(const char* mode);
// One 64-byte write and the 64-byte answer over `socket`.
void ping_pong(int socket);
// Nanoseconds per 64-byte round trip to a fresh echo helper, over `count` round trips.
double pingpong_floor_ns(int64_t count);

// The pid of the host template the hosts of spawn_host are forked from; 0 before the first.
pid_t host_template_pid();

// A competing load for the "busy" benchmarks: one child process per online CPU, pinned to that
// CPU and spinning, from construction until destruction (which kills and reaps them). The
// constructor returns once every child runs on its CPU. The children die with the thread that
// made them (PR_SET_PDEATHSIG), so none outlives a benchmark that dies.
class BusyLoad {
public:
    BusyLoad();
    ~BusyLoad();
    BusyLoad(const BusyLoad&) = delete;
    BusyLoad& operator=(const BusyLoad&) = delete;

    int cpus() const { return static_cast<int>(m_children.size()); }

private:
    std::vector<pid_t> m_children;
};

// Sets the counters every result carries: value (in `unit`, also the label), floor, ratio =
// value / floor (or floor / value for rates, so above 1 always means "costs more than the
// floor"), and the target, if any, as target_max_ratio, target_max_value or target_min_value.
enum class TargetKind { none, max_ratio, max_value, min_value };
struct Report {
    const char* unit;
    double value;
    double floor;
    bool is_rate = false;
    TargetKind target_kind = TargetKind::max_ratio;
    double target = 0;
};
void report(benchmark::State& state, const Report& report);

// Aborts the benchmark binary: a benchmark that cannot run must not print a number. Runs the
// cleanups given to on_die (newest first), then _exit: no destructor runs.
[[noreturn]] void die(const std::string& why);
// What die() must still do, such as ending processes that would outlive the benchmark.
void on_die(std::function<void()> cleanup);

} // namespace bh::bench
