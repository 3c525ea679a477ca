// End to end: `bulkhead run -- /bin/true` on a stopped VM (VM start + distribution start + the
// program), with 0 and with 8 isolated no-op plugins, against bubblewrap setting up comparable
// namespaces and running /bin/true (bench/README.md). Runs the real bulkheadd in a private
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

// plugins:0 against bubblewrap (target 1.2x); plugins:8 against plugins:0 measured in the same
// run (target 1.1x: the plugins add at most 10%).
void BM_end_to_end(benchmark::State& state)
{
    int plugins = static_cast<int>(state.range(0));
    PrivateService& measured = service(plugins);
    double total = 0;
    for (auto _ : state) {
        double seconds = run_true_seconds(measured);
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
        PrivateService& bare = service(0);
        for (int64_t i = 0; i < samples; ++i)
            floor += run_true_seconds(bare);
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
