// A private bulkheadd for the benchmarks that need the whole service (bench-e2e, bench-exec):
// started from the build in a temporary directory, as tests/integration/lib.sh does, with the
// busybox test distribution registered as "bench" (bench/README.md).
#pragma once

#include "harness.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bh::bench {

namespace fs = std::filesystem;

// Where a program's stdout and stderr go.
struct Io {
    std::string out = "/dev/null";
    bool append = false;
    std::string err; // where stderr goes (appended); empty: with stdout
};

// posix_spawnp + waitpid: the exit status, or -1 when it could not start. `env` comes first,
// then this process's environment.
int run_program(const std::vector<std::string>& argv, const std::vector<std::string>& env, const Io& io = {});

struct ServiceSetup {
    int plugins = 0; // copies of bench-plugin.so, named bench-0 .. bench-N-1
    bool in_process = false; // isolation = "none" instead of the default "process"
    bool vm_stays_up = false; // [vm] idle_timeout_s = 0: a started VM runs until shut down
};

class PrivateService {
public:
    PrivateService(const fs::path& root, const std::string& name, const ServiceSetup& setup);
    ~PrivateService();
    PrivateService(const PrivateService&) = delete;
    PrivateService& operator=(const PrivateService&) = delete;

    // Runs the bulkhead CLI against this service; dies unless it succeeds.
    void cli(std::vector<std::string> args);
    // The same, and returns what it wrote to stdout (stderr goes to cli.log).
    std::string cli_output(std::vector<std::string> args);
    // The host pid of the init of the running distribution `distro` (bench/README.md, BM_run_warm);
    // dies unless there is exactly one such process.
    pid_t distribution_init(const std::string& distro);
    // Numbers with plugins that failed to load would be numbers without plugins.
    void expect_plugins_running(int plugins);
    // The copy of bench-plugin.so that plugin `index` loads.
    fs::path plugin_path(int index) const;
    // Ends bulkheadd at once and reaps it (also what the destructor does, more gently).
    void kill_now();

private:
    void write_config(const ServiceSetup& setup);
    void install_plugin(int index, bool in_process);
    void spawn_daemon();
    int run_cli(std::vector<std::string> args, const Io& io);

    fs::path m_dir;
    pid_t m_pid = 0;
};

// The temporary root: the test distribution and the services, made on first use and removed at
// exit. When the benchmark dies (harness.h's die()) the services are killed, the directory kept.
class BenchRoot {
public:
    static BenchRoot& get();
    const fs::path& path() const { return m_root; }
    // The service called `name`, started with `setup` on first use; `created` says it is new.
    PrivateService& service(const std::string& name, const ServiceSetup& setup, bool* created = nullptr);

private:
    BenchRoot();
    ~BenchRoot();
    void remove_all();

    fs::path m_root;
    std::map<std::string, std::unique_ptr<PrivateService>> m_services;
};

} // namespace bh::bench
