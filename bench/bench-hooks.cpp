// Hooks and callbacks: what one call across the isolation boundary costs, against a raw
// socketpair ping-pong between two processes measured in the same run (bench/README.md).
#include "harness.h"

#include <map>
#include <optional>
#include <thread>

using namespace bh::bench;

namespace {

// Calls per hook in the callback round-trip benchmark: the hook's own dispatch (about one round
// trip) is spread over them, so it adds about 0.1% to each.
constexpr int64_t callbacks_per_hook = 1000;
// Calls per hook in the throughput benchmark, shared among the threads (divisible by 1, 2, 4, 8).
constexpr int64_t throughput_calls = 8000;

// One loaded plugin per isolation for the whole run: loading is not what these measure, and an
// in-process plugin is never unloaded, so loading it again would only pile up copies.
bh::service::PluginLink& plugin(Isolation isolation)
{
    static std::map<Isolation, kj::Own<bh::service::PluginLink>> loaded;
    auto found = loaded.find(isolation);
    if (found == loaded.end())
        found = loaded
                    .emplace(
                        isolation, load_plugin(isolation, std::string("bench-") + isolation_name(isolation)))
                    .first;
    return *found->second;
}

void noop_hook(bh::service::PluginLink& link)
{
    bh::host::HookCall call;
    call.hook = bh::host::Hook::vm_stopping; // a no-op in bench-plugin, and the smallest message
    call.session = { 1, 0, 0, "root" };
    if (link.call(std::move(call)).wait(wait_scope()).code != 0)
        die("the no-op hook failed");
}

void expect_answer(int code, const std::string& order)
{
    if (code != mount_answer)
        die("hook '" + order + "' got " + bh_result_name(code) + " instead of every call answered");
}

// Busy: every online CPU also runs a pinned busy loop (BusyLoad), from before the warm-up until
// the floor is measured, so value and floor meet the same competition for the CPUs.
enum class Load { quiet, busy };

// The busy targets of issue 13: a round trip may cost at most 1.5x its floor under load.
double roundtrip_target(Load load)
{
    return load == Load::busy ? 1.5 : 1.2;
}

void BM_hook_roundtrip(benchmark::State& state, Isolation isolation, Load load)
{
    std::optional<BusyLoad> busy;
    if (load == Load::busy)
        busy.emplace();
    auto& link = plugin(isolation);
    for (int i = 0; i < 100; ++i)
        noop_hook(link); // warm: pages in, connection and hook thread running
    auto start = Clock::now();
    for (auto _ : state)
        noop_hook(link);
    double ns = seconds_since(start) * 1e9 / static_cast<double>(state.iterations());
    report(state,
        { "ns/round trip", ns, pingpong_floor_ns(state.iterations()), false, TargetKind::max_ratio,
            roundtrip_target(load) });
}

void BM_callback_roundtrip(benchmark::State& state, Isolation isolation, Load load)
{
    std::optional<BusyLoad> busy;
    if (load == Load::busy)
        busy.emplace();
    auto& link = plugin(isolation);
    std::string order = "calls:" + std::to_string(callbacks_per_hook);
    expect_answer(run_order(link, order), order); // warm
    auto start = Clock::now();
    for (auto _ : state)
        expect_answer(run_order(link, order), order);
    int64_t calls = state.iterations() * callbacks_per_hook;
    double ns = seconds_since(start) * 1e9 / static_cast<double>(calls);
    report(state,
        { "ns/round trip", ns, pingpong_floor_ns(calls), false, TargetKind::max_ratio,
            roundtrip_target(load) });
}

// `threads` threads, each ping-ponging `total / threads` times with its own echo helper: the most
// round trips per second that many threads get from plain sockets and processes.
double pingpong_rate(int threads, int64_t total)
{
    std::vector<Helper> helpers;
    for (int i = 0; i < threads; ++i)
        helpers.push_back(spawn_helper("echo"));
    auto start = Clock::now();
    std::vector<std::thread> workers;
    for (auto& helper : helpers)
        workers.emplace_back([&helper, count = total / threads]() {
            for (int64_t i = 0; i < count; ++i)
                ping_pong(helper.socket.get());
        });
    for (auto& worker : workers)
        worker.join();
    double rate = static_cast<double>(total) / seconds_since(start);
    for (auto& helper : helpers) {
        helper.socket.reset();
        (void)helper.process.wait();
    }
    return rate;
}

std::string throughput_order(int threads)
{
    return "threads:" + std::to_string(threads) + ":calls:" + std::to_string(throughput_calls);
}

// Calls per second through `link`, over `hooks` hooks that each make throughput_calls calls from
// `threads` threads.
double callback_rate(bh::service::PluginLink& link, int threads, int64_t hooks)
{
    std::string order = throughput_order(threads);
    auto start = Clock::now();
    for (int64_t i = 0; i < hooks; ++i)
        expect_answer(run_order(link, order), order);
    return static_cast<double>(hooks * throughput_calls) / seconds_since(start);
}

// Quiet: against as many threads ping-ponging with echo processes; the target, 100,000
// calls/s, is for 8 threads (fewer threads show how it scales).
// Busy, isolated: against the in-process rate under the same load, measured right after over as
// many hooks; the issue asks for at least 0.8 of it, a ratio (in-process / isolated) of at most
// 1.25. Busy, in-process: against the ping-pong threads under load, no target (read the value).
void BM_callback_throughput(benchmark::State& state, Isolation isolation, Load load)
{
    std::optional<BusyLoad> busy;
    if (load == Load::busy)
        busy.emplace();
    auto& link = plugin(isolation);
    int threads = static_cast<int>(state.range(0));
    std::string order = throughput_order(threads);
    bool against_in_process = load == Load::busy && isolation == Isolation::process;
    if (load == Load::busy) { // warm: under load, the first hook's thread start-ups weigh more
        expect_answer(run_order(link, order), order);
        if (against_in_process)
            expect_answer(run_order(plugin(Isolation::in_process), order), order);
    }
    auto start = Clock::now();
    for (auto _ : state)
        expect_answer(run_order(link, order), order);
    double rate = static_cast<double>(state.iterations() * throughput_calls) / seconds_since(start);
    if (against_in_process) {
        double in_process = callback_rate(plugin(Isolation::in_process), threads, state.iterations());
        report(state, { "calls/s", rate, in_process, true, TargetKind::max_ratio, 1.25 });
        return;
    }
    auto kind = threads == 8 && load == Load::quiet ? TargetKind::min_value : TargetKind::none;
    report(state, { "calls/s", rate, pingpong_rate(threads, throughput_calls), true, kind, 100000 });
}

using Measure = void (*)(benchmark::State&, Isolation, Load);

// BENCHMARK_CAPTURE would name them too, but only with one word after the function's name.
benchmark::internal::Benchmark* add(const char* function, Measure measure, Isolation isolation, Load load)
{
    std::string name
        = std::string(function) + "/" + isolation_name(isolation) + (load == Load::busy ? "/busy" : "");
    return benchmark::RegisterBenchmark(name.c_str(), [measure, isolation, load](benchmark::State& state) {
        measure(state, isolation, load);
    })->UseRealTime();
}

const bool registered = [] {
    for (auto load : { Load::quiet, Load::busy })
        for (auto isolation : { Isolation::process, Isolation::in_process })
            add("BM_hook_roundtrip", BM_hook_roundtrip, isolation, load);
    for (auto load : { Load::quiet, Load::busy })
        for (auto isolation : { Isolation::process, Isolation::in_process })
            add("BM_callback_roundtrip", BM_callback_roundtrip, isolation, load);
    add("BM_callback_throughput", BM_callback_throughput, Isolation::process, Load::quiet)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->Arg(4)
        ->Arg(8);
    add("BM_callback_throughput", BM_callback_throughput, Isolation::in_process, Load::quiet)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(8);
    // Busy at 8 threads only, where the target is: each busy benchmark costs seconds.
    for (auto isolation : { Isolation::process, Isolation::in_process })
        add("BM_callback_throughput", BM_callback_throughput, isolation, Load::busy)
            ->ArgName("threads")
            ->Arg(8);
    return true;
}();

} // namespace

BENCHMARK_MAIN();
