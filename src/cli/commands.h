// The bulkhead CLI's commands: each builds a request, sends it, and prints the answer.
#pragma once

#include "cli/client.h"

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace bh::cli {

// Everything the command line parsed; filled in by CLI11, read by the command that runs.
struct Invocation {
    std::string runtime_dir;
    int64_t uid = -1;
    std::string name;
    std::string rootfs;
    std::string tar;
    std::string in_place; // register --in-place: the folder adopted
    bool delete_in_place = false; // unregister --delete
    std::string package;
    std::string distribution; // install: debian[:SUITE]
    std::string distro;
    std::string user;
    std::vector<std::string> argv;
    std::string host_dir;
    std::string vm_path;
    bool read_only = false;
    bool all = false;
    bool running = false;
    bool json = false;
    std::string file; // export: where the tar goes ("-": standard output)
    // container session
    std::string storage;
    int64_t memory_mb = 0;
    std::string cpus;
    std::string network = "none";
    int64_t idle_timeout_s = 30;
    bool start_vm = false;
    bool exclusive = false;
    bool detach = false;
    bool follow = false; // container logs -f
    bool tty = false; // run -t
    bool no_tty = false; // run -T
    std::string cwd; // run --cd
    std::vector<std::string> env;
    // images and containers
    std::string session = "bulkhead-cli"; // -s; this default one is created on first use
    std::string reference; // an image reference, or a container's name or id
    std::string container_name; // run --name
    bool force = false;
    std::string signal; // stop (TERM), kill (KILL)
    int64_t time_s = 10; // stop --time
    std::string target; // image tag: the new reference
    bool insecure = false; // pull, push: a plain-HTTP registry on the session's loopback
    bool interactive = false; // container exec -i
    bool remove = false; // container run --rm
    std::vector<std::string> volumes; // container run -v HOST:CTR[:ro]
    bool create_only = false; // container create
};

// Registers every subcommand on `app`; the chosen one stores its runner in `run`.
void add_commands(CLI::App& app, Invocation& inv, std::function<int(Client&)>& run);

} // namespace bh::cli
