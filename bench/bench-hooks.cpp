// Hooks and callbacks: what one call across the isolation boundary costs, against a raw
// socketpair ping-pong between two processes measured in the same run (bench/README.md).
#include "harness.h"

#include <map>
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

void BM_hook_roundtrip(benchmark::State& state, Isolation isolation)
{
    auto& link = plugin(isolation);
    for (int i = 0; i < 100; ++i)
        noop_hook(link); // warm: pages in, connection and hook thread running
    auto start = Clock::now();
    for (auto _ : state)
        noop_hook(link);
    double ns = seconds_since(start) * 1e9 / static_cast<double>(state.iterations());
    report(state,
        { "ns/round trip", ns, pingpong_floor_ns(state.iterations()), false, TargetKind::max_ratio, 1.2 });
}

void BM_callback_roundtrip(benchmark::State& state, Isolation isolation)
{
    auto& link = plugin(isolation);
    std::string order = "calls:" + std::to_string(callbacks_per_hook);
    expect_answer(run_order(link, order), order); // warm
    auto start = Clock::now();
    for (auto _ : state)
        expect_answer(run_order(link, order), order);
    int64_t calls = state.iterations() * callbacks_per_hook;
    double ns = seconds_since(start) * 1e9 / static_cast<double>(calls);
    report(state, { "ns/round trip", ns, pingpong_floor_ns(calls), false, TargetKind::max_ratio, 1.2 });
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

void BM_callback_throughput(benchmark::State& state, Isolation isolation)
{
    auto& link = plugin(isolation);
    int threads = static_cast<int>(state.range(0));
    std::string order = "threads:" + std::to_string(threads) + ":calls:" + std::to_string(throughput_calls);
    auto start = Clock::now();
    for (auto _ : state)
        expect_answer(run_order(link, order), order);
    double rate = static_cast<double>(state.iterations() * throughput_calls) / seconds_since(start);
    // The target is for 8 threads; fewer threads are there to show how it scales.
    auto kind = threads == 8 ? TargetKind::min_value : TargetKind::none;
    report(state, { "calls/s", rate, pingpong_rate(threads, throughput_calls), true, kind, 100000 });
}

} // namespace

BENCHMARK_CAPTURE(BM_hook_roundtrip, process, Isolation::process)->UseRealTime();
BENCHMARK_CAPTURE(BM_hook_roundtrip, in_process, Isolation::in_process)->UseRealTime();
BENCHMARK_CAPTURE(BM_callback_roundtrip, process, Isolation::process)->UseRealTime();
BENCHMARK_CAPTURE(BM_callback_roundtrip, in_process, Isolation::in_process)->UseRealTime();
BENCHMARK_CAPTURE(BM_callback_throughput, process, Isolation::process)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_callback_throughput, in_process, Isolation::in_process)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(8)
    ->UseRealTime();

BENCHMARK_MAIN();
