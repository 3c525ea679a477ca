// bulkheadd: wires configuration, registry, service and control socket to one event loop.
#include "base/log.h"
#include "base/own-program.h"
#include "service/control-server.h"
#include "service/host-cgroup.h"
#include "service/journal-log.h"
#include "service/service.h"
#include "service/vm-cgroup.h"
#include "unpack/rootfs-tree.h"

#include <CLI/CLI.hpp>
#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <kj/async-unix.h>
#include <map>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace {

struct Options {
    std::string config_dir = "/etc/bulkhead";
    std::string state_dir = "/var/lib/bulkhead";
    std::string runtime_dir = "/run/bulkhead";
    bh::LogLevel log_level = bh::LogLevel::Info;
};

// An O_PATH fd of one of bulkheadd's helper programs, to execveat (libexec: BULKHEAD_HELPER_RELDIR).
bh::Result<bh::Fd> open_own_program(const char* name)
{
    return bh::open_own_program(name, BULKHEAD_HELPER_RELDIR);
}

// Removes distribution directories no registration refers to: what a crash mid-import left.
void remove_orphaned_imports(const bh::service::Registry& registry)
{
    DIR* dir = opendir(registry.distributions_dir().c_str());
    if (!dir)
        return;
    std::vector<std::string> orphans;
    while (dirent* entry = readdir(dir)) {
        auto uuid = bh::Uuid::parse(entry->d_name);
        bool known = false;
        for (const auto* record : registry.all())
            known = known || (uuid && record->uuid == *uuid);
        if (entry->d_name[0] != '.' && !known)
            orphans.push_back(registry.distributions_dir() + "/" + entry->d_name);
    }
    closedir(dir);
    for (const auto& path : orphans) {
        bh::log_warning("removing the unfinished import " + path);
        (void)bh::remove_tree(path);
    }
}

// The control socket: the one the service manager passed (bulkhead.socket, sd_listen_fds), else
// one bound at `path` here. `passed` says which: a passed socket is the manager's to remove.
struct ControlSocket {
    bh::Fd fd;
    bool passed = false;
};

bh::Result<ControlSocket> open_control_socket(const std::string& path)
{
    // Unsets LISTEN_FDS and LISTEN_PID, so that no VM or plugin host sees them.
    int count = sd_listen_fds(1);
    if (count < 0)
        return bh::Error { count, "cannot take the sockets the service manager passed" };
    if (count == 0) {
        auto bound = bh::service::bind_control_socket(path);
        if (!bound)
            return bound.error();
        return ControlSocket { std::move(bound.value()), false };
    }
    int fd = SD_LISTEN_FDS_START;
    if (count > 1)
        return bh::Error { -EINVAL,
            "the service manager passed " + std::to_string(count) + " sockets; expected one" };
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) <= 0)
        return bh::Error { -EINVAL,
            "the socket the service manager passed is not a listening Unix stream socket" };
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return bh::Error::from_errno(errno, "cannot make the passed control socket non-blocking");
    return ControlSocket { bh::Fd(fd), true };
}

int fail(const bh::Error& error)
{
    bh::log_error(error.message);
    return 1;
}

// <runtime-dir>/vm-mounts: a private tmpfs (0711: each VM's init, as its user, passes through to
// its own staging mount, root's too), so that the VMs' staging mounts made under it
// propagate nowhere on the host (they must not follow the host's shared /run into other
// namespaces). What a killed service left there is unmounted and removed first.
bh::Status make_staging_dir(const std::string& path)
{
    if (mkdir(path.c_str(), 0711) < 0 && errno != EEXIST)
        return bh::Error::from_errno(errno, "cannot create " + path);
    for (int i = 0; i < 16 && umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0; ++i) { }
    if (DIR* dir = opendir(path.c_str())) {
        while (dirent* entry = readdir(dir)) {
            std::string name = entry->d_name;
            if (name != "." && name != "..")
                rmdir((path + "/" + name).c_str());
        }
        closedir(dir);
    }
    if (mount("bulkhead-vm-mounts", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711") < 0
        || mount(nullptr, path.c_str(), nullptr, MS_PRIVATE, nullptr) < 0)
        return bh::Error::from_errno(errno, "cannot mount a private tmpfs at " + path);
    return {};
}

// Abandoned VMs waiting to end (VmEnvironment::leftovers): nothing there can fail but a watch.
class LeftoverErrors final : public kj::TaskSet::ErrorHandler {
public:
    void taskFailed(kj::Exception&& exception) override
    {
        bh::log_warning(
            std::string("waiting for an abandoned VM failed: ") + exception.getDescription().cStr());
    }
};

} // namespace

int main(int argc, char** argv)
{
    Options options;
    const std::map<std::string, bh::LogLevel> log_levels { { "debug", bh::LogLevel::Debug },
        { "info", bh::LogLevel::Info }, { "warning", bh::LogLevel::Warning },
        { "error", bh::LogLevel::Error } };
    CLI::App app { "bulkheadd: runs Linux distributions in per-user namespace VMs, with isolated plugins" };
    app.add_option("--config-dir", options.config_dir, "Configuration directory (bulkhead.toml, plugins.d/)");
    app.add_option("--state-dir", options.state_dir, "State directory (registered distributions)");
    app.add_option("--runtime-dir", options.runtime_dir, "Runtime directory (control.sock)");
    app.add_option(
           "--log-level", options.log_level, "Least important messages logged: debug, info, warning or error")
        ->transform(CLI::CheckedTransformer(log_levels))
        ->option_text("LEVEL");
    app.set_version_flag("--version", BULKHEAD_VERSION);
    CLI11_PARSE(app, argc, argv);
    bh::set_log_level(options.log_level);
    if (bh::service::stderr_is_journal())
        bh::set_log_sink(bh::service::journal_log_sink);
    if (geteuid() != 0)
        return fail({ -EPERM, "bulkheadd must run as root (it creates namespaces and maps user ids)" });

    auto config = bh::service::load_service_config(options.config_dir);
    if (!config)
        return fail(config.error());
    auto registry = bh::service::Registry::load(options.state_dir);
    if (!registry)
        return fail(registry.error());
    remove_orphaned_imports(registry.value());
    bh::service::remove_stale_host_cgroups();
    bh::service::VmCgroups vm_cgroups(config->vm_limits);
    auto vminit = open_own_program("bulkhead-vminit");
    auto plugin_host = open_own_program("bulkhead-pluginhost");
    auto unpack = open_own_program("bulkhead-unpack");
    for (auto* program : { &vminit, &plugin_host, &unpack }) {
        if (!*program)
            return fail(program->error());
    }
    auto plugins = bh::service::load_plugin_configs(options.config_dir);

    if (mkdir(options.runtime_dir.c_str(), 0755) < 0 && errno != EEXIST)
        return fail(bh::Error::from_errno(errno, "cannot create " + options.runtime_dir));
    std::string staging_dir = options.runtime_dir + "/vm-mounts";
    if (auto made = make_staging_dir(staging_dir); !made)
        return fail(made.error());
    std::string socket_path = options.runtime_dir + "/control.sock";
    auto listener = open_control_socket(socket_path);
    if (!listener)
        return fail(listener.error());

    signal(SIGPIPE, SIG_IGN);
    kj::UnixEventPort::captureSignal(SIGTERM);
    kj::UnixEventPort::captureSignal(SIGINT);
    auto io = kj::setupAsyncIo();
    LeftoverErrors leftover_errors;
    kj::TaskSet leftovers(leftover_errors);
    bh::service::VmEnvironment env { *io.lowLevelProvider, io.unixEventPort, vminit->get(), vm_cgroups,
        io.provider->getTimer(), config->vm_limits.stop_timeout_s * kj::SECONDS, leftovers, staging_dir };
    bh::service::PluginEnvironment plugin_env { *io.lowLevelProvider, io.unixEventPort,
        io.provider->getTimer(), plugin_host->get(), BULKHEAD_VERSION, options.config_dir,
        config->require_verified_plugins, config->plugin_host_template };
    bh::service::Service service(env, unpack->get(), io.provider->getTimer(), std::move(config.value()),
        std::move(registry.value()), std::move(plugin_env), std::move(plugins));
    bh::service::ControlServer control(
        *io.lowLevelProvider, io.provider->getTimer(), service, BULKHEAD_VERSION);
    auto serving = control.listen(std::move(listener->fd)).eagerlyEvaluate([](kj::Exception&& e) {
        bh::log_error(std::string("the control socket failed: ") + e.getDescription().cStr());
    });
    bh::log_info("bulkheadd " BULKHEAD_VERSION " listening on " + socket_path
        + (listener->passed ? " (socket passed by the service manager)" : ""));
    sd_notify(0, "READY=1");

    auto stop = io.unixEventPort.onSignal(SIGTERM)
                    .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                    .wait(io.waitScope);
    bh::log_info(std::string("received ") + strsignal(stop.si_signo) + "; stopping distributions and VMs");
    sd_notify(0, "STOPPING=1");
    service.shutdown_all().wait(io.waitScope);
    if (!listener->passed)
        unlink(socket_path.c_str());
    umount2(staging_dir.c_str(), MNT_DETACH);
    return 0;
}
