// End to end: `bulkhead run -- /bin/true` on a stopped VM (VM start + distribution start + the
// program), with 0 and with 8 isolated no-op plugins, against bubblewrap setting up comparable
// namespaces and running /bin/true; and in a distribution already running, against nsenter into
// it (bench/README.md). Runs the real bulkheadd in a private
// temporary directory, as the integration tests do.
#include "private-service.h"

using namespace bh::bench;

namespace {

constexpr int plugin_count = 8;

// VM start + distribution start + /bin/true, from a stopped VM; the VM is stopped after, untimed.
double run_true_seconds(PrivateService& service)
{
    auto start = Clock::now();
    service.cli({ "run", "--", "/bin/true" });
    double seconds = seconds_since(start);
    service.cli({ "shutdown" });
    return seconds;
}

// One service per plugin count, with `plugins` isolated bench-plugin copies.
PrivateService& service(int plugins)
{
    bool created = false;
    auto& instance
        = BenchRoot::get().service("plugins-" + std::to_string(plugins), { .plugins = plugins }, &created);
    if (created) {
        (void)run_true_seconds(instance); // activation (first VM only) and warm caches: untimed
        instance.expect_plugins_running(plugins);
    }
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

// Times each iteration with `run` (seconds, Google Benchmark's manual time); the mean in ms.
template<typename Run> double timed_ms(benchmark::State& state, Run&& run)
{
    double total = 0;
    for (auto _ : state) {
        double seconds = run();
        state.SetIterationTime(seconds);
        total += seconds;
    }
    return total * 1e3 / static_cast<double>(state.iterations());
}

// The mean in ms of `floor` run as many times as the benchmark ran, at least 5.
template<typename Floor> double floor_ms(benchmark::State& state, Floor&& floor)
{
    int64_t samples = std::max<int64_t>(state.iterations(), 5);
    double total = 0;
    for (int64_t i = 0; i < samples; ++i)
        total += floor();
    return total * 1e3 / static_cast<double>(samples);
}

// plugins:0 against bubblewrap (target 1.2x); plugins:8 against plugins:0 measured in the same
// run (target 1.1x: the plugins add at most 10%).
void BM_end_to_end(benchmark::State& state)
{
    int plugins = static_cast<int>(state.range(0));
    PrivateService& measured = service(plugins);
    double ms = timed_ms(state, [&]() { return run_true_seconds(measured); });
    double floor = plugins == 0 ? floor_ms(state, bwrap_seconds)
                                : floor_ms(state, [&]() { return run_true_seconds(service(0)); });
    report(state, { "ms/run", ms, floor, false, TargetKind::max_ratio, plugins == 0 ? 1.2 : 1.1 });
}

// The distribution BM_run_warm runs in, started once (VM and distribution) and kept running.
PrivateService& warm_service()
{
    bool created = false;
    auto& instance = BenchRoot::get().service("warm", { .vm_stays_up = true }, &created);
    if (created)
        instance.cli({ "run", "-d", "bench", "--", "/bin/true" }); // starts both: untimed
    return instance;
}

double run_warm_seconds(PrivateService& service)
{
    auto start = Clock::now();
    service.cli({ "run", "-d", "bench", "--", "/bin/true" });
    return seconds_since(start);
}

double nsenter_seconds(pid_t init)
{
    auto start = Clock::now();
    int status = run_program({ "nsenter", "--all", "--target", std::to_string(init), "/bin/true" }, {});
    if (status != 0)
        die("nsenter into the distribution's init failed with status " + std::to_string(status));
    return seconds_since(start);
}

// `bulkhead run -d bench -- /bin/true` in a running distribution against nsenter running
// /bin/true in all the namespaces of that distribution's init (target 1.2x).
void BM_run_warm(benchmark::State& state)
{
    PrivateService& service = warm_service();
    pid_t init = service.distribution_init("bench");
    (void)run_warm_seconds(service); // warm: pages in, for both
    (void)nsenter_seconds(init);
    double ms = timed_ms(state, [&]() { return run_warm_seconds(service); });
    double floor = floor_ms(state, [&]() { return nsenter_seconds(init); });
    // Warm means warm: a distribution (or VM) that stopped and started again in between would
    // have been measured starting.
    if (service.distribution_init("bench") != init)
        die("the distribution's init changed during BM_run_warm: it was restarted");
    report(state, { "ms/run", ms, floor, false, TargetKind::max_ratio, 1.2 });
}

} // namespace

BENCHMARK(BM_end_to_end)
    ->ArgName("plugins")
    ->Arg(0)
    ->Arg(plugin_count)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_run_warm)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
