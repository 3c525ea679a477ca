// Host activation: from spawning bulkhead-pluginhost to the plugin's entry point returned and its
// hooks known, against posix_spawn of a program that writes one byte back (bench/README.md).
#include "harness.h"

#include <unistd.h>

using namespace bh::bench;

namespace {

using Links = std::vector<kj::Own<bh::service::PluginLink>>;

void expect_loaded(bh::Result<uint32_t> hooks)
{
    if (!hooks)
        die("bench-plugin failed to load: " + hooks.error().message);
}

// One after another, in configuration order: how PluginManager activated plugins until it
// overlapped them (kept as the reference for what overlapping gains).
Links activate_in_turn(int count)
{
    Links links;
    for (int i = 0; i < count; ++i) {
        links.push_back(spawn_host("bench-" + std::to_string(i)));
        expect_loaded(links.back()->load({}).wait(wait_scope()));
    }
    return links;
}

// Every host spawned, then all initialized at once: close to how PluginManager activates now
// (it sends each host's initialize right after spawning it, then waits for all).
Links activate_together(int count)
{
    Links links;
    for (int i = 0; i < count; ++i)
        links.push_back(spawn_host("bench-" + std::to_string(i)));
    kj::Vector<kj::Promise<void>> loads;
    for (auto& link : links)
        loads.add(link->load({}).then([](bh::Result<uint32_t> hooks) { expect_loaded(std::move(hooks)); }));
    kj::joinPromises(loads.releaseAsArray()).wait(wait_scope());
    return links;
}

// All killed first, then waited for together: their cgroups drain in parallel.
void stop_all(Links links)
{
    kj::Vector<kj::Promise<void>> deaths;
    for (auto& link : links) {
        link->terminate();
        deaths.add(link->on_death().ignoreResult());
    }
    kj::joinPromises(deaths.releaseAsArray()).wait(wait_scope());
}

// Seconds for one activation of `count` plugins; the hosts are stopped afterwards, untimed.
template<typename Activate> double time_activation(Activate&& activate, int count)
{
    auto start = Clock::now();
    Links links = activate(count);
    double seconds = seconds_since(start);
    stop_all(kj::mv(links));
    return seconds;
}

// Spawn to the one byte received; the helper is reaped afterwards, untimed.
double spawn_floor_seconds()
{
    auto start = Clock::now();
    Helper helper = spawn_helper("byte");
    char byte = 0;
    if (read(helper.socket.get(), &byte, 1) != 1)
        die("the byte helper wrote nothing");
    double seconds = seconds_since(start);
    (void)helper.process.wait();
    return seconds;
}

template<typename Measure> double mean_ms(Measure&& measure, int64_t count)
{
    double total = 0;
    for (int64_t i = 0; i < count; ++i)
        total += measure();
    return total * 1e3 / static_cast<double>(count);
}

// plugins:1 against the spawn floor (target 1.2x); plugins:32 against one activation measured
// in the same run (target 3x).
template<typename Activate> void run(benchmark::State& state, Activate&& activate)
{
    int count = static_cast<int>(state.range(0));
    double total = 0;
    for (auto _ : state) {
        double seconds = time_activation(activate, count);
        state.SetIterationTime(seconds);
        total += seconds;
    }
    double ms = total * 1e3 / static_cast<double>(state.iterations());
    int64_t samples = std::max<int64_t>(state.iterations(), 5);
    if (count == 1) {
        report(state,
            { "ms/activation", ms, mean_ms(spawn_floor_seconds, samples), false, TargetKind::max_ratio,
                1.2 });
        return;
    }
    auto one = [&] { return time_activation(activate, 1); };
    report(state, { "ms/activation", ms, mean_ms(one, samples), false, TargetKind::max_ratio, 3 });
}

void BM_host_activation(benchmark::State& state)
{
    run(state, activate_in_turn);
}

void BM_host_activation_together(benchmark::State& state)
{
    run(state, activate_together);
}

} // namespace

BENCHMARK(BM_host_activation)
    ->ArgName("plugins")
    ->Arg(1)
    ->Arg(32)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_host_activation_together)
    ->ArgName("plugins")
    ->Arg(32)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
