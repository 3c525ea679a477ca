// The bulkhead CLI's commands.
#include "cli/commands.h"

#include "base/mutex.h"
#include "base/own-program.h"
#include "base/spawn.h"
#include "cli/progress.h"
#include "cli/terminal.h"
#include "config/config.h"
#include "ipc/fd-cap.h"
#include "ipc/loop-inbox.h"
#include "unpack/rootfs-archive.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <kj/debug.h>
#include <kj/thread.h>
#include <map>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <pwd.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh::cli {

namespace {

    // Reads the user's ~/.config/bulkhead/bulkhead.toml; a missing file sets nothing.
    Result<service::UserOverrides> user_overrides()
    {
        const char* home = getenv("HOME");
        passwd* entry = home ? nullptr : getpwuid(getuid());
        std::string path = std::string(home ? home
                                   : entry  ? entry->pw_dir
                                            : "/")
            + "/.config/bulkhead/bulkhead.toml";
        std::ifstream file(path);
        if (!file)
            return service::UserOverrides {};
        std::stringstream text;
        text << file.rdbuf();
        return service::parse_user_overrides(text.str(), path);
    }

    void fill_settings(proto::UserSettings::Builder out, const service::UserOverrides& in)
    {
        out.setHasIdleTimeout(in.idle_timeout_s.has_value());
        out.setIdleTimeoutS(in.idle_timeout_s.value_or(0));
        // Both spellings: a service that predates `network` reads host_network.
        bool host_or_none = in.network && *in.network != service::NetworkMode::nat;
        out.setHasHostNetwork(host_or_none);
        out.setHostNetwork(in.network == service::NetworkMode::host);
        if (in.network)
            out.setNetwork(service::network_name(*in.network));
        out.setInit(in.init.value_or(""));
    }

    // The uid the service runs a user's tools as: the target's, or this process's own.
    uid_t tools_uid(const Invocation& inv)
    {
        return inv.uid >= 0 ? static_cast<uid_t>(inv.uid) : ::geteuid();
    }

    // What a long request shows on a terminal while it runs (Progress).
    struct Shown {
        std::string what;
        Position position;
    };

    // wait_for, with the progress of `shown` on a terminal, cleared before anything is printed.
    template<typename Promise>
    auto wait_showing(Client& client, Promise&& promise, const std::string& operation, const Shown* shown)
    {
        std::optional<Progress> progress;
        if (shown)
            progress.emplace(client.io().provider->getTimer(), shown->what, shown->position);
        return wait_for(client, kj::mv(promise), operation);
    }

    // Waits for a request (`what` names it while it runs) and reports its failure, or the failure
    // its Outcome says, under `operation`; on success, the exit code is `then(reply)`'s.
    template<typename Promise, typename Then>
    int answered(
        Client& client, Promise&& promise, const std::string& what, const std::string& operation, Then then)
    {
        auto reply = wait_for(client, kj::mv(promise), what);
        if (!reply)
            return report({ reply.take_error(), operation });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        return then(*reply);
    }

    // Finishes a request whose only answer is an Outcome; returns the exit code.
    template<typename Promise>
    int finish(Client& client, Promise&& promise, const std::string& operation, const Shown* shown = nullptr)
    {
        auto reply = wait_showing(client, kj::mv(promise), operation, shown);
        if (!reply)
            return report({ reply.take_error(), operation });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        return 0;
    }

    nlohmann::json distro_json(proto::DistroInfo::Reader d)
    {
        return { { "name", d.getName().cStr() }, { "uuid", d.getUuid().cStr() },
            { "package", d.getPackage().cStr() }, { "flavor", d.getFlavor().cStr() },
            { "version", d.getVersion().cStr() }, { "default", d.getIsDefault() },
            { "running", d.getRunning() }, { "owner_uid", d.getOwnerUid() }, { "init_pid", d.getInitPid() },
            { "pid_namespace", d.getPidNamespace() }, { "in_place", d.getInPlace().cStr() } };
    }

    // The producer side of `register --rootfs`: streams the directory as tar from a helper, and
    // tells the service whether it got all of it.
    class DirectoryProducer final : public proto::ArchiveProducer::Server {
    public:
        explicit DirectoryProducer(kj::ForkedPromise<Status>& done)
            : m_done(done)
        {
        }

    protected:
        kj::Promise<void> result(ResultContext context) override
        {
            return m_done.addBranch().then([context](Status status) mutable {
                if (!status)
                    ipc::set_outcome(context.getResults().initOutcome(), status.error(),
                        "Bulkhead/Cli/RegisterDistribution");
            });
        }

    private:
        kj::ForkedPromise<Status>& m_done;
    };

    // `register --rootfs DIR`'s tar, written to `out` by `bulkhead-unpack --pack-tree DIR` as this
    // user: the CLI does not link libarchive, whose libraries (libxml2, ICU, five compressors)
    // were most of every command's start-up. Its exit status is the errno of a failure, its
    // stderr the message; killed by SIGPIPE, the service hung up (-EPIPE). On the writer thread,
    // which lives until the helper has exited (the helper dies with it).
    Status pack_directory(const std::string& dir, Fd out)
    {
        auto helper = open_own_program("bulkhead-unpack", BULKHEAD_CLI_HELPER_RELDIR);
        if (!helper)
            return helper.take_error();
        int said[2];
        if (::pipe2(said, O_CLOEXEC) < 0)
            return Error::from_errno(errno, "cannot create a pipe");
        Fd said_read(said[0]), said_write(said[1]);
        SpawnPlan plan;
        plan.path = "bulkhead-unpack";
        plan.exec_fd = helper->get();
        plan.argv = { "bulkhead-unpack", "--pack-tree", dir };
        plan.fds = { { out.get(), STDOUT_FILENO }, { said_write.get(), STDERR_FILENO } };
        auto spawned = spawn_process(plan);
        out.reset();
        said_write.reset();
        if (!spawned)
            return spawned.take_error();
        std::string message;
        char buffer[1024];
        for (ssize_t n; (n = ::read(said_read.get(), buffer, sizeof(buffer))) != 0;) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                break;
            if (message.size() < 8192)
                message.append(buffer, static_cast<size_t>(n));
        }
        int status = spawned.value().wait();
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            return {};
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE)
            return Error { -EPIPE, "the service stopped reading the archive" };
        while (!message.empty() && message.back() == '\n')
            message.pop_back();
        if (WIFEXITED(status))
            return Error { -WEXITSTATUS(status), message.empty() ? "bulkhead-unpack failed" : message };
        return Error { -EIO, "bulkhead-unpack was killed by signal " + std::to_string(WTERMSIG(status)) };
    }

    // What a registration's answer says of the new distribution.
    int registered(proto::DistroInfo::Reader d)
    {
        std::cout << "Registered '" << d.getName().cStr() << "' (" << d.getUuid().cStr() << ")" << std::endl;
        if (d.getSkippedDevices() > 0)
            std::cout << "Skipped " << d.getSkippedDevices() << " device node"
                      << (d.getSkippedDevices() == 1 ? "" : "s")
                      << " of the archive: the distribution gets its own /dev" << std::endl;
        return 0;
    }

    // The end of a registration whose archive this process streamed (`local`: how its producer
    // ended): the producer's failure is the root cause, unless it is only the service hanging up
    // on us; then the service's answer.
    template<typename Reply> int registration_outcome(Reply& reply, Status local, const std::string& op)
    {
        if (!local && local.error().code != -EPIPE)
            return report({ local.take_error(), op });
        if (!reply)
            return report({ reply.take_error(), op });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        return registered(reply->getDistro());
    }

    int do_register_in_place(Client& client, const Invocation& inv)
    {
        auto request = client.control().registerInPlaceRequest();
        request.setName(inv.name);
        request.setPackage(inv.package);
        char* absolute = ::realpath(inv.in_place.c_str(), nullptr); // the service takes it as named
        request.setDirectory(absolute ? absolute : inv.in_place);
        std::free(absolute);
        return answered(client, request.send(), "registration", "Bulkhead/Cli/RegisterInPlace",
            [](auto& reply) { return registered(reply.getDistro()); });
    }

    int do_register(Client& client, const Invocation& inv)
    {
        if (!inv.in_place.empty())
            return do_register_in_place(client, inv);
        const std::string op = "Bulkhead/Cli/RegisterDistribution";
        auto request = client.control().registerRequest();
        request.setName(inv.name);
        request.setPackage(inv.package);
        request.initTarget().setUid(inv.uid);
        // The writer's result comes back through an inbox, not kj's cross-thread fulfiller
        // (ipc/loop-inbox.h says why); declared first, so the thread is joined before it goes.
        ipc::LoopInbox inbox(client.io().unixEventPort);
        kj::Own<kj::Thread> writer;
        auto result = inbox.expect<Status>();
        kj::ForkedPromise<Status> produced = kj::mv(result.promise).fork();
        Shown shown { "Registering " + (inv.tar.empty() ? inv.rootfs : inv.tar) };
        if (!inv.tar.empty()) {
            Fd tar(::open(inv.tar.c_str(), O_RDONLY | O_CLOEXEC));
            if (!tar)
                return report(
                    { Error::from_errno(errno, "cannot open the tar archive '" + inv.tar + "'"), op });
            shown.position = shared_file(tar.get(), true); // bulkhead-unpack reads this very fd
            request.setArchive(ipc::wrap_fd(std::move(tar)));
            result.sender.send(Status());
        } else {
            int fds[2];
            if (::pipe2(fds, O_CLOEXEC) < 0)
                return report({ Error::from_errno(errno, "cannot create a pipe"), op });
            request.setArchive(ipc::wrap_fd(Fd(fds[0])));
            request.setProducer(kj::heap<DirectoryProducer>(produced));
            writer = kj::heap<kj::Thread>(
                [out = Fd(fds[1]), dir = inv.rootfs, sender = kj::mv(result.sender)]() mutable {
                    sender.send(pack_directory(dir, std::move(out)));
                });
        }
        auto reply = wait_showing(client, request.send(), "registration", &shown);
        return registration_outcome(reply, produced.addBranch().wait(client.wait_scope()), op);
    }

    // ---- install: a Debian root filesystem built by mmdebstrap, registered as it streams ----

    // The suite `install debian` builds without one: the host's own on a Debian host
    // (/etc/os-release's VERSION_CODENAME), bookworm anywhere else.
    std::string default_debian_suite()
    {
        std::ifstream file("/etc/os-release");
        std::string line, id, codename;
        auto value = [](std::string text) {
            if (text.size() >= 2 && (text.front() == '"' || text.front() == '\''))
                text = text.substr(1, text.size() - 2);
            return text;
        };
        while (std::getline(file, line)) {
            if (line.starts_with("ID="))
                id = value(line.substr(3));
            else if (line.starts_with("VERSION_CODENAME="))
                codename = value(line.substr(17));
        }
        return id == "debian" && !codename.empty() ? codename : "bookworm";
    }

    // Whether a URI of the host's apt sources is the Debian archive (or a mirror or proxy of it):
    // http, https or file, a path ending in /debian, not the security archive.
    bool is_debian_archive(const std::string& uri)
    {
        if (!uri.starts_with("http://") && !uri.starts_with("https://") && !uri.starts_with("file:/"))
            return false;
        if (uri.find("security") != std::string::npos)
            return false;
        std::string path = uri;
        while (!path.empty() && path.back() == '/')
            path.pop_back();
        return path.ends_with("/debian");
    }

    std::vector<std::string> words_of(const std::string& text)
    {
        std::vector<std::string> out;
        std::istringstream in(text);
        for (std::string word; in >> word;)
            out.push_back(word);
        return out;
    }

    // The Debian archive's URIs in the host's apt sources: one-line `deb [options] URI SUITE ...`
    // entries of /etc/apt/sources.list and sources.list.d/*.list, and the `URIs:` of enabled
    // `Types: deb` stanzas of sources.list.d/*.sources. In the order found, each once.
    std::vector<std::string> host_debian_uris()
    {
        std::vector<std::string> files { "/etc/apt/sources.list" };
        if (DIR* dir = ::opendir("/etc/apt/sources.list.d")) {
            std::vector<std::string> names;
            while (dirent* entry = ::readdir(dir)) {
                std::string name = entry->d_name;
                if (name.ends_with(".list") || name.ends_with(".sources"))
                    names.push_back("/etc/apt/sources.list.d/" + name);
            }
            ::closedir(dir);
            std::sort(names.begin(), names.end());
            files.insert(files.end(), names.begin(), names.end());
        }
        std::vector<std::string> uris;
        auto add = [&uris](const std::string& uri) {
            if (is_debian_archive(uri) && std::find(uris.begin(), uris.end(), uri) == uris.end())
                uris.push_back(uri);
        };
        for (const auto& path : files) {
            std::ifstream file(path);
            if (path.ends_with(".sources")) {
                // deb822: stanzas separated by blank lines; fields may continue on indented lines.
                std::string line, field;
                std::map<std::string, std::string> stanza;
                auto finish = [&]() {
                    auto types = words_of(stanza["types"]);
                    bool enabled = stanza["enabled"].find("no") == std::string::npos;
                    if (enabled && std::find(types.begin(), types.end(), "deb") != types.end())
                        for (const auto& uri : words_of(stanza["uris"]))
                            add(uri);
                    stanza.clear();
                };
                while (std::getline(file, line)) {
                    if (line.starts_with("#"))
                        continue;
                    if (line.find_first_not_of(" \t") == std::string::npos) {
                        finish();
                    } else if (line[0] == ' ' || line[0] == '\t') {
                        stanza[field] += " " + line;
                    } else if (size_t colon = line.find(':'); colon != std::string::npos) {
                        field = line.substr(0, colon);
                        std::transform(field.begin(), field.end(), field.begin(), ::tolower);
                        stanza[field] = line.substr(colon + 1);
                    }
                }
                finish();
                continue;
            }
            for (std::string line; std::getline(file, line);) {
                auto words = words_of(line.substr(0, line.find('#')));
                if (words.empty() || words[0] != "deb")
                    continue;
                size_t at = 1;
                if (at < words.size() && words[at].starts_with("[")) // [ options ]
                    while (at < words.size() && !words[at++].ends_with("]")) { }
                if (at < words.size())
                    add(words[at]);
            }
        }
        return uris;
    }

    // The program's path, looked up in $PATH as a shell would (spawn_process does no lookup).
    std::string find_program(const std::string& name)
    {
        const char* path = getenv("PATH");
        std::istringstream dirs(path && *path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        for (std::string dir; std::getline(dirs, dir, ':');) {
            std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
            if (::access(candidate.c_str(), X_OK) == 0)
                return candidate;
        }
        return "";
    }

    // What the relay thread of an install shares with the loop's progress line.
    struct InstallRelay {
        std::atomic<uint64_t> bytes { 0 }; // of tar handed to the service
        std::atomic<bool> tar_ended { false }; // mmdebstrap closed its stdout
        Mutex mutex;
        std::string stage BH_GUARDED_BY(mutex); // mmdebstrap's last "I: ..." line

        std::string current_stage() BH_EXCLUDES(mutex)
        {
            MutexLock lock(mutex);
            return stage;
        }
    };

    // Copies mmdebstrap's tar (stdout) to the service's pipe and keeps the end of what it says
    // (stderr), until both end; then waits for its exit (leaving it to be reaped by its owner).
    // Its exit status decides: the service's registration is confirmed only if it succeeded.
    Status relay_mmdebstrap(Fd tar, Fd said, Fd to_service, int pidfd, InstallRelay& relay)
    {
        std::string tail; // the last few kB of its stderr
        bool service_gone = false;
        char buffer[65536];
        while (tar || said) {
            pollfd fds[2] = { { tar ? tar.get() : -1, POLLIN, 0 }, { said ? said.get() : -1, POLLIN, 0 } };
            if (::poll(fds, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                return Error::from_errno(errno, "cannot wait for mmdebstrap's output");
            }
            if (fds[0].revents) {
                ssize_t n = ::read(tar.get(), buffer, sizeof(buffer));
                if (n <= 0) {
                    relay.tar_ended = true;
                    tar.reset();
                    to_service.reset(); // the end of the archive
                } else {
                    for (ssize_t at = 0; at < n && !service_gone;) {
                        ssize_t w = ::write(to_service.get(), buffer + at, n - at);
                        if (w < 0 && errno == EINTR)
                            continue;
                        if (w <= 0) {
                            // The service stopped reading (it refused the archive): mmdebstrap
                            // gets EPIPE in turn.
                            service_gone = true;
                            tar.reset();
                            to_service.reset();
                            break;
                        }
                        at += w;
                        relay.bytes += w;
                    }
                }
            }
            if (fds[1].revents) {
                ssize_t n = ::read(said.get(), buffer, sizeof(buffer));
                if (n <= 0) {
                    said.reset();
                } else {
                    tail.append(buffer, n);
                    if (tail.size() > 8192)
                        tail.erase(0, tail.size() - 8192);
                    // The last complete "I: " line is the stage shown.
                    size_t end = tail.rfind('\n');
                    while (end != std::string::npos && end > 0) {
                        size_t begin = tail.rfind('\n', end - 1);
                        begin = begin == std::string::npos ? 0 : begin + 1;
                        if (tail.compare(begin, 3, "I: ") == 0) {
                            MutexLock lock(relay.mutex);
                            relay.stage = tail.substr(begin, end - begin);
                            break;
                        }
                        end = begin == 0 ? std::string::npos : begin - 1;
                    }
                }
            }
        }
        siginfo_t info {};
        while (
            ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOWAIT) < 0)
            if (errno != EINTR)
                return Error::from_errno(errno, "cannot wait for mmdebstrap");
        bool ok = info.si_code == CLD_EXITED && info.si_status == 0;
        if (ok && service_gone)
            return Error { -EPIPE, "the service stopped reading the archive" };
        if (ok)
            return Status();
        // Its last lines say why: at most 15 of them.
        while (!tail.empty() && tail.back() == '\n')
            tail.pop_back();
        size_t from = tail.size(); // the start of the lines kept
        for (int lines = 0; lines < 15 && from > 0; ++lines) {
            size_t newline = tail.rfind('\n', from - 1);
            from = newline == std::string::npos ? 0 : newline;
        }
        std::string last = tail.substr(from < tail.size() && tail[from] == '\n' ? from + 1 : from);
        std::string how = info.si_code == CLD_EXITED ? "exit status " + std::to_string(info.si_status)
                                                     : "killed by signal " + std::to_string(info.si_status);
        return Error { -EIO, "mmdebstrap failed (" + how + ")" + (last.empty() ? "" : ":\n" + last) };
    }

    // `install debian[:SUITE] [--name N]`: mmdebstrap, run as the calling user (root mode for
    // root, unshare mode for a user with a subordinate id range), writes the root filesystem as a
    // tar to a pipe that is the archive of an ordinary registration, so every check of the
    // service applies; the registration is confirmed only if mmdebstrap succeeded.
    int do_install(Client& client, const Invocation& inv)
    {
        static constexpr const char* op = "Bulkhead/Cli/InstallDistribution";
        std::string distribution = inv.distribution, suite;
        if (size_t colon = distribution.find(':'); colon != std::string::npos) {
            suite = distribution.substr(colon + 1);
            distribution.resize(colon);
        }
        if (distribution != "debian")
            return report({ Error { -EINVAL,
                                "cannot install '" + inv.distribution
                                    + "': the distributions install builds are: debian[:SUITE] (e.g. "
                                      "debian, debian:bookworm, debian:trixie)" },
                op });
        if (inv.distribution.find(':') != std::string::npos
            && (suite.empty()
                || suite.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos))
            return report(
                { Error { -EINVAL, "invalid suite '" + suite + "': use a Debian codename such as bookworm" },
                    op });
        std::string name = !inv.name.empty() ? inv.name : suite.empty() ? "debian" : "debian-" + suite;
        if (suite.empty())
            suite = default_debian_suite();
        std::string mmdebstrap = find_program("mmdebstrap");
        if (mmdebstrap.empty())
            return report({ Error { -ENOENT,
                                "install needs mmdebstrap, which is not in PATH (apt install mmdebstrap)" },
                op });
        std::vector<std::string> uris = host_debian_uris();
        if (uris.empty())
            uris.push_back("http://deb.debian.org/debian");

        int tar_pipe[2], said_pipe[2], service_pipe[2];
        if (::pipe2(tar_pipe, O_CLOEXEC) < 0)
            return report({ Error::from_errno(errno, "cannot create a pipe"), op });
        Fd tar_read(tar_pipe[0]), tar_write(tar_pipe[1]);
        if (::pipe2(said_pipe, O_CLOEXEC) < 0)
            return report({ Error::from_errno(errno, "cannot create a pipe"), op });
        Fd said_read(said_pipe[0]), said_write(said_pipe[1]);
        if (::pipe2(service_pipe, O_CLOEXEC) < 0)
            return report({ Error::from_errno(errno, "cannot create a pipe"), op });
        Fd service_read(service_pipe[0]), service_write(service_pipe[1]);
        Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));

        SpawnPlan plan;
        plan.path = mmdebstrap;
        plan.argv = { "mmdebstrap", "--variant=minbase", "--mode=auto", "--format=tar", suite, "-" };
        for (const auto& uri : uris)
            plan.argv.push_back("deb " + uri + " " + suite + " main");
        for (char** e = environ; *e; ++e)
            plan.env.push_back(*e);
        plan.fds = { { null.get(), 0 }, { tar_write.get(), 1 }, { said_write.get(), 2 } };
        // Spawned from the main thread, which lives as long as the CLI: it dies with us.
        auto spawned = spawn_process(plan);
        if (!spawned)
            return report({ spawned.take_error(), op });
        ChildProcess child = std::move(spawned.value());
        tar_write.reset();
        said_write.reset();
        Fd pidfd(::fcntl(child.pidfd(), F_DUPFD_CLOEXEC, 3));
        if (!pidfd)
            return report({ Error::from_errno(errno, "cannot duplicate mmdebstrap's pidfd"), op });

        auto request = client.control().registerRequest();
        request.setName(name);
        request.setPackage("debian:" + suite);
        request.initTarget().setUid(inv.uid);
        ipc::LoopInbox inbox(client.io().unixEventPort);
        auto relay = std::make_shared<InstallRelay>();
        auto result = inbox.expect<Status>();
        kj::ForkedPromise<Status> produced = kj::mv(result.promise).fork();
        request.setArchive(ipc::wrap_fd(std::move(service_read)));
        request.setProducer(kj::heap<DirectoryProducer>(produced));
        kj::Own<kj::Thread> relaying = kj::heap<kj::Thread>(
            [tar = std::move(tar_read), said = std::move(said_read), out = std::move(service_write),
                pidfd = std::move(pidfd), relay, sender = kj::mv(result.sender)]() mutable {
                try {
                    sender.send(relay_mmdebstrap(
                        std::move(tar), std::move(said), std::move(out), pidfd.get(), *relay));
                } catch (const std::exception& e) { // std::bad_alloc: the sender is still unsent
                    sender.send(Error {
                        -ENOMEM, std::string("the relay of mmdebstrap's output failed: ") + e.what() });
                }
            });
        Shown shown { "Installing Debian " + suite + " as '" + name + "'",
            { [relay]() -> std::optional<uint64_t> { return relay->bytes.load(); }, 0,
                [relay]() { return relay->current_stage(); } } };
        auto reply = wait_showing(client, request.send(), "installation", &shown);
        // Refused before mmdebstrap ended (the name is taken, a limit is reached, the archive
        // is bad): the service's answer is the cause, and mmdebstrap has nothing left to do.
        bool refused = !reply || !ipc::to_status(reply->getOutcome());
        bool stopped_it = false;
        if (refused && !relay->tar_ended) {
            (void)child.kill(SIGTERM);
            stopped_it = true;
        }
        Status local = produced.addBranch().wait(client.wait_scope());
        relaying = nullptr;
        child.wait();
        if (int code = registration_outcome(reply, stopped_it ? Status() : std::move(local), op); code != 0)
            return code;
        if (reply->getDistro().getIsDefault())
            std::cout << "'" << name << "' is your default distribution: 'bulkhead' opens its shell"
                      << std::endl;
        return 0;
    }

    int exit_code_of(int wait_status)
    {
        if (WIFEXITED(wait_status))
            return WEXITSTATUS(wait_status);
        return 128 + WTERMSIG(wait_status);
    }

    // The exit code of a run: the program's own, or, when it died with its distribution or VM
    // (an error with a wait status), the error printed and the exit code of its death (137).
    int program_exit(proto::Outcome::Reader outcome, int wait_status)
    {
        Status status = ipc::to_status(outcome);
        if (status)
            return exit_code_of(wait_status);
        int code = report({ status.take_error(), outcome.getOperation().cStr() });
        return wait_status != 0 ? exit_code_of(wait_status) : code;
    }

    // The CLI's side of a run with a terminal: the relay, and the loop that sends the program
    // the SIGTERM and SIGHUP the CLI receives. Main thread.
    struct TerminalSide {
        explicit TerminalSide(kj::AsyncIoContext& io)
            : io(io)
        {
        }
        kj::AsyncIoContext& io;
        TerminalRelay relay;
        kj::Own<kj::AsyncInputStream> signals;
        kj::Promise<void> forwarding = nullptr;
    };

    kj::Promise<void> forward_signals(TerminalSide& side, proto::RunningProgram::Client program)
    {
        auto number = kj::heap<unsigned char>(0);
        auto read = side.signals->tryRead(number.get(), 1, 1);
        return read.then([&side, program, number = kj::mv(number)](size_t n) mutable -> kj::Promise<void> {
            if (n == 0)
                return kj::READY_NOW;
            auto request = program.signalRequest();
            request.setSignal(*number);
            return request.send().ignoreResult().then(
                [&side, program]() mutable { return forward_signals(side, kj::mv(program)); });
        });
    }

    // Takes the master end of the program's pseudo-terminal and starts relaying it.
    class TerminalAttach final : public proto::TerminalClient::Server {
    public:
        explicit TerminalAttach(std::shared_ptr<TerminalSide> side)
            : m_side(std::move(side))
        {
        }

    protected:
        kj::Promise<void> attach(AttachContext context) override
        {
            auto program = context.getParams().getProgram();
            return ipc::unwrap_fd(context.getParams().getMaster())
                .then([side = m_side, program](Result<Fd> master) mutable {
                    // Failing the attach makes the service drop the run, which kills the program.
                    KJ_REQUIRE(master.ok(), "cannot take the program's terminal", master.error().message);
                    side->relay.start(std::move(master.value()));
                    side->signals = side->io.lowLevelProvider->wrapInputFd(side->relay.forwarded_signals());
                    side->forwarding = forward_signals(*side, kj::mv(program)).eagerlyEvaluate(nullptr);
                });
        }

    private:
        std::shared_ptr<TerminalSide> m_side;
    };

    // Asks for a pseudo-terminal of the user's terminal's size in `request`: the returned side
    // relays it once the program started, and restores the user's terminal on every way out.
    std::shared_ptr<TerminalSide> request_terminal(Client& client, proto::TerminalRequest::Builder request)
    {
        auto side = std::make_shared<TerminalSide>(client.io());
        winsize size = terminal_size();
        request.setRows(size.ws_row);
        request.setColumns(size.ws_col);
        request.setClient(kj::heap<TerminalAttach>(side));
        return side;
    }

    // The run is over: no more relaying or signals.
    void finish_terminal(const std::shared_ptr<TerminalSide>& side)
    {
        if (!side)
            return;
        side->forwarding = nullptr;
        side->relay.finish();
    }

    int do_run(Client& client, const Invocation& inv, const service::UserOverrides& settings)
    {
        auto request = client.control().runRequest();
        request.setDistro(inv.distro);
        request.setUser(inv.user);
        request.setLoginShell(inv.argv.empty());
        request.setCwd(inv.cwd);
        auto argv = request.initArgv(inv.argv.size());
        for (size_t i = 0; i < inv.argv.size(); ++i)
            argv.set(i, inv.argv[i]);
        const char* term = getenv("TERM");
        auto env = request.initEnv(term ? 1 : 0);
        if (term)
            env.set(0, std::string("TERM=") + term);
        std::shared_ptr<TerminalSide> terminal_side;
        if (wants_terminal(inv.tty, inv.no_tty)) {
            terminal_side = request_terminal(client, request.initTerminal());
        } else {
            // The program gets our own stdin, stdout and stderr: the service copies no bytes.
            request.setStdin(ipc::wrap_fd(Fd(fcntl(0, F_DUPFD_CLOEXEC, 3))));
            request.setStdout(ipc::wrap_fd(Fd(fcntl(1, F_DUPFD_CLOEXEC, 3))));
            request.setStderr(ipc::wrap_fd(Fd(fcntl(2, F_DUPFD_CLOEXEC, 3))));
        }
        fill_settings(request.initSettings(), settings);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "run");
        finish_terminal(terminal_side);
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/RunProgram" });
        return program_exit(reply->getOutcome(), reply->getWaitStatus());
    }

    // Copies stdin to the socket and the socket to stdout until the program closes it.
    void pump(int socket)
    {
        bool input_open = true;
        char buffer[65536];
        for (;;) {
            pollfd fds[2] = { { socket, POLLIN, 0 }, { 0, POLLIN, 0 } };
            if (::poll(fds, input_open ? 2 : 1, -1) < 0 && errno != EINTR)
                return;
            if (fds[0].revents) {
                ssize_t n = ::read(socket, buffer, sizeof(buffer));
                if (n <= 0 || ::write(1, buffer, n) != n)
                    return;
            }
            if (input_open && fds[1].revents) {
                ssize_t n = ::read(0, buffer, sizeof(buffer));
                if (n <= 0 || ::write(socket, buffer, n) != n) {
                    input_open = false;
                    ::shutdown(socket, SHUT_WR);
                }
            }
        }
    }

    int do_vm_exec(Client& client, const Invocation& inv)
    {
        auto request = client.control().vmExecRequest();
        request.setPath(inv.argv.front());
        auto argv = request.initArgv(inv.argv.size());
        for (size_t i = 0; i < inv.argv.size(); ++i)
            argv.set(i, inv.argv[i]);
        request.setDistro(inv.distro);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "exec");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ExecuteBinary" });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        auto socket = ipc::unwrap_fd(reply->getSocket()).wait(client.wait_scope());
        if (!socket)
            return report({ socket.take_error(), "Bulkhead/Cli/ExecuteBinary" });
        pump(socket->get());
        return 0;
    }

    int do_vm_mount(Client& client, const Invocation& inv)
    {
        // Opened for reading, with the user's own rights: the service refuses an O_PATH fd, which
        // would need no permission on the folder.
        Fd dir(::open(inv.host_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir)
            return report({ Error::from_errno(errno, "cannot open the folder '" + inv.host_dir + "'"),
                "Bulkhead/Cli/MountFolder" });
        auto request = client.control().vmMountRequest();
        request.setHostDir(ipc::wrap_fd(std::move(dir)));
        request.setVmPath(inv.vm_path);
        request.setReadOnly(inv.read_only);
        request.setName(inv.name);
        request.initTarget().setUid(inv.uid);
        return finish(client, request.send(), "Bulkhead/Cli/MountFolder");
    }

    // `export NAME FILE`: the tar is written to FILE.partial-<pid> (created 0600: a distribution's
    // files may hold secrets) and renamed to FILE once the service has written all of it, so a
    // failed export leaves FILE as it was. "-" writes to standard output, never a terminal.
    int do_export(Client& client, const Invocation& inv)
    {
        static constexpr const char* op = "Bulkhead/Cli/ExportDistribution";
        Fd out;
        std::string partial;
        if (inv.file == "-") {
            if (::isatty(STDOUT_FILENO))
                return report({ Error { -EINVAL,
                                    "refusing to write a tar archive to a terminal: name a file, or redirect "
                                    "standard output" },
                    op });
            out = Fd(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
        } else {
            partial = inv.file + ".partial-" + std::to_string(::getpid());
            out = Fd(::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        }
        if (!out)
            return report(
                { Error::from_errno(errno, "cannot create '" + (partial.empty() ? inv.file : partial) + "'"),
                    op });
        Shown shown { "Exporting " + inv.name, shared_file(out.get(), false) }; // the writer's offset
        auto request = client.control().exportRequest();
        request.setName(inv.name);
        request.setOut(ipc::wrap_fd(std::move(out)));
        request.setCompression(
            compression_name(inv.file == "-" ? TarCompression::none : compression_for(inv.file)));
        request.initTarget().setUid(inv.uid);
        int code = finish(client, request.send(), op, &shown);
        if (partial.empty())
            return code;
        if (code == 0 && ::rename(partial.c_str(), inv.file.c_str()) != 0)
            code = report(
                { Error::from_errno(errno, "cannot rename '" + partial + "' to '" + inv.file + "'"), op });
        if (code != 0)
            ::unlink(partial.c_str());
        return code;
    }

    int do_list(Client& client, const Invocation& inv)
    {
        auto request = client.control().listRequest();
        request.initTarget().setUid(inv.uid);
        request.setAll(inv.all);
        auto reply = wait_for(client, request.send(), "list");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ListDistributions" });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        nlohmann::json out = nlohmann::json::array();
        for (auto d : reply->getDistros()) {
            if (!inv.running || d.getRunning())
                out.push_back(distro_json(d));
        }
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::printf("  %-20s %-10s %-10s %s\n", "NAME", "STATE", "FLAVOR", "VERSION");
        for (const auto& d : out) {
            std::printf("%s %-20s %-10s %-10s %s\n", d["default"].get<bool>() ? "*" : " ",
                d["name"].get<std::string>().c_str(), d["running"].get<bool>() ? "Running" : "Stopped",
                d["flavor"].get<std::string>().c_str(), d["version"].get<std::string>().c_str());
        }
        return 0;
    }

    nlohmann::json status_json(proto::ServiceStatus::Reader s)
    {
        nlohmann::json out = { { "version", s.getVersion().cStr() }, { "pid", s.getPid() },
            { "sessions", nlohmann::json::array() }, { "distributions", nlohmann::json::array() },
            { "plugins", nlohmann::json::array() } };
        for (auto p : s.getPlugins())
            out["plugins"].push_back({ { "name", p.getName().cStr() }, { "path", p.getPath().cStr() },
                { "isolation", p.getIsolation().cStr() }, { "pid", p.getPid() },
                { "state", p.getState().cStr() }, { "cause", p.getCause().cStr() } });
        for (auto session : s.getSessions()) {
            nlohmann::json running = nlohmann::json::array();
            for (auto name : session.getRunningDistros())
                running.push_back(name.cStr());
            out["sessions"].push_back({ { "session_id", session.getSessionId() }, { "uid", session.getUid() },
                { "user_name", session.getUserName().cStr() }, { "vm_running", session.getVmRunning() },
                { "vm_init_pid", session.getVmInitPid() }, { "host_network", session.getHostNetwork() },
                { "network",
                    session.getNetwork().size()    ? session.getNetwork().cStr()
                        : session.getHostNetwork() ? "host"
                                                   : "none" },
                { "network_problem", session.getNetworkProblem().cStr() },
                { "idle_timeout_s", session.getIdleTimeoutS() }, { "init", session.getCustomInit().cStr() },
                { "custom_config_flags", session.getCustomConfigFlags() },
                { "running_distributions", running } });
        }
        for (auto d : s.getDistributions())
            out["distributions"].push_back(distro_json(d));
        auto limits = s.getVmLimits();
        out["vm_limits"] = { { "pids_max", limits.getPidsMax() }, { "memory_max", limits.getMemoryMax() },
            { "pids", limits.getPids().cStr() }, { "memory", limits.getMemory().cStr() } };
        return out;
    }

    int do_status(Client& client, const Invocation& inv)
    {
        auto reply = wait_for(client, client.control().statusRequest().send(), "status");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/Status" });
        auto out = status_json(reply->getStatus());
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::cout << "Bulkhead service " << out["version"].get<std::string>() << " (pid " << out["pid"]
                  << ")\n";
        const auto& limits = out["vm_limits"];
        std::cout << "VM limits: pids.max " << limits["pids_max"] << " (" << limits["pids"].get<std::string>()
                  << "), memory " << limits["memory_max"] << " bytes (" << limits["memory"].get<std::string>()
                  << ")\n";
        for (const auto& s : out["sessions"]) {
            std::cout << "Session " << s["session_id"] << ": uid " << s["uid"] << " ("
                      << s["user_name"].get<std::string>() << "), VM "
                      << (s["vm_running"].get<bool>() ? "running, init pid " + s["vm_init_pid"].dump()
                                                      : "stopped")
                      << ", running distributions: " << s["running_distributions"].size() << ", network "
                      << s["network"].get<std::string>();
            if (!s["network_problem"].get<std::string>().empty())
                std::cout << " (unavailable: " << s["network_problem"].get<std::string>() << ")";
            std::cout << "\n";
        }
        for (const auto& d : out["distributions"]) {
            std::cout << "Distribution " << d["name"].get<std::string>() << " ("
                      << d["uuid"].get<std::string>()
                      << "): " << (d["running"].get<bool>() ? "running" : "stopped") << "\n";
        }
        for (const auto& p : out["plugins"]) {
            std::cout << "Plugin " << p["name"].get<std::string>() << ": " << p["state"].get<std::string>()
                      << " (" << p["isolation"].get<std::string>();
            if (p["pid"].get<int>() > 0)
                std::cout << ", host pid " << p["pid"];
            std::cout << ") " << p["path"].get<std::string>();
            if (!p["cause"].get<std::string>().empty())
                std::cout << ": " << p["cause"].get<std::string>();
            std::cout << "\n";
        }
        std::cout << std::flush;
        return 0;
    }

    nlohmann::json container_session_json(proto::ContainerSessionInfo::Reader s)
    {
        return { { "session_id", s.getSessionId() }, { "name", s.getName().cStr() }, { "uid", s.getUid() },
            { "user_name", s.getUserName().cStr() }, { "application_pid", s.getApplicationPid() },
            { "storage", s.getStorage().cStr() }, { "memory_mb", s.getMemoryMb() },
            { "cpus", s.getCpuMillis() / 1000.0 },
            { "network",
                s.getNetwork().size()    ? s.getNetwork().cStr()
                    : s.getHostNetwork() ? "host"
                                         : "none" },
            { "idle_timeout_s", s.getIdleTimeoutS() }, { "vm_state", s.getVmState().cStr() },
            { "vm_init_pid", s.getVmInitPid() } };
    }

    void print_container_session(const nlohmann::json& s)
    {
        std::cout << "Container session '" << s["name"].get<std::string>() << "' (id " << s["session_id"]
                  << "): uid " << s["uid"] << " (" << s["user_name"].get<std::string>() << "), VM "
                  << s["vm_state"].get<std::string>();
        if (s["vm_init_pid"].get<int>() > 0)
            std::cout << " (init pid " << s["vm_init_pid"] << ")";
        std::cout << ", storage "
                  << (s["storage"].get<std::string>().empty() ? std::string("tmpfs")
                                                              : s["storage"].get<std::string>())
                  << ", network " << s["network"].get<std::string>() << std::endl;
    }

    // "1", "0.5", "2.25": thousandths of a CPU, or an error saying what is wrong.
    Result<uint32_t> parse_cpus(const std::string& text)
    {
        if (text.empty())
            return 0u;
        char* end = nullptr;
        errno = 0;
        double cpus = std::strtod(text.c_str(), &end);
        if (errno != 0 || end == text.c_str() || *end != '\0' || !(cpus >= 0.001) || cpus > 1024)
            return Error { -EINVAL,
                "invalid --cpus '" + text + "': use a number of CPUs from 0.001 to 1024" };
        return static_cast<uint32_t>(cpus * 1000 + 0.5);
    }

    int do_container_create(Client& client, const Invocation& inv)
    {
        const std::string op = "Bulkhead/Cli/CreateContainerSession";
        auto cpus = parse_cpus(inv.cpus);
        if (!cpus)
            return report({ cpus.take_error(), op });
        if (inv.memory_mb < 0 || inv.memory_mb > (1LL << 30))
            return report({ Error { -EINVAL,
                                "invalid --memory " + std::to_string(inv.memory_mb)
                                    + ": use a number of megabytes from 16" },
                op });
        if (inv.idle_timeout_s < 0 || inv.idle_timeout_s > 86400 * 365)
            return report(
                { Error { -EINVAL, "invalid --idle-timeout " + std::to_string(inv.idle_timeout_s) }, op });
        if (inv.network != "none" && inv.network != "nat" && inv.network != "host")
            return report(
                { Error { -EINVAL, "invalid --network '" + inv.network + "': use none, nat or host" }, op });
        auto request = client.control().containerSessionCreateRequest();
        request.setName(inv.name);
        auto settings = request.initSettings();
        if (!inv.storage.empty()) {
            if (inv.storage.front() != '/')
                return report(
                    { Error { -EINVAL, "the storage folder '" + inv.storage + "' is not an absolute path" },
                        op });
            // Opened, and checked writable, with the user's own rights.
            Fd dir(::open(inv.storage.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!dir)
                return report(
                    { Error::from_errno(errno, "cannot open the storage folder '" + inv.storage + "'"), op });
            if (::access(inv.storage.c_str(), W_OK) < 0)
                return report(
                    { Error::from_errno(errno, "cannot write in the storage folder '" + inv.storage + "'"),
                        op });
            settings.setStorage(ipc::wrap_fd(std::move(dir)));
            settings.setStoragePath(inv.storage);
        }
        settings.setMemoryMb(static_cast<uint64_t>(inv.memory_mb));
        settings.setCpuMillis(cpus.value());
        settings.setHostNetwork(inv.network == "host");
        settings.setNetwork(inv.network);
        settings.setIdleTimeoutS(static_cast<uint32_t>(inv.idle_timeout_s));
        request.setExclusive(inv.exclusive);
        request.setStartVm(inv.start_vm);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container session create");
        if (!reply)
            return report({ reply.take_error(), op });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        auto out = container_session_json(reply->getSession());
        out["created"] = reply->getCreated();
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::cout << (reply->getCreated() ? "Created" : "Opened") << " container session '"
                  << out["name"].get<std::string>() << "' (id " << out["session_id"] << ")" << std::endl;
        return 0;
    }

    int do_container_list(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerSessionListRequest();
        request.initTarget().setUid(inv.uid);
        request.setAll(inv.all);
        auto reply = wait_for(client, request.send(), "container session list");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ListContainerSessions" });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        nlohmann::json out = nlohmann::json::array();
        for (auto s : reply->getSessions())
            out.push_back(container_session_json(s));
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::printf("%-6s %-24s %-8s %-9s %s\n", "ID", "NAME", "UID", "VM", "STORAGE");
        for (const auto& s : out)
            std::printf("%-6u %-24s %-8u %-9s %s\n", s["session_id"].get<unsigned>(),
                s["name"].get<std::string>().c_str(), s["uid"].get<unsigned>(),
                s["vm_state"].get<std::string>().c_str(),
                s["storage"].get<std::string>().empty() ? "tmpfs" : s["storage"].get<std::string>().c_str());
        return 0;
    }

    int do_container_show(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerSessionShowRequest();
        request.setName(inv.name);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container session show");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ShowContainerSession" });
        Status status = ipc::to_status(reply->getOutcome());
        if (!status)
            return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
        auto out = container_session_json(reply->getSession());
        if (inv.json)
            std::cout << out.dump(2) << std::endl;
        else
            print_container_session(out);
        return 0;
    }

    int do_container_exec(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerSessionExecRequest();
        request.setName(inv.name);
        auto argv = request.initArgv(inv.argv.size());
        for (size_t i = 0; i < inv.argv.size(); ++i)
            argv.set(i, inv.argv[i]);
        auto env = request.initEnv(inv.env.size());
        for (size_t i = 0; i < inv.env.size(); ++i)
            env.set(i, inv.env[i]);
        request.setStdin(ipc::wrap_fd(Fd(fcntl(0, F_DUPFD_CLOEXEC, 3))));
        request.setStdout(ipc::wrap_fd(Fd(fcntl(1, F_DUPFD_CLOEXEC, 3))));
        request.setStderr(ipc::wrap_fd(Fd(fcntl(2, F_DUPFD_CLOEXEC, 3))));
        request.setDetach(inv.detach);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container session exec");
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ExecInContainerSession" });
        int code = program_exit(reply->getOutcome(), reply->getWaitStatus());
        return inv.detach && code == 0 ? 0 : code;
    }

    int do_container_idle(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerSessionIdleRequest();
        request.setName(inv.name);
        request.initTarget().setUid(inv.uid);
        return answered(client, request.send(), "container session idle", "Bulkhead/Cli/IdleContainerSession",
            [](auto& reply) {
                std::cout << (reply.getWasIdle() ? "The VM was already idle" : "The VM was stopped")
                          << std::endl;
                return 0;
            });
    }

    // --- images and containers -----------------------------------------------------------------

    // The default session is made on first use (network none, no storage), as a tool would;
    // another session must exist.
    Status open_session(Client& client, const Invocation& inv)
    {
        if (inv.session != "bulkhead-cli")
            return {};
        auto request = client.control().containerSessionCreateRequest();
        request.setName(inv.session);
        request.initSettings();
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container session create");
        if (!reply)
            return reply.take_error();
        return ipc::to_status(reply->getOutcome());
    }

    // Runs `send` (a request made with the session filled in) once the session is open; the
    // reply, or 0 after printing its error.
    template<typename Reply> int json_reply(Reply& reply, nlohmann::json& out)
    {
        Status status = ipc::to_status(reply.getOutcome());
        if (!status)
            return report({ status.take_error(), reply.getOutcome().getOperation().cStr() });
        out = nlohmann::json::parse(std::string(reply.getJson().cStr()), nullptr, false);
        if (out.is_discarded())
            return report({ Error { -EPROTO, "the service sent invalid JSON" }, "Bulkhead/Cli/ReadReply" });
        return 0;
    }

    // Sends a request whose reply carries JSON, and parses it into `out`: 0, or the exit code
    // after printing the error.
    template<typename Request>
    int json_call(Client& client, Request& request, const char* what, const char* op, nlohmann::json& out,
        const Shown* shown = nullptr)
    {
        auto reply = wait_showing(client, request.send(), what, shown);
        if (!reply)
            return report({ reply.take_error(), op });
        return json_reply(*reply, out);
    }

    std::string short_id(const std::string& id)
    {
        std::string hex = id.rfind("sha256:", 0) == 0 ? id.substr(7) : id;
        return hex.substr(0, 12);
    }

    Result<int> parse_signal(const std::string& text)
    {
        static const std::pair<const char*, int> names[] = { { "HUP", SIGHUP }, { "INT", SIGINT },
            { "QUIT", SIGQUIT }, { "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 },
            { "TERM", SIGTERM }, { "STOP", SIGSTOP }, { "CONT", SIGCONT } };
        std::string name = text.rfind("SIG", 0) == 0 ? text.substr(3) : text;
        for (auto& [n, number] : names) {
            if (name == n)
                return number;
        }
        if (!name.empty() && name.size() <= 2 && name.find_first_not_of("0123456789") == std::string::npos) {
            int number = std::stoi(name);
            if (number >= 1 && number <= 64)
                return number;
        }
        return Error { -EINVAL, "unknown signal '" + text + "'" };
    }

    // load and import: the archive opened here, with this user's rights, and sent to the service;
    // its reply's images in `out` (0), or the exit code after printing the error.
    int send_archive(Client& client, const Invocation& inv, bool import, nlohmann::json& out)
    {
        const char* op = import ? "Bulkhead/Cli/ImportImage" : "Bulkhead/Cli/LoadImage";
        if (Status open = open_session(client, inv); !open)
            return report({ open.take_error(), "Bulkhead/Cli/OpenContainerSession" });
        Fd archive(::open(inv.file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (!archive)
            return report({ Error::from_errno(errno, "cannot open the archive " + inv.file), op });
        // An import is read twice in the VM: checked, then added as a layer.
        Shown shown { (import ? "Importing " : "Loading ") + inv.file,
            reopened_file(archive.get(), tools_uid(inv)) };
        if (import) {
            auto request = client.control().containerImageImportRequest();
            request.setSession(inv.session);
            request.setArchive(ipc::wrap_fd(std::move(archive)));
            request.setReference(inv.reference);
            request.initTarget().setUid(inv.uid);
            return json_call(client, request, "image import", op, out, &shown);
        }
        auto request = client.control().containerImageLoadRequest();
        request.setSession(inv.session);
        request.setArchive(ipc::wrap_fd(std::move(archive)));
        request.initTarget().setUid(inv.uid);
        return json_call(client, request, "image load", op, out, &shown);
    }

    int do_image_load(Client& client, const Invocation& inv)
    {
        nlohmann::json out;
        if (int code = send_archive(client, inv, false, out))
            return code;
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        for (auto& image : out) {
            std::string tag = image.value("Tag", "");
            if (tag.empty())
                std::cout << "Loaded image ID: " << image.value("Id", "") << std::endl;
            else
                std::cout << "Loaded image: " << tag << std::endl;
        }
        return 0;
    }

    int do_image_import(Client& client, const Invocation& inv)
    {
        nlohmann::json out;
        if (int code = send_archive(client, inv, true, out))
            return code;
        if (inv.json)
            std::cout << out.dump(2) << std::endl;
        else
            for (auto& image : out)
                std::cout << image.value("Id", "") << std::endl;
        return 0;
    }

    int do_image_list(Client& client, const Invocation& inv)
    {
        if (Status open = open_session(client, inv); !open)
            return report({ open.take_error(), "Bulkhead/Cli/OpenContainerSession" });
        auto request = client.control().containerImageListRequest();
        request.setSession(inv.session);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        if (int code = json_call(client, request, "image list", "Bulkhead/Cli/ListImages", out))
            return code;
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::printf("%-40s %-14s %-32s %s\n", "REFERENCE", "IMAGE ID", "CREATED", "SIZE");
        for (auto& image : out) {
            std::vector<std::string> tags;
            for (auto& tag : image["RepoTags"])
                tags.push_back(tag.get<std::string>());
            if (tags.empty())
                tags.push_back("<none>");
            for (auto& tag : tags)
                std::printf("%-40s %-14s %-32s %s\n", tag.c_str(), short_id(image.value("Id", "")).c_str(),
                    image.value("Created", "").c_str(), human_size(image.value("Size", uint64_t(0))).c_str());
        }
        return 0;
    }

    int do_image_inspect(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerImageInspectRequest();
        request.setSession(inv.session);
        request.setReference(inv.reference);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        if (int code = json_call(client, request, "image inspect", "Bulkhead/Cli/InspectImage", out))
            return code;
        std::cout << out.dump(2) << std::endl;
        return 0;
    }

    int do_image_remove(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerImageRemoveRequest();
        request.setSession(inv.session);
        request.setReference(inv.reference);
        request.setForce(inv.force);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        if (int code = json_call(client, request, "image rm", "Bulkhead/Cli/RemoveImage", out))
            return code;
        for (auto& step : out) {
            for (auto& [what, value] : step.items())
                std::cout << what << ": " << value.get<std::string>() << std::endl;
        }
        return 0;
    }

    int do_image_tag(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerImageTagRequest();
        request.setSession(inv.session);
        request.setSource(inv.reference);
        request.setReference(inv.target);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        return json_call(client, request, "image tag", "Bulkhead/Cli/TagImage", out);
    }

    int do_image_pull(Client& client, const Invocation& inv)
    {
        if (Status open = open_session(client, inv); !open)
            return report({ open.take_error(), "Bulkhead/Cli/OpenContainerSession" });
        auto request = client.control().containerImagePullRequest();
        request.setSession(inv.session);
        request.setReference(inv.reference);
        request.setInsecure(inv.insecure);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        Shown shown { "Pulling " + inv.reference };
        if (int code = json_call(client, request, "image pull", "Bulkhead/Cli/PullImage", out, &shown))
            return code;
        for (auto& image : out)
            std::cout << "Pulled image: " << image.value("Tag", "") << " (" << image.value("Id", "") << ")"
                      << std::endl;
        return 0;
    }

    int do_image_push(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerImagePushRequest();
        request.setSession(inv.session);
        request.setReference(inv.reference);
        request.setInsecure(inv.insecure);
        request.initTarget().setUid(inv.uid);
        Shown shown { "Pushing " + inv.reference };
        return finish(client, request.send(), "Bulkhead/Cli/PushImage", &shown);
    }

    // A container's process gets this process's stdio (stdin only when `interactive`, else
    // /dev/null); with a terminal, which is the process's own then, crun gets /dev/null and our
    // stderr, for its errors.
    template<typename Request> void set_container_stdio(Request& request, bool interactive, bool terminal)
    {
        Fd in = interactive && !terminal ? Fd(fcntl(0, F_DUPFD_CLOEXEC, 3))
                                         : Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        request.setStdin(ipc::wrap_fd(std::move(in)));
        request.setStdout(ipc::wrap_fd(Fd(fcntl(terminal ? 2 : 1, F_DUPFD_CLOEXEC, 3))));
        request.setStderr(ipc::wrap_fd(Fd(fcntl(2, F_DUPFD_CLOEXEC, 3))));
    }

    int do_container_exec_in(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerExecRequest();
        request.setSession(inv.session);
        request.setContainer(inv.reference);
        auto command = request.initCommand(inv.argv.size());
        for (size_t i = 0; i < inv.argv.size(); ++i)
            command.set(i, inv.argv[i]);
        std::shared_ptr<TerminalSide> terminal_side;
        if (inv.tty)
            terminal_side = request_terminal(client, request.initTerminal());
        set_container_stdio(request, inv.interactive, inv.tty);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container exec");
        finish_terminal(terminal_side);
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/ExecInContainer" });
        return program_exit(reply->getOutcome(), reply->getWaitStatus());
    }

    int do_container_logs(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerLogsRequest();
        request.setSession(inv.session);
        request.setContainer(inv.reference);
        request.setStdout(ipc::wrap_fd(Fd(fcntl(1, F_DUPFD_CLOEXEC, 3))));
        request.setFollow(inv.follow);
        request.initTarget().setUid(inv.uid);
        return finish(client, request.send(), "Bulkhead/Cli/ContainerLogs");
    }

    // A volume's host folder, opened with this user's rights (the service binds what we opened).
    Result<Fd> open_volume_folder(const std::string& host)
    {
        Fd folder(::open(host.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!folder)
            return Error::from_errno(errno, "cannot open the volume's folder " + host);
        return folder;
    }

    int do_container_run(Client& client, const Invocation& inv)
    {
        if (inv.network != "none" && inv.network != "host")
            return report({ Error { -EINVAL, "--network must be none or host, not '" + inv.network + "'" },
                "Bulkhead/Cli/RunContainer" });
        if (Status open = open_session(client, inv); !open)
            return report({ open.take_error(), "Bulkhead/Cli/OpenContainerSession" });
        auto request = client.control().containerRunRequest();
        request.setSession(inv.session);
        auto spec = request.initSpec();
        spec.setImage(inv.reference);
        spec.setName(inv.container_name);
        auto command = spec.initCommand(inv.argv.size());
        for (size_t i = 0; i < inv.argv.size(); ++i)
            command.set(i, inv.argv[i]);
        auto env = spec.initEnv(inv.env.size());
        for (size_t i = 0; i < inv.env.size(); ++i)
            env.set(i, inv.env[i]);
        spec.setNetworkNone(inv.network == "none");
        spec.setDetach(inv.detach);
        spec.setRemove(inv.remove);
        spec.setCreateOnly(inv.create_only);
        // -v HOST:CONTAINER[:ro|:rw]: each folder opened here, with this user's rights.
        auto volumes = spec.initVolumes(inv.volumes.size());
        for (size_t i = 0; i < inv.volumes.size(); ++i) {
            const std::string& text = inv.volumes[i];
            size_t first = text.find(':');
            size_t second = first == std::string::npos ? first : text.find(':', first + 1);
            std::string host = text.substr(0, first);
            std::string inside = first == std::string::npos ? "" : text.substr(first + 1, second - first - 1);
            std::string mode = second == std::string::npos ? "rw" : text.substr(second + 1);
            if (host.empty() || host[0] != '/' || inside.empty() || (mode != "ro" && mode != "rw"))
                return report({ Error { -EINVAL,
                                    "invalid volume '" + text + "': use /HOST/FOLDER:/CONTAINER/PATH[:ro]" },
                    "Bulkhead/Cli/RunContainer" });
            auto folder = open_volume_folder(host);
            if (!folder)
                return report({ folder.take_error(), "Bulkhead/Cli/RunContainer" });
            volumes[i].setFolder(ipc::wrap_fd(std::move(folder.value())));
            volumes[i].setHostPath(host);
            volumes[i].setContainerPath(inside);
            volumes[i].setReadOnly(mode == "ro");
        }
        std::shared_ptr<TerminalSide> terminal_side;
        if (inv.tty && inv.detach)
            return report({ Error { -EINVAL,
                                "-t gives the container this terminal: it cannot go with -d (nothing would "
                                "attach to it later)" },
                "Bulkhead/Cli/RunContainer" });
        if (inv.tty)
            terminal_side = request_terminal(client, request.initTerminal());
        if (!inv.detach)
            set_container_stdio(request, true, inv.tty);
        request.initTarget().setUid(inv.uid);
        auto reply = wait_for(client, request.send(), "container run");
        finish_terminal(terminal_side);
        if (!reply)
            return report({ reply.take_error(), "Bulkhead/Cli/RunContainer" });
        if (inv.detach) {
            Status status = ipc::to_status(reply->getOutcome());
            if (!status)
                return report({ status.take_error(), reply->getOutcome().getOperation().cStr() });
            std::cout << reply->getId().cStr() << std::endl;
            return 0;
        }
        return program_exit(reply->getOutcome(), reply->getWaitStatus());
    }

    int do_container_ls(Client& client, const Invocation& inv)
    {
        if (Status open = open_session(client, inv); !open)
            return report({ open.take_error(), "Bulkhead/Cli/OpenContainerSession" });
        auto request = client.control().containerListRequest();
        request.setSession(inv.session);
        request.setAll(inv.all);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        if (int code = json_call(client, request, "container ls", "Bulkhead/Cli/ListContainers", out))
            return code;
        if (inv.json) {
            std::cout << out.dump(2) << std::endl;
            return 0;
        }
        std::printf("%-14s %-24s %-24s %-10s %s\n", "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAME");
        for (auto& c : out) {
            std::string command;
            for (const char* part : { "Entrypoint", "Cmd" }) {
                if (c["Config"][part].is_array())
                    for (auto& arg : c["Config"][part])
                        command += (command.empty() ? "" : " ") + arg.get<std::string>();
            }
            if (command.size() > 22)
                command = command.substr(0, 21) + "…";
            std::string status = c["State"].value("Status", "");
            if (status == "exited")
                status += " (" + std::to_string(c["State"].value("ExitCode", 0)) + ")";
            std::printf("%-14s %-24s %-24s %-10s %s\n", short_id(c.value("Id", "")).c_str(),
                c.value("Image", "").c_str(), ("\"" + command + "\"").c_str(), status.c_str(),
                c.value("Name", "").c_str());
        }
        return 0;
    }

    int do_container_inspect(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerInspectRequest();
        request.setSession(inv.session);
        request.setContainer(inv.reference);
        request.initTarget().setUid(inv.uid);
        nlohmann::json out;
        if (int code = json_call(client, request, "container inspect", "Bulkhead/Cli/InspectContainer", out))
            return code;
        std::cout << out.dump(2) << std::endl;
        return 0;
    }

    // stop (--time) and kill: the signal, then for stop the wait and SIGKILL.
    int do_container_stop(Client& client, const Invocation& inv, bool kill)
    {
        const char* op = kill ? "Bulkhead/Cli/KillContainer" : "Bulkhead/Cli/StopContainer";
        auto signal = parse_signal(inv.signal.empty() ? (kill ? "KILL" : "TERM") : inv.signal);
        if (!signal)
            return report({ signal.take_error(), op });
        if (!kill && (inv.time_s < 0 || inv.time_s > 3600))
            return report({ Error { -EINVAL, "--time must be 0 to 3600 seconds" }, op });
        auto request = client.control().containerStopRequest();
        request.setSession(inv.session);
        request.setContainer(inv.reference);
        request.setSignal(signal.value());
        // stop --time 0 is an immediate SIGKILL after the signal.
        // stop --time 0 is kill's SIGKILL.
        bool at_once = kill || inv.time_s == 0;
        request.setTimeoutS(at_once ? 0 : inv.time_s);
        if (!kill && at_once)
            request.setSignal(SIGKILL);
        request.initTarget().setUid(inv.uid);
        int code = finish(client, request.send(), op);
        if (code == 0)
            std::cout << inv.reference << std::endl;
        return code;
    }

    int do_container_rm(Client& client, const Invocation& inv)
    {
        auto request = client.control().containerRemoveRequest();
        request.setSession(inv.session);
        request.setContainer(inv.reference);
        request.setForce(inv.force);
        request.initTarget().setUid(inv.uid);
        int code = finish(client, request.send(), "Bulkhead/Cli/RemoveContainer");
        if (code == 0)
            std::cout << inv.reference << std::endl;
        return code;
    }

    void add_image_and_container_commands(
        CLI::App* container, Invocation& inv, std::function<int(Client&)>& run)
    {
        auto session_option = [&inv](CLI::App* command) {
            command->add_option(
                "-s,--session", inv.session, "Container session (default: bulkhead-cli, made on first use)");
        };
        auto on = [&run, &inv](CLI::App* command, int (*body)(Client&, const Invocation&)) {
            command->callback(
                [&run, &inv, body]() { run = [&inv, body](Client& client) { return body(client, inv); }; });
        };
        auto* image = container->add_subcommand(
            "image", "Images of a container session: load, import, pull, push, tag, list, inspect, remove");
        image->require_subcommand(1);
        auto* load
            = image->add_subcommand("load", "Load the images of a docker-archive (docker save's format)");
        load->add_option("file", inv.file, "The archive")->required();
        session_option(load);
        load->add_flag("--json", inv.json, "Machine-readable output");
        on(load, do_image_load);
        auto* import = image->add_subcommand(
            "import", "Make a one-layer image of a root filesystem tar (plain, .gz, .xz or .zst)");
        import->add_option("file", inv.file, "The tar")->required();
        import->add_option("reference", inv.reference, "The new image's name[:tag]")->required();
        session_option(import);
        import->add_flag("--json", inv.json, "Machine-readable output");
        on(import, do_image_import);
        auto* ls = image->add_subcommand("ls", "List the session's images");
        ls->alias("list");
        session_option(ls);
        ls->add_flag("--json", inv.json, "Machine-readable output: the objects plugins get");
        on(ls, do_image_list);
        auto* inspect = image->add_subcommand("inspect", "Show an image as JSON (the object plugins get)");
        inspect->add_option("reference", inv.reference, "Reference (name[:tag]) or image id")->required();
        session_option(inspect);
        on(inspect, do_image_inspect);
        auto* rm = image->add_subcommand("rm", "Remove a tag, and the image with its last one");
        rm->add_option("reference", inv.reference, "Reference (name[:tag]) or image id")->required();
        rm->add_flag("-f,--force", inv.force, "Also when stopped containers use it");
        session_option(rm);
        on(rm, do_image_remove);

        auto* tag = image->add_subcommand("tag", "Give an image another reference (fires no hook)");
        tag->add_option("source", inv.reference, "Reference or image id")->required();
        tag->add_option("reference", inv.target, "The new reference")->required();
        session_option(tag);
        on(tag, do_image_tag);
        auto* pull = image->add_subcommand("pull", "Pull an image from a registry");
        pull->add_option("reference", inv.reference, "registry/name[:tag]")->required();
        pull->add_flag(
            "--insecure", inv.insecure, "Plain HTTP: only for a registry on the session's loopback");
        session_option(pull);
        on(pull, do_image_pull);
        auto* push = image->add_subcommand("push", "Push an image to a registry");
        push->add_option("reference", inv.reference, "registry/name[:tag], a reference of the image")
            ->required();
        push->add_flag(
            "--insecure", inv.insecure, "Plain HTTP: only for a registry on the session's loopback");
        session_option(push);
        on(push, do_image_push);

        // run and create: what a container is made of.
        auto container_options = [&](CLI::App* command, bool create) {
            command->add_option("--name", inv.container_name, "Its name (default: the start of its id)");
            command->add_option("-v,--volume", inv.volumes, "HOST-FOLDER:CONTAINER-PATH[:ro] bound into it")
                ->allow_extra_args(false);
            command->add_option("-e,--env", inv.env, "K=V added to its environment")->allow_extra_args(false);
            command->add_option(
                "--network", inv.network, "none (default: loopback only) or host (the session VM's)");
            session_option(command);
            command
                ->add_option("image", inv.reference,
                    "Image reference or id, then COMMAND [ARGS...] (default: the image's)")
                ->required();
            // Everything after the image is the container's command, options included (sh -c ...).
            command->prefix_command();
            command->callback([&run, &inv, command, create]() {
                inv.argv = command->remaining();
                if (create)
                    inv.detach = inv.create_only = true;
                run = [&inv](Client& client) { return do_container_run(client, inv); };
            });
        };
        auto* run_cmd = container->add_subcommand("run", "Run a container from an image");
        run_cmd->add_flag("-d,--detach", inv.detach, "Start it and print its id; its output goes to its log");
        run_cmd->add_flag("--rm", inv.remove, "Remove it once it ended");
        run_cmd->add_flag("-t,--tty", inv.tty,
            "Give it a pseudo-terminal of its own as its console, relayed to this terminal (stdin included)");
        run_cmd->add_flag("-i,--interactive", inv.interactive,
            "Connect stdin (it always is without -d; accepted as docker's -i)");
        container_options(run_cmd, false);
        auto* create
            = container->add_subcommand("create", "Create a container from an image, to start later");
        container_options(create, true);
        auto* start = container->add_subcommand(
            "start", "Start a created container, or an exited one again (its output goes to its log)");
        start->add_option("container", inv.reference, "Name or id")->required();
        session_option(start);
        start->callback([&run, &inv]() {
            run = [&inv](Client& client) {
                // Its volumes' folders, opened again with this user's rights, for a container
                // whose volumes went with its end.
                auto inspect = client.control().containerInspectRequest();
                inspect.setSession(inv.session);
                inspect.setContainer(inv.reference);
                inspect.initTarget().setUid(inv.uid);
                nlohmann::json container;
                if (int code = json_call(
                        client, inspect, "container inspect", "Bulkhead/Cli/StartContainer", container))
                    return code;
                auto request = client.control().containerStartRequest();
                request.setSession(inv.session);
                request.setContainer(inv.reference);
                request.initTarget().setUid(inv.uid);
                // Only for our own: another user's folders are theirs to open (the service refuses).
                const nlohmann::json& mounts = container["Mounts"];
                bool own = inv.uid < 0 || static_cast<uid_t>(inv.uid) == ::getuid();
                auto volumes = request.initVolumes(own && mounts.is_array() ? mounts.size() : 0);
                for (size_t i = 0; i < volumes.size(); ++i) {
                    std::string host = mounts[i].value("Source", "");
                    auto folder = open_volume_folder(host);
                    if (!folder)
                        return report({ folder.take_error(), "Bulkhead/Cli/StartContainer" });
                    volumes[i].setFolder(ipc::wrap_fd(std::move(folder.value())));
                    volumes[i].setHostPath(host);
                    volumes[i].setContainerPath(mounts[i].value("Destination", ""));
                    volumes[i].setReadOnly(!mounts[i].value("RW", true));
                }
                int code = finish(client, request.send(), "Bulkhead/Cli/StartContainer");
                if (code == 0)
                    std::cout << inv.reference << std::endl;
                return code;
            };
        });
        auto* cls = container->add_subcommand("ls", "List the session's containers");
        cls->alias("list");
        cls->add_flag("-a,--all", inv.all, "Also those that exited");
        cls->add_flag("--json", inv.json, "Machine-readable output: the objects plugins get");
        session_option(cls);
        on(cls, do_container_ls);
        auto* cinspect
            = container->add_subcommand("inspect", "Show a container as JSON (the object plugins get)");
        cinspect->add_option("container", inv.reference, "Name or id")->required();
        session_option(cinspect);
        on(cinspect, do_container_inspect);
        auto* stop
            = container->add_subcommand("stop", "Stop a container: its signal, then SIGKILL after --time");
        stop->add_option("container", inv.reference, "Name or id")->required();
        stop->add_option("--signal", inv.signal, "Signal to send first (default TERM)");
        stop->add_option("-t,--time", inv.time_s, "Seconds to wait before SIGKILL (default 10)");
        session_option(stop);
        stop->callback([&run, &inv]() {
            run = [&inv](Client& client) { return do_container_stop(client, inv, false); };
        });
        auto* kill = container->add_subcommand("kill", "Send a container's process a signal (default KILL)");
        kill->add_option("container", inv.reference, "Name or id")->required();
        kill->add_option("--signal", inv.signal, "Signal (default KILL)");
        session_option(kill);
        kill->callback([&run, &inv]() {
            run = [&inv](Client& client) { return do_container_stop(client, inv, true); };
        });
        auto* cexec = container->add_subcommand("exec", "Run a program in a running container");
        cexec->add_flag("-i,--interactive", inv.interactive, "Connect stdin (otherwise /dev/null)");
        cexec->add_flag("-t,--tty", inv.tty,
            "Give the program a pseudo-terminal of its own, relayed to this terminal (stdin included)");
        session_option(cexec);
        cexec->add_option("container", inv.reference, "Name or id, then PROGRAM [ARGS...]")->required();
        cexec->prefix_command();
        cexec->callback([&run, &inv, cexec]() {
            inv.argv = cexec->remaining();
            run = [&inv](Client& client) { return do_container_exec_in(client, inv); };
        });
        auto* logs = container->add_subcommand("logs", "Print what a detached container wrote");
        logs->add_option("container", inv.reference, "Name or id")->required();
        logs->add_flag("-f,--follow", inv.follow, "Then what it writes, until its process ends");
        session_option(logs);
        on(logs, do_container_logs);
        auto* crm = container->add_subcommand("rm", "Remove a container");
        crm->add_option("container", inv.reference, "Name or id")->required();
        crm->add_flag("-f,--force", inv.force, "Kill it first if it runs");
        session_option(crm);
        on(crm, do_container_rm);
    }

    void add_container_commands(CLI::App& app, Invocation& inv, std::function<int(Client&)>& run)
    {
        auto* container
            = app.add_subcommand("container", "Container sessions: named workspaces with a VM of their own");
        container->require_subcommand(1);
        auto* session = container->add_subcommand("session", "Create, use and end container sessions");
        session->require_subcommand(1);
        auto* create
            = session->add_subcommand("create", "Create a container session (or open the one of that name)");
        create->add_option("name", inv.name, "Session name: 1 to 64 of A-Z a-z 0-9 . _ -")->required();
        create->add_option(
            "--storage", inv.storage, "Absolute folder you can write: storage that survives the VM");
        create->add_option("--memory", inv.memory_mb, "Memory limit of the session's VM, in MB");
        create->add_option("--cpus", inv.cpus, "CPU limit of the session's VM (e.g. 1.5)");
        create->add_option("--network", inv.network, "none (default), nat (outbound through pasta) or host");
        create->add_option(
            "--idle-timeout", inv.idle_timeout_s, "Seconds before an idle storage-backed VM stops");
        create->add_flag("--start-vm", inv.start_vm, "Start the session's VM now");
        create->add_flag("--new", inv.exclusive, "Fail (EEXIST) if the session exists");
        create->add_flag("--json", inv.json, "Machine-readable output");
        create->callback(
            [&inv, &run]() { run = [&inv](Client& client) { return do_container_create(client, inv); }; });
        auto* list = session->add_subcommand("list", "List your container sessions");
        list->add_flag("--json", inv.json, "Machine-readable output");
        list->add_flag("--all", inv.all, "Every user's container sessions (root only)");
        list->callback(
            [&inv, &run]() { run = [&inv](Client& client) { return do_container_list(client, inv); }; });
        auto* show = session->add_subcommand("show", "Show one container session");
        show->add_option("name", inv.name, "Session name")->required();
        show->add_flag("--json", inv.json, "Machine-readable output");
        show->callback(
            [&inv, &run]() { run = [&inv](Client& client) { return do_container_show(client, inv); }; });
        auto* terminate
            = session->add_subcommand("terminate", "End a container session and everything it runs");
        terminate->add_option("name", inv.name, "Session name")->required();
        terminate->callback([&inv, &run]() {
            run = [&inv](Client& client) {
                auto request = client.control().containerSessionTerminateRequest();
                request.setName(inv.name);
                request.initTarget().setUid(inv.uid);
                return finish(client, request.send(), "Bulkhead/Cli/TerminateContainerSession");
            };
        });
        auto* exec = session->add_subcommand("exec", "Run a program in the session's VM with this terminal");
        exec->add_option("name", inv.name, "Session name")->required();
        exec->add_flag("--detach", inv.detach, "Start it and return; it runs until it exits or the VM stops");
        exec->add_option("-e,--env", inv.env, "K=V added to the program's environment")
            ->allow_extra_args(false);
        exec->add_option("command", inv.argv, "PROGRAM [ARGS...] (after --)")->required();
        exec->callback(
            [&inv, &run]() { run = [&inv](Client& client) { return do_container_exec(client, inv); }; });
        auto* idle
            = session->add_subcommand("idle", "Stop the session's VM as its idle timer would (root only)");
        idle->add_option("name", inv.name, "Session name")->required();
        idle->callback(
            [&inv, &run]() { run = [&inv](Client& client) { return do_container_idle(client, inv); }; });
        add_image_and_container_commands(container, inv, run);
    }

} // namespace

void add_commands(CLI::App& app, Invocation& inv, std::function<int(Client&)>& run)
{
    auto settings = std::make_shared<service::UserOverrides>();
    auto with_settings = [settings](auto body) {
        return [settings, body](Client& client) {
            auto overrides = user_overrides();
            if (!overrides)
                return report({ overrides.take_error(), "Bulkhead/Cli/ReadConfiguration" });
            return body(client, overrides.value());
        };
    };
    auto* reg
        = app.add_subcommand("register", "Register a distribution from a root directory or a tar archive");
    reg->add_option("name", inv.name, "Name of the new distribution")->required();
    auto* rootfs
        = reg->add_option("--rootfs", inv.rootfs, "A directory holding the distribution's root filesystem");
    auto* tar = reg->add_option("--tar", inv.tar, "A tar archive (any compression) of the root filesystem");
    auto* in_place = reg->add_option("--in-place", inv.in_place,
        "Root only: adopt this directory as the root filesystem, where it is (nothing is copied)");
    rootfs->excludes(tar);
    in_place->excludes(rootfs);
    in_place->excludes(tar);
    reg->add_option("--package", inv.package, "What the distribution was installed from (shown to plugins)");
    reg->callback([&inv, &run, reg]() {
        if (inv.rootfs.empty() && inv.tar.empty() && inv.in_place.empty())
            throw CLI::RequiredError("--rootfs, --tar or --in-place");
        (void)reg;
        run = [&inv](Client& client) { return do_register(client, inv); };
    });

    auto* install = app.add_subcommand(
        "install", "Build a Debian root filesystem with mmdebstrap and register it (as register does)");
    install
        ->add_option("distribution", inv.distribution, "debian, or debian:SUITE (default: the host's suite)")
        ->required();
    install->add_option(
        "--name", inv.name, "Name of the new distribution (default: debian, or debian-SUITE)");
    install->callback([&inv, &run]() { run = [&inv](Client& client) { return do_install(client, inv); }; });

    auto* unreg = app.add_subcommand("unregister", "Stop a distribution if it runs, and delete it");
    unreg->add_option("name", inv.name, "Distribution name")->required();
    unreg->add_flag(
        "--delete", inv.delete_in_place, "Also delete a folder registered --in-place (kept otherwise)");
    unreg->callback([&inv, &run]() {
        run = [&inv](Client& client) {
            auto request = client.control().unregisterRequest();
            request.setName(inv.name);
            request.setDeleteInPlace(inv.delete_in_place);
            request.initTarget().setUid(inv.uid);
            return finish(client, request.send(), "Bulkhead/Cli/UnregisterDistribution");
        };
    });

    auto* exp = app.add_subcommand("export", "Write a distribution's files to a tar archive");
    exp->add_option("name", inv.name, "Distribution name")->required();
    exp->add_option(
           "file", inv.file, "The archive to write (.gz, .xz, .zst compress it; - for standard output)")
        ->required();
    exp->callback([&inv, &run]() { run = [&inv](Client& client) { return do_export(client, inv); }; });

    auto* def = app.add_subcommand("set-default", "Make a distribution the default for 'run'");
    def->add_option("name", inv.name, "Distribution name")->required();
    def->callback([&inv, &run]() {
        run = [&inv](Client& client) {
            auto request = client.control().setDefaultRequest();
            request.setName(inv.name);
            request.initTarget().setUid(inv.uid);
            return finish(client, request.send(), "Bulkhead/Cli/SetDefaultDistribution");
        };
    });

    auto* start = app.add_subcommand("start", "Start a distribution (and the VM if needed)");
    start->add_option("name", inv.name, "Distribution name")->required();
    start->callback([&inv, &run, with_settings]() {
        run = with_settings([&inv](Client& client, const service::UserOverrides& overrides) {
            auto request = client.control().startRequest();
            request.setName(inv.name);
            fill_settings(request.initSettings(), overrides);
            request.initTarget().setUid(inv.uid);
            return finish(client, request.send(), "Bulkhead/Cli/StartDistribution");
        });
    });

    auto* runc = app.add_subcommand("run", "Run a program inside a distribution");
    runc->add_option("-d,--distribution", inv.distro, "Distribution (default: the default one)");
    runc->add_option("-u,--user", inv.user, "User inside the distribution (default: root)");
    auto* tty = runc->add_flag("-t,--tty", inv.tty,
        "Give the program a pseudo-terminal of the distribution (the default when stdin, stdout and stderr "
        "are "
        "terminals)");
    tty->excludes(runc->add_flag(
        "-T,--no-tty", inv.no_tty, "Give the program this process's stdin, stdout and stderr as they are"));
    runc->add_option(
        "--cd", inv.cwd, "Start in this directory of the distribution (default: the user's home)");
    runc->add_option("command", inv.argv, "PROGRAM [ARGS...] (after --; none: the user's login shell)");
    auto run_program = with_settings(
        [&inv](Client& client, const service::UserOverrides& o) { return do_run(client, inv, o); });
    runc->callback([&run, run_program]() { run = run_program; });
    // `bulkhead` alone: the login shell of the default distribution's default user.
    run = run_program;

    auto* term = app.add_subcommand("terminate", "Stop a running distribution");
    term->add_option("name", inv.name, "Distribution name")->required();
    term->callback([&inv, &run]() {
        run = [&inv](Client& client) {
            auto request = client.control().terminateRequest();
            request.setName(inv.name);
            request.initTarget().setUid(inv.uid);
            return finish(client, request.send(), "Bulkhead/Cli/TerminateDistribution");
        };
    });

    auto* shut = app.add_subcommand("shutdown", "Stop your VM and everything in it");
    shut->add_flag("--all", inv.all, "Stop every user's VM (root only)");
    shut->callback([&inv, &run]() {
        run = [&inv](Client& client) {
            auto request = client.control().shutdownRequest();
            request.setAll(inv.all);
            request.initTarget().setUid(inv.uid);
            return finish(client, request.send(), "Bulkhead/Cli/Shutdown");
        };
    });

    auto* list = app.add_subcommand("list", "List your distributions");
    list->add_flag("--running", inv.running, "Only running ones");
    list->add_flag("--json", inv.json, "Machine-readable output");
    list->add_flag("--all", inv.all, "Every user's distributions (root only)");
    list->callback([&inv, &run]() { run = [&inv](Client& client) { return do_list(client, inv); }; });

    auto* status = app.add_subcommand("status", "Show the service, sessions, VMs and distributions");
    status->add_flag("--json", inv.json, "Machine-readable output");
    status->callback([&inv, &run]() { run = [&inv](Client& client) { return do_status(client, inv); }; });

    auto* vm
        = app.add_subcommand("vm", "The VM operations plugins use, for administrators and plugin authors");
    vm->require_subcommand(1);
    auto* mount = vm->add_subcommand("mount", "Mount a host folder into your running VM's root namespace");
    mount->add_option("host-folder", inv.host_dir, "Host folder")->required();
    mount->add_option("vm-path", inv.vm_path, "Absolute path in the VM (created if missing)")->required();
    mount->add_flag("--read-only", inv.read_only, "Mount read-only");
    mount->add_option("--name", inv.name, "Name to record the mount under");
    mount->callback([&inv, &run]() { run = [&inv](Client& client) { return do_vm_mount(client, inv); }; });
    auto* exec = vm->add_subcommand(
        "exec", "Run a program in your running VM; its stdin/stdout are this terminal's");
    exec->add_option("-d,--distribution", inv.distro, "Run inside this running distribution instead");
    exec->add_option("command", inv.argv, "PROGRAM [ARGS...] (after --)")->required();
    exec->callback([&inv, &run]() { run = [&inv](Client& client) { return do_vm_exec(client, inv); }; });
    add_container_commands(app, inv, run);
}

} // namespace bh::cli
