// Images and containers (bench/README.md): against floors measured in the same run,
//   - container_run_warm: `bulkhead container run --rm IMAGE /bin/true` in a session whose VM runs
//     and whose image is unpacked, against `crun run` of the same config and unpacked root done
//     directly on the host (in a cgroup namespace with cgroup2 mounted, as the session's VM has);
//   - container_run_first: the first run of a freshly loaded image (its unpack included), against
//     the same floor;
//   - image_load: `bulkhead container image load` of a 100 MB docker-archive (8 MB with
//     BULKHEAD_BENCH_SMOKE), against `skopeo copy` of it alone to an OCI layout.
// Runs the real bulkheadd in a private temporary directory; the session has --storage in it, so
// the benchmark reads the container's config and the unpacked image from the host side.
#include "private-service.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

using namespace bh::bench;

namespace {

const std::vector<std::string> tool_env { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root" };

struct Fixture {
    PrivateService* service = nullptr;
    fs::path storage; // the session's --storage, seen from the host
    fs::path image; // the small image's docker-archive (busybox)
    fs::path big; // the large one
    fs::path bundle; // a copy of a container's config, on the image's unpacked root
};

void run_or_die(const std::vector<std::string>& argv, const std::string& what)
{
    if (run_program(argv, tool_env) != 0)
        die(what + " failed");
}

Fixture& fixture()
{
    static Fixture f;
    if (f.service)
        return f;
    bool created = false;
    f.service = &BenchRoot::get().service("containers", {}, &created);
    fs::path root = BenchRoot::get().path();
    f.storage = root / "container-storage";
    fs::create_directories(f.storage);
    f.image = root / "image.tar";
    run_or_die({ BENCH_SOURCE_DIR "/tests/make-test-image.sh", (root / "rootfs").string(), "debian:latest",
                   f.image.string() },
        "make-test-image.sh");
    // The large image: the busybox root and one file of random bytes (incompressible).
    fs::path big_root = root / "big-rootfs";
    run_or_die({ "cp", "-a", (root / "rootfs").string(), big_root.string() }, "cp");
    size_t megabytes = std::getenv("BULKHEAD_BENCH_SMOKE") ? 8 : 100;
    run_or_die({ "dd", "if=/dev/urandom", "of=" + (big_root / "payload").string(), "bs=1M",
                   "count=" + std::to_string(megabytes), "status=none" },
        "dd");
    f.big = root / "big.tar";
    run_or_die(
        { BENCH_SOURCE_DIR "/tests/make-test-image.sh", big_root.string(), "big:latest", f.big.string() },
        "make-test-image.sh (large)");

    f.service->cli({ "container", "session", "create", "bench", "--storage", f.storage.string() });
    f.service->cli({ "container", "image", "load", "-s", "bench", f.image.string() });
    // A kept container: its config and the unpacked image are the floor's bundle.
    f.service->cli({ "container", "run", "-s", "bench", "--name", "model", "debian", "/bin/true" });
    fs::path containers = f.storage / "containers";
    fs::path config_path;
    for (auto& entry : fs::directory_iterator(containers))
        config_path = entry.path() / "config.json";
    std::ifstream in(config_path);
    nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
    if (config.is_discarded())
        die("cannot read the container's config " + config_path.string());
    fs::path unpacked;
    for (auto& entry : fs::directory_iterator(f.storage / "images"))
        unpacked = entry.path() / "bundle" / "rootfs";
    f.bundle = root / "floor-bundle";
    fs::create_directories(f.bundle);
    config["root"]["path"] = unpacked.string();
    config["root"]["readonly"] = true;
    config.erase("hooks");
    config["process"]["args"] = nlohmann::json::array({ "/bin/true" });
    std::ofstream(f.bundle / "config.json") << config.dump();
    return f;
}

double seconds_of(const std::vector<std::string>& argv)
{
    auto start = Clock::now();
    int status = run_program(argv, tool_env);
    if (status != 0)
        die(argv[0] + " failed with status " + std::to_string(status));
    return seconds_since(start);
}

// crun run of the same config on the host, in a cgroup namespace with cgroup2 at /sys/fs/cgroup
// (crun refuses hybrid hosts otherwise), as the session's VM gives it.
double direct_crun_seconds(const Fixture& f, int n)
{
    std::string script = "mount -t cgroup2 none /sys/fs/cgroup && exec crun --root "
        + (f.bundle / "state").string() + " --cgroup-manager=disabled run --bundle " + f.bundle.string()
        + " floor-" + std::to_string(n);
    return seconds_of({ "unshare", "--mount", "--cgroup", "--propagation", "private", "sh", "-c", script });
}

double floor_ms(const Fixture& f, int64_t samples)
{
    static int n = 0;
    double total = 0;
    for (int64_t i = 0; i < samples; ++i)
        total += direct_crun_seconds(f, n++);
    return total * 1e3 / static_cast<double>(samples);
}

void BM_container_run_warm(benchmark::State& state)
{
    Fixture& f = fixture();
    double total = 0;
    for (auto _ : state) {
        auto start = Clock::now();
        f.service->cli({ "container", "run", "-s", "bench", "--rm", "debian", "/bin/true" });
        double seconds = seconds_since(start);
        state.SetIterationTime(seconds);
        total += seconds;
    }
    double ms = total * 1e3 / static_cast<double>(state.iterations());
    report(state,
        { "ms/run", ms, floor_ms(f, std::max<int64_t>(state.iterations(), 5)), false, TargetKind::max_ratio,
            1.3 });
}

// A fresh load each time (its image id is new to the session: removed after), then the first run.
void BM_container_run_first(benchmark::State& state)
{
    Fixture& f = fixture();
    double total = 0;
    for (auto _ : state) {
        state.PauseTiming();
        f.service->cli({ "container", "image", "load", "-s", "bench", f.big.string() });
        state.ResumeTiming();
        auto start = Clock::now();
        f.service->cli({ "container", "run", "-s", "bench", "--rm", "big", "/bin/true" });
        double seconds = seconds_since(start);
        state.SetIterationTime(seconds);
        total += seconds;
        state.PauseTiming();
        f.service->cli({ "container", "image", "rm", "-s", "bench", "big" });
        state.ResumeTiming();
    }
    double ms = total * 1e3 / static_cast<double>(state.iterations());
    report(state, { "ms/run", ms, floor_ms(f, 5), false, TargetKind::none, 0 });
}

void BM_image_load(benchmark::State& state)
{
    Fixture& f = fixture();
    double total = 0;
    for (auto _ : state) {
        auto start = Clock::now();
        f.service->cli({ "container", "image", "load", "-s", "bench", f.big.string() });
        double seconds = seconds_since(start);
        state.SetIterationTime(seconds);
        total += seconds;
        f.service->cli({ "container", "image", "rm", "-s", "bench", "big" });
    }
    double ms = total * 1e3 / static_cast<double>(state.iterations());
    int64_t samples = std::max<int64_t>(state.iterations(), 3);
    double floor = 0;
    fs::path layout = BenchRoot::get().path() / "skopeo-floor";
    for (int64_t i = 0; i < samples; ++i) {
        fs::remove_all(layout);
        floor += seconds_of({ "skopeo", "--insecure-policy", "copy", "--quiet",
            "docker-archive:" + f.big.string(), "oci:" + layout.string() + ":img" });
    }
    report(state,
        { "ms/load", ms, floor * 1e3 / static_cast<double>(samples), false, TargetKind::max_ratio, 1.2 });
}

} // namespace

BENCHMARK(BM_container_run_warm)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_container_run_first)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_image_load)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_MAIN();
