// ControlServer: the Cap'n Proto control protocol, one Control object per connection.
#include "service/control-server.h"

#include "base/log.h"
#include "ipc/fd-cap.h"

#include <csignal>
#include <fcntl.h>
#include <proto/control.capnp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr size_t max_args = 4096;
    // 2 MiB, as Linux's usual ARG_MAX: a `run` with the largest command line a shell would take.
    constexpr uint64_t max_control_message_words = 256 * 1024;
    constexpr size_t max_text = 64 * 1024;

    std::string text_of(capnp::Text::Reader text)
    {
        return std::string(text.cStr(), std::min(text.size(), max_text));
    }

    // What the client's user file asks for; a network mode that is none of ours is an error.
    Result<UserOverrides> overrides_of(proto::UserSettings::Reader settings)
    {
        UserOverrides out;
        if (settings.getHasIdleTimeout())
            out.idle_timeout_s = settings.getIdleTimeoutS();
        if (settings.getHasHostNetwork())
            out.network = settings.getHostNetwork() ? NetworkMode::host : NetworkMode::none;
        if (settings.getNetwork().size() > 0) {
            auto mode = parse_network(text_of(settings.getNetwork()));
            if (!mode)
                return Error { -EINVAL,
                    "the network mode '" + text_of(settings.getNetwork())
                        + "' is none of none, nat and host" };
            out.network = *mode;
        }
        if (settings.getInit().size() > 0)
            out.init = text_of(settings.getInit());
        return out;
    }

    void fill_distro(proto::DistroInfo::Builder out, const DistroView& view)
    {
        out.setName(view.record.name);
        out.setUuid(view.record.uuid.to_string());
        out.setPackage(view.record.package);
        out.setFlavor(view.record.flavor);
        out.setVersion(view.record.version);
        out.setIsDefault(view.is_default);
        out.setRunning(view.running);
        out.setOwnerUid(view.record.owner);
        out.setInitPid(view.init_pid);
        out.setPidNamespace(view.pid_namespace);
        out.setSkippedDevices(view.skipped_devices);
        out.setInPlace(view.record.in_place);
    }

    Result<std::vector<std::string>> strings_of(capnp::List<capnp::Text>::Reader list, const char* what)
    {
        if (list.size() > max_args)
            return Error { -E2BIG, std::string("too many ") + what };
        std::vector<std::string> out;
        for (auto item : list)
            out.push_back(text_of(item));
        return out;
    }

    // The program a run-like call (run, container session exec) names: its arguments, checked and
    // not empty, its environment, and who runs it.
    // `login_shell`: no program may be given; the agent starts the user's login shell.
    Result<ProgramSpec> program_of(capnp::List<capnp::Text>::Reader argv_list,
        capnp::List<capnp::Text>::Reader env_list, std::string user, bool login_shell = false)
    {
        auto argv = strings_of(argv_list, "arguments");
        if (!argv)
            return argv.take_error();
        auto env = strings_of(env_list, "environment entries");
        if (!env)
            return env.take_error();
        if (login_shell) {
            if (!argv->empty())
                return Error { -EINVAL, "a program was given with the login shell" };
            ProgramSpec spec { "", {}, env.value(), std::move(user) };
            spec.login_shell = true;
            return spec;
        }
        if (argv->empty())
            return Error { -EINVAL, "no program given" };
        return ProgramSpec { argv->front(), argv.value(), env.value(), std::move(user) };
    }

    // A client's folder must come as a directory it opened for reading: an O_PATH fd needs no
    // permission on the folder at all, so it would hand the user a 0700 folder of someone else's.
    Status check_opened_for_reading(int fd)
    {
        int flags = fcntl(fd, F_GETFL);
        struct stat st;
        if (flags < 0 || fstat(fd, &st) < 0)
            return Error::from_errno(errno, "cannot inspect the folder sent by the client");
        if (!S_ISDIR(st.st_mode))
            return Error { -ENOTDIR, "the folder sent by the client is not a directory" };
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
            return Error { -EACCES,
                "the folder sent by the client was not opened for reading (an O_PATH fd proves no right to "
                "read it)" };
        return {};
    }

    // Which calls end when their client goes away (Cap'n Proto 0.9 cancels a call on disconnect
    // only when it called allowCancellation()): register, export, start, run, vmMount, vmExec,
    // containerSessionCreate, containerSessionExec, containerExec and containerLogs, whose
    // promises own everything they hold, so dropping them at any point is clean. A `run` dropped
    // that way drops its program's Process capability, and the agent kills the program; a
    // register dropped that way stops its import (see Service::register_distribution).
    // unregister, terminate and shutdown always run to their end: they are bounded, and would
    // leave the registry or a VM half changed if cut short.

    // Produces the Outcome of a finished operation, or the given fields on success.
    template<typename Results> void fail(Results results, const Error& error, const char* operation)
    {
        ipc::set_outcome(results.initOutcome(), error, operation);
    }

    // A program's end that was not its own: it died with its distribution or VM
    // (program_orphaned). The error says so, as `code`, and the wait status is the SIGKILL it died
    // of, for the client's exit code (128 + 9).
    template<typename Results> void fail_run(Results results, Error error, const char* operation, int code)
    {
        if (error.code == program_orphaned) {
            error.code = code;
            results.setWaitStatus(SIGKILL);
        }
        fail(results, error, operation);
    }

    // One connection's view of the service, bound to its caller.
    class Control final : public proto::Control::Server {
    public:
        Control(Service& service, Caller caller, UserUsage& usage)
            : m_service(service)
            , m_caller(caller)
            , m_usage(usage)
        {
        }

        // Every call counts against the caller's calls_per_user while it is in progress: one
        // connection can pipeline calls without waiting for any answer.
        DispatchCallResult dispatchCall(uint64_t interface_id, uint16_t method_id,
            capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override
        {
            auto held = m_usage.take(m_caller.uid, UserUsage::Kind::call);
            if (!held)
                return { KJ_EXCEPTION(OVERLOADED, held.error().message), false };
            auto dispatched = proto::Control::Server::dispatchCall(interface_id, method_id, context);
            return { dispatched.promise.attach(kj::mv(held.value())), dispatched.isStreaming };
        }

    protected:
        kj::Promise<void> register_(RegisterContext context) override;
        kj::Promise<void> unregister(UnregisterContext context) override;
        kj::Promise<void> setDefault(SetDefaultContext context) override;
        kj::Promise<void> start(StartContext context) override;
        kj::Promise<void> run(RunContext context) override;
        kj::Promise<void> terminate(TerminateContext context) override;
        kj::Promise<void> shutdown(ShutdownContext context) override;
        kj::Promise<void> list(ListContext context) override;
        kj::Promise<void> status(StatusContext context) override;
        kj::Promise<void> vmMount(VmMountContext context) override;
        kj::Promise<void> vmExec(VmExecContext context) override;
        kj::Promise<void> export_(ExportContext context) override;
        kj::Promise<void> containerSessionCreate(ContainerSessionCreateContext context) override;
        kj::Promise<void> containerSessionList(ContainerSessionListContext context) override;
        kj::Promise<void> containerSessionShow(ContainerSessionShowContext context) override;
        kj::Promise<void> containerSessionTerminate(ContainerSessionTerminateContext context) override;
        kj::Promise<void> containerSessionExec(ContainerSessionExecContext context) override;
        kj::Promise<void> containerSessionIdle(ContainerSessionIdleContext context) override;
        kj::Promise<void> containerImageLoad(ContainerImageLoadContext context) override;
        kj::Promise<void> containerImageList(ContainerImageListContext context) override;
        kj::Promise<void> containerImageInspect(ContainerImageInspectContext context) override;
        kj::Promise<void> containerImageRemove(ContainerImageRemoveContext context) override;
        kj::Promise<void> containerRun(ContainerRunContext context) override;
        kj::Promise<void> containerList(ContainerListContext context) override;
        kj::Promise<void> containerInspect(ContainerInspectContext context) override;
        kj::Promise<void> containerStop(ContainerStopContext context) override;
        kj::Promise<void> containerRemove(ContainerRemoveContext context) override;
        kj::Promise<void> containerImageTag(ContainerImageTagContext context) override;
        kj::Promise<void> containerImagePull(ContainerImagePullContext context) override;
        kj::Promise<void> containerImagePush(ContainerImagePushContext context) override;
        kj::Promise<void> containerExec(ContainerExecContext context) override;
        kj::Promise<void> containerLogs(ContainerLogsContext context) override;
        kj::Promise<void> containerStart(ContainerStartContext context) override;
        kj::Promise<void> containerImageImport(ContainerImageImportContext context) override;
        kj::Promise<void> registerInPlace(RegisterInPlaceContext context) override;

    private:
        Result<uid_t> target(proto::Target::Reader target) const
        {
            return m_service.target_uid(m_caller, target.getUid());
        }
        bool is_root() const { return m_caller.uid == 0; }
        // A query answered at once with JSON: query(owner, params) for the target user.
        template<typename Context, typename Query>
        kj::Promise<void> json_query(Context context, const char* op, Query query);
        template<typename Context>
        kj::Promise<void> load_archive(Context context, const char* op, std::string reference);

        Service& m_service;
        Caller m_caller;
        UserUsage& m_usage;
    };

    // What a run's client may send its program: what a terminal's user sends a foreground
    // program, and the user signals. Not SIGKILL or SIGSTOP: ending a run is dropping it.
    class RunningProgram final : public proto::RunningProgram::Server {
    public:
        explicit RunningProgram(kj::Own<ProgramSignals> program)
            : m_program(kj::mv(program))
        {
        }

    protected:
        kj::Promise<void> signal(SignalContext context) override
        {
            static constexpr const char* op = "Bulkhead/Service/SignalProgram";
            int signal = context.getParams().getSignal();
            if (signal != SIGHUP && signal != SIGINT && signal != SIGQUIT && signal != SIGTERM
                && signal != SIGUSR1 && signal != SIGUSR2)
                return fail(context.getResults(),
                           { -EINVAL, "signal " + std::to_string(signal) + " cannot be sent to a program" },
                           op),
                       kj::READY_NOW;
            // One at a time: these calls are not counted against calls_per_user, and the agent
            // (the user's) may never answer, so calls piling up would be the service's memory.
            if (*m_sending)
                return fail(context.getResults(),
                           { -EBUSY, "the program's previous signal is still being delivered" }, op),
                       kj::READY_NOW;
            *m_sending = true;
            return m_program->send(signal).then([sending = m_sending, context](Status sent) mutable {
                *sending = false;
                if (!sent)
                    fail(context.getResults(), sent.error(), op);
            });
        }

    private:
        kj::Own<ProgramSignals> m_program;
        std::shared_ptr<bool> m_sending = std::make_shared<bool>(false);
    };

    // A run's pseudo-terminal as its client asked for it: the master end and the program go to
    // the client's TerminalClient once the program started.
    TerminalSpec terminal_of(proto::TerminalRequest::Reader request)
    {
        auto client = request.getClient();
        return TerminalSpec { request.getRows(), request.getColumns(),
            [client](Fd master, kj::Own<ProgramSignals> program) mutable {
                auto attach = client.attachRequest();
                attach.setMaster(ipc::wrap_fd(std::move(master)));
                attach.setProgram(kj::heap<RunningProgram>(kj::mv(program)));
                return attach.send().ignoreResult();
            } };
    }

    kj::Promise<void> Control::register_(RegisterContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RegisterDistribution";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        // Cancelled with its client: the import stops (even while it waits for the client's next
        // byte) and its directory is removed; once imported, the commit runs to its end anyway.
        context.allowCancellation();
        // Counted against the caller (who holds the connection), whoever the owner is.
        auto held = m_usage.take(m_caller.uid, UserUsage::Kind::registration);
        if (!held)
            return fail(context.getResults(), held.error(), op), kj::READY_NOW;
        std::string name = text_of(params.getName());
        std::string package = text_of(params.getPackage());
        auto producer = params.getProducer();
        bool has_producer = params.hasProducer();
        return ipc::unwrap_fd(params.getArchive())
            .then([this, context, owner = owner.value(), name, package, producer, has_producer](
                      Result<Fd> archive) mutable -> kj::Promise<void> {
                if (!archive)
                    return fail(context.getResults(), archive.error(), op), kj::READY_NOW;
                kj::Function<kj::Promise<Status>()> confirm
                    = [producer, has_producer]() mutable -> kj::Promise<Status> {
                    if (!has_producer)
                        return Status();
                    auto check = producer.resultRequest().send().then(
                        [](auto r) { return ipc::to_status(r.getOutcome()); });
                    return ipc::catch_disconnect<void>(
                        kj::mv(check), "the client hung up while sending the archive");
                };
                return m_service
                    .register_distribution(owner, name, std::move(archive.value()), package, kj::mv(confirm))
                    .then([context](Result<DistroView> view) mutable {
                        if (!view)
                            return fail(context.getResults(), view.error(), op);
                        fill_distro(context.getResults().initDistro(), view.value());
                    });
            })
            .attach(kj::mv(held.value()));
    }

    kj::Promise<void> Control::unregister(UnregisterContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/UnregisterDistribution";
        auto owner = target(context.getParams().getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service
            .unregister_distribution(
                owner.value(), text_of(context.getParams().getName()), context.getParams().getDeleteInPlace())
            .then([context](Status status) mutable {
                if (!status)
                    fail(context.getResults(), status.error(), op);
            });
    }

    kj::Promise<void> Control::registerInPlace(RegisterInPlaceContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RegisterInPlace";
        if (!is_root())
            return fail(context.getResults(),
                       { -EPERM, "only root may register a folder in place: it stays where it is, as it is" },
                       op),
                   kj::READY_NOW;
        auto params = context.getParams();
        return m_service
            .register_in_place(
                text_of(params.getName()), text_of(params.getDirectory()), text_of(params.getPackage()))
            .then([context](Result<DistroView> view) mutable {
                if (!view)
                    return fail(context.getResults(), view.error(), op);
                fill_distro(context.getResults().initDistro(), view.value());
            });
    }

    kj::Promise<void> Control::setDefault(SetDefaultContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/SetDefaultDistribution";
        auto owner = target(context.getParams().getTarget());
        Status status = owner ? m_service.set_default(owner.value(), text_of(context.getParams().getName()))
                              : Status(owner.take_error());
        if (!status)
            fail(context.getResults(), status.error(), op);
        return kj::READY_NOW;
    }

    kj::Promise<void> Control::start(StartContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/StartDistribution";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        auto overrides = overrides_of(params.getSettings());
        if (!overrides)
            return fail(context.getResults(), overrides.error(), op), kj::READY_NOW;
        return m_service
            .start_distribution(owner.value(), text_of(params.getName()), std::move(overrides.value()))
            .then([context](Result<DistroView> view) mutable {
                if (!view)
                    return fail(context.getResults(), view.error(), op);
                fill_distro(context.getResults().initDistro(), view.value());
            });
    }

    kj::Promise<void> Control::run(RunContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RunProgram";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        auto program = owner
            ? program_of(params.getArgv(), params.getEnv(), text_of(params.getUser()), params.getLoginShell())
            : Result<ProgramSpec>(owner.error());
        if (!program)
            return fail(context.getResults(), program.error(), op), kj::READY_NOW;
        ProgramSpec spec = std::move(program.value());
        spec.default_user = spec.user.empty(); // no -u: whom the distribution names
        spec.cwd = text_of(params.getCwd());
        if (!spec.cwd.empty() && spec.cwd.front() != '/')
            return fail(context.getResults(), { -EINVAL, "--cd '" + spec.cwd + "' is not an absolute path" },
                       op),
                   kj::READY_NOW;
        bool terminal = params.hasTerminal();
        if (terminal)
            spec.terminal = terminal_of(params.getTerminal());
        // With a terminal, the program's stdio is the terminal: the client's fds are not used.
        auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(3);
        auto fd_of = [terminal](proto::Fd::Client fd) {
            return terminal ? kj::Promise<Result<Fd>>(Result<Fd>(Fd())) : ipc::unwrap_fd(kj::mv(fd));
        };
        fds.add(fd_of(params.getStdin()));
        fds.add(fd_of(params.getStdout()));
        fds.add(fd_of(params.getStderr()));
        return kj::joinPromises(fds.finish())
            .then([this, context, owner = owner.value(), spec = std::move(spec)](
                      kj::Array<Result<Fd>> fds) mutable {
                auto params = context.getParams();
                for (auto& fd : fds) {
                    if (!fd)
                        return fail(context.getResults(), fd.error(), op), kj::Promise<void>(kj::READY_NOW);
                }
                std::array<Fd, 3> stdio { std::move(fds[0].value()), std::move(fds[1].value()),
                    std::move(fds[2].value()) };
                auto overrides = overrides_of(params.getSettings());
                if (!overrides)
                    return fail(context.getResults(), overrides.error(), op),
                           kj::Promise<void>(kj::READY_NOW);
                return m_service
                    .run(owner, text_of(params.getDistro()), std::move(spec), std::move(stdio),
                        std::move(overrides.value()))
                    .then([context](Result<int> status) mutable {
                        if (!status)
                            return fail_run(
                                context.getResults(), status.take_error(), op, BH_E_DISTRO_NOT_RUNNING);
                        context.getResults().setWaitStatus(status.value());
                    });
            });
    }

    kj::Promise<void> Control::terminate(TerminateContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/TerminateDistribution";
        auto owner = target(context.getParams().getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.terminate_distribution(owner.value(), text_of(context.getParams().getName()))
            .then([context](Status status) mutable {
                if (!status)
                    fail(context.getResults(), status.error(), op);
            });
    }

    kj::Promise<void> Control::shutdown(ShutdownContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/Shutdown";
        if (context.getParams().getAll()) {
            if (!is_root())
                return fail(context.getResults(), { -EPERM, "only root may shut down every VM" }, op),
                       kj::READY_NOW;
            return m_service.stop_all_vms();
        }
        auto owner = target(context.getParams().getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.shutdown_vm(owner.value()).ignoreResult();
    }

    kj::Promise<void> Control::list(ListContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ListDistributions";
        auto owner = target(context.getParams().getTarget());
        bool everyone = context.getParams().getAll();
        if (!owner || (everyone && !is_root())) {
            Error error
                = owner ? Error { -EPERM, "only root may list every user's distributions" } : owner.error();
            return fail(context.getResults(), error, op), kj::READY_NOW;
        }
        auto views = m_service.list(owner.value(), everyone);
        auto out = context.getResults().initDistros(views.size());
        for (size_t i = 0; i < views.size(); ++i)
            fill_distro(out[i], views[i]);
        return kj::READY_NOW;
    }

    kj::Promise<void> Control::status(StatusContext context)
    {
        auto results = context.getResults().initStatus();
        results.setVersion(BULKHEAD_VERSION);
        results.setPid(getpid());
        auto sessions = m_service.sessions(m_caller.uid, is_root());
        auto out = results.initSessions(sessions.size());
        for (size_t i = 0; i < sessions.size(); ++i) {
            const auto& s = sessions[i];
            out[i].setSessionId(s.identity.session_id);
            out[i].setUid(s.identity.uid);
            out[i].setUserName(s.identity.user_name);
            out[i].setVmRunning(s.vm_running);
            out[i].setVmInitPid(s.vm_init_pid);
            out[i].setHostNetwork(s.settings.network == NetworkMode::host);
            out[i].setNetwork(network_name(s.settings.network));
            out[i].setNetworkProblem(s.network_problem);
            out[i].setIdleTimeoutS(s.settings.idle_timeout_s);
            out[i].setCustomInit(s.settings.init);
            out[i].setCustomConfigFlags(s.settings.custom_config_flags);
            auto names = out[i].initRunningDistros(s.running_distros.size());
            for (size_t j = 0; j < s.running_distros.size(); ++j)
                names.set(j, s.running_distros[j]);
        }
        auto views = m_service.list(m_caller.uid, is_root());
        auto distros = results.initDistributions(views.size());
        for (size_t i = 0; i < views.size(); ++i)
            fill_distro(distros[i], views[i]);
        auto plugins = m_service.plugins();
        auto list = results.initPlugins(plugins.size());
        for (size_t i = 0; i < plugins.size(); ++i) {
            list[i].setName(plugins[i].name);
            list[i].setPath(plugins[i].path);
            list[i].setIsolation(plugins[i].isolation == Isolation::none ? "none" : "process");
            list[i].setPid(plugins[i].pid);
            list[i].setState(state_name(plugins[i].state));
            list[i].setCause(plugins[i].cause);
        }
        const VmLimitsView& limits = m_service.vm_limits();
        auto vm_limits = results.initVmLimits();
        vm_limits.setPidsMax(limits.pids_max);
        vm_limits.setMemoryMax(limits.memory_max);
        vm_limits.setPids(limits.pids);
        vm_limits.setMemory(limits.memory);
        return kj::READY_NOW;
    }

    kj::Promise<void> Control::vmMount(VmMountContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/MountFolder";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return ipc::unwrap_fd(params.getHostDir())
            .then([this, context, owner = owner.value()](Result<Fd> dir) mutable -> kj::Promise<Status> {
                if (!dir)
                    return Status(dir.take_error());
                if (Status readable = check_opened_for_reading(dir.value().get()); !readable)
                    return kj::mv(readable);
                auto params = context.getParams();
                return m_service.vm_mount(owner, std::move(dir.value()), text_of(params.getVmPath()),
                    params.getReadOnly(), text_of(params.getName()));
            })
            .then([context](Status status) mutable {
                if (!status)
                    fail(context.getResults(), status.error(), op);
            });
    }

    kj::Promise<void> Control::export_(ExportContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ExportDistribution";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        auto compression = parse_compression(text_of(params.getCompression()));
        if (!compression)
            return fail(context.getResults(),
                       Error { -EINVAL,
                           "unknown compression '" + text_of(params.getCompression())
                               + "': use none, gzip, xz or zstd" },
                       op),
                   kj::READY_NOW;
        return ipc::unwrap_fd(params.getOut())
            .then([this, context, owner = owner.value(), compression = *compression](
                      Result<Fd> out) mutable -> kj::Promise<Status> {
                if (!out)
                    return Status(out.take_error());
                return m_service.export_distribution(
                    owner, text_of(context.getParams().getName()), std::move(out.value()), compression);
            })
            .then([context](Status status) mutable {
                if (!status)
                    fail(context.getResults(), status.error(), op);
            });
    }

    kj::Promise<void> Control::vmExec(VmExecContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ExecuteBinary";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        auto argv = strings_of(params.getArgv(), "arguments");
        if (!owner || !argv) {
            return fail(context.getResults(), !owner ? owner.error() : argv.error(), op), kj::READY_NOW;
        }
        ProgramSpec spec { text_of(params.getPath()), argv.value() };
        return m_service.vm_exec(owner.value(), text_of(params.getDistro()), std::move(spec))
            .then([context](Result<Fd> socket) mutable {
                if (!socket)
                    return fail(context.getResults(), socket.error(), op);
                context.getResults().setSocket(ipc::wrap_fd(std::move(socket.value())));
            });
    }

    void fill_container_session(proto::ContainerSessionInfo::Builder out, const ContainerSessionView& view)
    {
        out.setSessionId(view.session_id);
        out.setName(view.name);
        out.setUid(view.uid);
        out.setUserName(view.user_name);
        out.setApplicationPid(view.application_pid);
        out.setStorage(view.options.storage);
        out.setMemoryMb(view.options.memory_mb);
        out.setCpuMillis(view.options.cpu_millis);
        out.setHostNetwork(view.options.network == NetworkMode::host);
        out.setNetwork(network_name(view.options.network));
        out.setIdleTimeoutS(view.options.idle_timeout_s);
        out.setVmState(vm_state_name(view.state));
        out.setVmInitPid(view.vm_init_pid);
    }

    // Memory and CPU bounds a request must stay within before the cgroups judge it.
    constexpr uint64_t max_memory_mb = 1ULL << 30; // 1 PiB
    constexpr uint32_t max_cpu_millis = 1024 * 1000;

    kj::Promise<void> Control::containerSessionCreate(ContainerSessionCreateContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/CreateContainerSession";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        auto settings = params.getSettings();
        ContainerSessionOptions options { text_of(settings.getStoragePath()), settings.getMemoryMb(),
            settings.getCpuMillis(), settings.getHostNetwork() ? NetworkMode::host : NetworkMode::none,
            settings.getIdleTimeoutS() };
        if (settings.getNetwork().size() > 0) {
            auto mode = parse_network(text_of(settings.getNetwork()));
            if (!mode)
                return fail(context.getResults(),
                           { -EINVAL,
                               "the network mode '" + text_of(settings.getNetwork())
                                   + "' is none of none, nat and host" },
                           op),
                       kj::READY_NOW;
            options.network = *mode;
        }
        // The same policy as a VM's [vm] network: root picks freely, users what the admin allows.
        const auto& allowed = m_service.config().policy.allow_network;
        if (!is_root() && std::find(allowed.begin(), allowed.end(), options.network) == allowed.end())
            return fail(context.getResults(),
                       { -EPERM,
                           std::string("the network mode '") + network_name(options.network)
                               + "' is not allowed for users by the administrator ([policy] "
                                 "allow_user_network)" },
                       op),
                   kj::READY_NOW;
        if (options.memory_mb > max_memory_mb || options.cpu_millis > max_cpu_millis)
            return fail(context.getResults(), { -EINVAL, "the memory or CPU limit is out of range" }, op),
                   kj::READY_NOW;
        if (options.storage.empty() != !settings.hasStorage())
            return fail(context.getResults(), { -EINVAL, "the storage folder and its path come together" },
                       op),
                   kj::READY_NOW;
        kj::Promise<Result<Fd>> storage = settings.hasStorage() ? ipc::unwrap_fd(settings.getStorage())
                                                                : kj::Promise<Result<Fd>>(Result<Fd>(Fd()));
        SessionIdentity identity = Service::identity_of(owner.value());
        return storage
            .then([this, context, identity, options](
                      Result<Fd> dir) mutable -> kj::Promise<Result<ContainerSessions::Created>> {
                if (!dir)
                    return Result<ContainerSessions::Created>(dir.take_error());
                auto params = context.getParams();
                return m_service.containers().create(identity, m_caller.pid, text_of(params.getName()),
                    options, std::move(dir.value()), params.getExclusive(), params.getStartVm());
            })
            .then([context](Result<ContainerSessions::Created> created) mutable {
                if (!created)
                    return fail(context.getResults(), created.error(), op);
                fill_container_session(context.getResults().initSession(), created->view);
                context.getResults().setCreated(created->created);
            });
    }

    kj::Promise<void> Control::containerSessionList(ContainerSessionListContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ListContainerSessions";
        auto owner = target(context.getParams().getTarget());
        bool everyone = context.getParams().getAll();
        if (!owner || (everyone && !is_root())) {
            Error error = owner ? Error { -EPERM, "only root may list every user's container sessions" }
                                : owner.error();
            return fail(context.getResults(), error, op), kj::READY_NOW;
        }
        auto views = m_service.containers().list(owner.value(), everyone);
        auto out = context.getResults().initSessions(views.size());
        for (size_t i = 0; i < views.size(); ++i)
            fill_container_session(out[i], views[i]);
        return kj::READY_NOW;
    }

    kj::Promise<void> Control::containerSessionShow(ContainerSessionShowContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ShowContainerSession";
        auto owner = target(context.getParams().getTarget());
        auto view = owner ? m_service.containers().show(owner.value(), text_of(context.getParams().getName()))
                          : Result<ContainerSessionView>(owner.take_error());
        if (!view)
            return fail(context.getResults(), view.error(), op), kj::READY_NOW;
        fill_container_session(context.getResults().initSession(), view.value());
        return kj::READY_NOW;
    }

    kj::Promise<void> Control::containerSessionTerminate(ContainerSessionTerminateContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/TerminateContainerSession";
        auto owner = target(context.getParams().getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.containers()
            .terminate(owner.value(), text_of(context.getParams().getName()))
            .then([context](Status status) mutable {
                if (!status)
                    fail(context.getResults(), status.error(), op);
            });
    }

    kj::Promise<void> Control::containerSessionExec(ContainerSessionExecContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ExecInContainerSession";
        context.allowCancellation(); // ends with its client (see above)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        auto program
            = owner ? program_of(params.getArgv(), params.getEnv(), "") : Result<ProgramSpec>(owner.error());
        if (!program)
            return fail(context.getResults(), program.error(), op), kj::READY_NOW;
        ProgramSpec spec = std::move(program.value());
        auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(3);
        fds.add(ipc::unwrap_fd(params.getStdin()));
        fds.add(ipc::unwrap_fd(params.getStdout()));
        fds.add(ipc::unwrap_fd(params.getStderr()));
        return kj::joinPromises(fds.finish())
            .then([this, context, owner = owner.value(), spec = std::move(spec)](
                      kj::Array<Result<Fd>> fds) mutable -> kj::Promise<void> {
                auto params = context.getParams();
                for (auto& fd : fds) {
                    if (!fd)
                        return fail(context.getResults(), fd.error(), op), kj::READY_NOW;
                }
                std::array<Fd, 3> stdio { std::move(fds[0].value()), std::move(fds[1].value()),
                    std::move(fds[2].value()) };
                return m_service.containers()
                    .exec(owner, text_of(params.getName()), std::move(spec), std::move(stdio),
                        params.getDetach())
                    .then([context](Result<int> status) mutable {
                        if (!status)
                            return fail_run(
                                context.getResults(), status.take_error(), op, BH_E_VM_NOT_RUNNING);
                        context.getResults().setWaitStatus(status.value());
                    });
            });
    }

    // --- Images and containers: JSON text out, the objects the hooks get ----------------------

    template<typename Context> void set_json(Context& context, Result<nlohmann::json> result, const char* op)
    {
        if (!result)
            return fail(context.getResults(), result.error(), op);
        context.getResults().setJson(result.value().dump());
    }

    template<typename Context, typename Query>
    kj::Promise<void> Control::json_query(Context context, const char* op, Query query)
    {
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        set_json(
            context, owner ? query(owner.value(), params) : Result<nlohmann::json>(owner.take_error()), op);
        return kj::READY_NOW;
    }

    // An archive must be a regular file the client opened for reading.
    Status check_archive(int fd)
    {
        int flags = fcntl(fd, F_GETFL);
        struct stat st;
        if (flags < 0 || fstat(fd, &st) < 0)
            return Error::from_errno(errno, "cannot inspect the archive sent by the client");
        if (!S_ISREG(st.st_mode))
            return Error { -EINVAL, "the image archive is not a regular file" };
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
            return Error { -EACCES, "the image archive was not opened for reading" };
        return {};
    }

    // load and import: the archive the client opened, checked, then loaded (or imported as
    // `reference`) into the session's store.
    template<typename Context>
    kj::Promise<void> Control::load_archive(Context context, const char* op, std::string reference)
    {
        auto owner = target(context.getParams().getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return ipc::unwrap_fd(context.getParams().getArchive())
            .then([this, context, op, owner = owner.value(), reference = std::move(reference)](
                      Result<Fd> archive) mutable -> kj::Promise<void> {
                if (!archive)
                    return fail(context.getResults(), archive.error(), op), kj::READY_NOW;
                if (Status ok = check_archive(archive->get()); !ok)
                    return fail(context.getResults(), ok.error(), op), kj::READY_NOW;
                return m_service.containers()
                    .image_load(owner, text_of(context.getParams().getSession()), std::move(archive.value()),
                        reference)
                    .then([context, op](
                              Result<nlohmann::json> loaded) mutable { set_json(context, loaded, op); });
            });
    }

    kj::Promise<void> Control::containerImageLoad(ContainerImageLoadContext context)
    {
        return load_archive(context, "Bulkhead/Service/LoadImage", {});
    }

    kj::Promise<void> Control::containerImageImport(ContainerImageImportContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ImportImage";
        std::string reference = text_of(context.getParams().getReference());
        if (reference.empty())
            return fail(context.getResults(),
                       Error { -EINVAL, "an import needs a reference to name the image" }, op),
                   kj::READY_NOW;
        return load_archive(context, op, std::move(reference));
    }

    kj::Promise<void> Control::containerImageList(ContainerImageListContext context)
    {
        return json_query(context, "Bulkhead/Service/ListImages", [this](uid_t owner, auto params) {
            return m_service.containers().image_list(owner, text_of(params.getSession()));
        });
    }

    kj::Promise<void> Control::containerImageInspect(ContainerImageInspectContext context)
    {
        return json_query(context, "Bulkhead/Service/InspectImage", [this](uid_t owner, auto params) {
            return m_service.containers().image_inspect(
                owner, text_of(params.getSession()), text_of(params.getReference()));
        });
    }

    kj::Promise<void> Control::containerImageRemove(ContainerImageRemoveContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RemoveImage";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.containers()
            .image_remove(owner.value(), text_of(params.getSession()), text_of(params.getReference()),
                params.getForce())
            .then([context](Result<nlohmann::json> removed) mutable { set_json(context, removed, op); });
    }

    kj::Promise<void> Control::containerRun(ContainerRunContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RunContainer";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        auto spec_in = params.getSpec();
        auto command = strings_of(spec_in.getCommand(), "arguments");
        auto env = strings_of(spec_in.getEnv(), "environment entries");
        if (!owner || !command || !env)
            return fail(context.getResults(),
                       !owner         ? owner.error()
                           : !command ? command.error()
                                      : env.error(),
                       op),
                   kj::READY_NOW;
        ContainerRunSpec spec { text_of(spec_in.getImage()), text_of(spec_in.getName()),
            std::move(command.value()), std::move(env.value()), spec_in.getNetworkNone(), spec_in.getDetach(),
            spec_in.getRemove() };
        spec.create_only = spec_in.getCreateOnly();
        if (params.hasTerminal()) {
            if (spec.detach)
                return fail(context.getResults(),
                           { -EINVAL,
                               "a detached container cannot have a terminal: nothing would attach to it (run "
                               "it "
                               "without -d, or without -t)" },
                           op),
                       kj::READY_NOW;
            spec.terminal = terminal_of(params.getTerminal());
        }
        auto volumes = spec_in.getVolumes();
        if (volumes.size() > 32)
            return fail(context.getResults(), { -E2BIG, "a container takes at most 32 volumes" }, op),
                   kj::READY_NOW;
        for (auto volume : volumes)
            spec.volumes.push_back({ Fd(), text_of(volume.getHostPath()), text_of(volume.getContainerPath()),
                volume.getReadOnly() });
        // The program's stdio, then each volume's folder.
        auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(3 + volumes.size());
        if (spec.detach) {
            for (int i = 0; i < 3; ++i)
                fds.add(Result<Fd>(Fd()));
        } else {
            fds.add(ipc::unwrap_fd(params.getStdin()));
            fds.add(ipc::unwrap_fd(params.getStdout()));
            fds.add(ipc::unwrap_fd(params.getStderr()));
        }
        for (auto volume : volumes)
            fds.add(ipc::unwrap_fd(volume.getFolder()));
        return kj::joinPromises(fds.finish())
            .then([this, context, owner = owner.value(), spec = std::move(spec)](
                      kj::Array<Result<Fd>> fds) mutable -> kj::Promise<void> {
                for (auto& fd : fds) {
                    if (!fd)
                        return fail(context.getResults(), fd.error(), op), kj::READY_NOW;
                }
                for (size_t i = 0; i < spec.volumes.size(); ++i) {
                    Fd& folder = fds[3 + i].value();
                    if (Status readable = check_opened_for_reading(folder.get()); !readable)
                        return fail(context.getResults(), readable.error(), op), kj::READY_NOW;
                    spec.volumes[i].folder = std::move(folder);
                }
                std::array<Fd, 3> stdio { std::move(fds[0].value()), std::move(fds[1].value()),
                    std::move(fds[2].value()) };
                return m_service.containers()
                    .container_run(
                        owner, text_of(context.getParams().getSession()), std::move(spec), std::move(stdio))
                    .then([context](Result<std::pair<std::string, int>> ran) mutable {
                        if (!ran)
                            return fail(context.getResults(), ran.error(), op);
                        context.getResults().setId(ran->first);
                        context.getResults().setWaitStatus(ran->second);
                    });
            });
    }

    kj::Promise<void> Control::containerList(ContainerListContext context)
    {
        return json_query(context, "Bulkhead/Service/ListContainers", [this](uid_t owner, auto params) {
            return m_service.containers().container_list(
                owner, text_of(params.getSession()), params.getAll());
        });
    }

    kj::Promise<void> Control::containerInspect(ContainerInspectContext context)
    {
        return json_query(context, "Bulkhead/Service/InspectContainer", [this](uid_t owner, auto params) {
            return m_service.containers().container_inspect(
                owner, text_of(params.getSession()), text_of(params.getContainer()));
        });
    }

    kj::Promise<void> Control::containerStop(ContainerStopContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/StopContainer";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        int signal = params.getSignal();
        if (!owner || signal < 1 || signal > 64)
            return fail(context.getResults(),
                       owner ? Error { -EINVAL, "invalid signal " + std::to_string(signal) } : owner.error(),
                       op),
                   kj::READY_NOW;
        std::optional<uint32_t> timeout;
        if (params.getTimeoutS() > 0)
            timeout = std::min<uint32_t>(params.getTimeoutS(), 3600);
        return m_service.containers()
            .container_stop(
                owner.value(), text_of(params.getSession()), text_of(params.getContainer()), signal, timeout)
            .then([context](Status stopped) mutable {
                if (!stopped)
                    fail(context.getResults(), stopped.error(), op);
            });
    }

    kj::Promise<void> Control::containerRemove(ContainerRemoveContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/RemoveContainer";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.containers()
            .container_remove(owner.value(), text_of(params.getSession()), text_of(params.getContainer()),
                params.getForce())
            .then([context](Status removed) mutable {
                if (!removed)
                    fail(context.getResults(), removed.error(), op);
            });
    }

    kj::Promise<void> Control::containerImageTag(ContainerImageTagContext context)
    {
        return json_query(context, "Bulkhead/Service/TagImage", [this](uid_t owner, auto params) {
            return m_service.containers().image_tag(owner, text_of(params.getSession()),
                text_of(params.getSource()), text_of(params.getReference()));
        });
    }

    kj::Promise<void> Control::containerImagePull(ContainerImagePullContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/PullImage";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.containers()
            .image_pull(owner.value(), text_of(params.getSession()), text_of(params.getReference()),
                params.getInsecure())
            .then([context](Result<nlohmann::json> pulled) mutable { set_json(context, pulled, op); });
    }

    kj::Promise<void> Control::containerImagePush(ContainerImagePushContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/PushImage";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return m_service.containers()
            .image_push(owner.value(), text_of(params.getSession()), text_of(params.getReference()),
                params.getInsecure())
            .then([context](Status pushed) mutable {
                if (!pushed)
                    fail(context.getResults(), pushed.error(), op);
            });
    }

    kj::Promise<void> Control::containerExec(ContainerExecContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ExecInContainer";
        context.allowCancellation(); // ends with its client: dropping it kills the program
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        auto command = strings_of(params.getCommand(), "arguments");
        if (!owner || !command)
            return fail(context.getResults(), !owner ? owner.error() : command.error(), op), kj::READY_NOW;
        std::optional<TerminalSpec> terminal;
        if (params.hasTerminal())
            terminal = terminal_of(params.getTerminal());
        // With a terminal, the client's stdout and stderr are crun's (its errors).
        auto fds = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(3);
        fds.add(ipc::unwrap_fd(params.getStdin()));
        fds.add(ipc::unwrap_fd(params.getStdout()));
        fds.add(ipc::unwrap_fd(params.getStderr()));
        return kj::joinPromises(fds.finish())
            .then(
                [this, context, owner = owner.value(), command = std::move(command.value()),
                    terminal = std::move(terminal)](kj::Array<Result<Fd>> fds) mutable -> kj::Promise<void> {
                    for (auto& fd : fds) {
                        if (!fd)
                            return fail(context.getResults(), fd.error(), op), kj::READY_NOW;
                    }
                    std::array<Fd, 3> stdio { std::move(fds[0].value()), std::move(fds[1].value()),
                        std::move(fds[2].value()) };
                    auto params = context.getParams();
                    return m_service.containers()
                        .container_exec(owner, text_of(params.getSession()), text_of(params.getContainer()),
                            std::move(command), std::move(stdio), std::move(terminal))
                        .then([context](Result<int> status) mutable {
                            if (!status)
                                return fail(context.getResults(), status.error(), op);
                            context.getResults().setWaitStatus(status.value());
                        });
                });
    }

    kj::Promise<void> Control::containerStart(ContainerStartContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/StartContainer";
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        auto given = params.getVolumes();
        // Folders opened by anyone but the container's owner would be mounted with the opener's
        // rights (root's, for `--uid`): only the owner brings them.
        if (given.size() > 0 && owner.value() != m_caller.uid)
            return fail(context.getResults(),
                       { -EPERM,
                           "only the container's owner may bring its volumes' folders: they would be "
                           "reached with your rights" },
                       op),
                   kj::READY_NOW;
        if (given.size() > 32)
            return fail(context.getResults(), { -E2BIG, "a container takes at most 32 volumes" }, op),
                   kj::READY_NOW;
        std::vector<ContainerVolume> volumes;
        auto folders = kj::heapArrayBuilder<kj::Promise<Result<Fd>>>(given.size());
        for (auto volume : given) {
            volumes.push_back({ Fd(), text_of(volume.getHostPath()), text_of(volume.getContainerPath()),
                volume.getReadOnly() });
            folders.add(ipc::unwrap_fd(volume.getFolder()));
        }
        return kj::joinPromises(folders.finish())
            .then([this, context, owner = owner.value(), volumes = std::move(volumes)](
                      kj::Array<Result<Fd>> folders) mutable -> kj::Promise<void> {
                for (size_t i = 0; i < volumes.size(); ++i) {
                    if (!folders[i])
                        return fail(context.getResults(), folders[i].error(), op), kj::READY_NOW;
                    if (Status readable = check_opened_for_reading(folders[i]->get()); !readable)
                        return fail(context.getResults(), readable.error(), op), kj::READY_NOW;
                    volumes[i].folder = std::move(folders[i].value());
                }
                auto params = context.getParams();
                return m_service.containers()
                    .container_start(owner, text_of(params.getSession()), text_of(params.getContainer()),
                        std::move(volumes))
                    .then([context](Status started) mutable {
                        if (!started)
                            fail(context.getResults(), started.error(), op);
                    });
            });
    }

    kj::Promise<void> Control::containerLogs(ContainerLogsContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/ContainerLogs";
        context.allowCancellation(); // ends with its client: dropping it ends the copy (follow)
        auto params = context.getParams();
        auto owner = target(params.getTarget());
        if (!owner)
            return fail(context.getResults(), owner.error(), op), kj::READY_NOW;
        return ipc::unwrap_fd(params.getStdout())
            .then([this, context, owner = owner.value()](Result<Fd> out) mutable -> kj::Promise<void> {
                if (!out)
                    return fail(context.getResults(), out.error(), op), kj::READY_NOW;
                auto params = context.getParams();
                std::array<Fd, 3> stdio { Fd(), std::move(out.value()), Fd() };
                return m_service.containers()
                    .container_logs(owner, text_of(params.getSession()), text_of(params.getContainer()),
                        std::move(stdio), params.getFollow())
                    .then([context](Status shown) mutable {
                        if (!shown)
                            fail(context.getResults(), shown.error(), op);
                    });
            });
    }

    kj::Promise<void> Control::containerSessionIdle(ContainerSessionIdleContext context)
    {
        static constexpr const char* op = "Bulkhead/Service/IdleContainerSession";
        auto owner = target(context.getParams().getTarget());
        if (!owner || !is_root())
            return fail(context.getResults(),
                       owner ? Error { -EPERM, "only root may idle a container session's VM" }
                             : owner.error(),
                       op),
                   kj::READY_NOW;
        return m_service.containers()
            .idle(owner.value(), text_of(context.getParams().getName()))
            .then([context](Result<bool> was_idle) mutable {
                if (!was_idle)
                    return fail(context.getResults(), was_idle.error(), op);
                context.getResults().setWasIdle(was_idle.value());
            });
    }

    // The first capability of every connection: checks the protocol version.
    class Bootstrap final : public proto::Bootstrap::Server {
    public:
        Bootstrap(Service& service, Caller caller, std::string version, UserUsage& usage)
            : m_service(service)
            , m_caller(caller)
            , m_version(std::move(version))
            , m_usage(usage)
        {
        }

    protected:
        kj::Promise<void> hello(HelloContext context) override
        {
            auto results = context.getResults();
            results.setServiceVersion(m_version);
            uint32_t major = context.getParams().getMajor();
            if (major != proto::CONTROL_MAJOR) {
                fail(results,
                    { -EPROTONOSUPPORT,
                        "the client speaks control protocol " + std::to_string(major) + ", the service "
                            + std::to_string(proto::CONTROL_MAJOR) + "; update the bulkhead CLI" },
                    "Bulkhead/Service/Connect");
                return kj::READY_NOW;
            }
            results.setControl(kj::heap<Control>(m_service, m_caller, m_usage));
            return kj::READY_NOW;
        }

    private:
        Service& m_service;
        Caller m_caller;
        std::string m_version;
        UserUsage& m_usage;
    };

} // namespace

Result<kj::Own<void>> UserUsage::take(uid_t uid, Kind kind)
{
    struct Limit {
        uint32_t UserLimits::*max;
        const char* what;
        const char* key;
    };
    static constexpr Limit limits[] = {
        { &UserLimits::connections, "open connections", "connections_per_user" },
        { &UserLimits::calls, "calls in progress", "calls_per_user" },
        { &UserLimits::registrations, "registrations in progress", "registrations_per_user" },
    };
    const Limit& limit = limits[static_cast<size_t>(kind)];
    uint32_t& count = m_counts[uid][static_cast<size_t>(kind)];
    if (count >= m_limits.*limit.max)
        return Error { -EUSERS,
            "uid " + std::to_string(uid) + " has " + std::to_string(count) + " " + limit.what
                + " already, the most allowed ([limits] " + limit.key + " in bulkhead.toml)" };
    ++count;
    return kj::Own<void>(kj::heap(kj::defer([this, uid, &count]() {
        if (--count == 0 && m_counts[uid] == Counts {})
            m_counts.erase(uid);
    })));
}

ControlServer::ControlServer(
    kj::LowLevelAsyncIoProvider& provider, kj::Timer& timer, Service& service, std::string version)
    : m_provider(provider)
    , m_timer(timer)
    , m_service(service)
    , m_version(std::move(version))
    , m_usage(service.limits())
{
}

void ControlServer::taskFailed(kj::Exception&& exception)
{
    // A client that broke the protocol or vanished; only its own connection is affected.
    log_info(std::string("control connection closed: ") + exception.getDescription().cStr());
}

kj::Promise<void> ControlServer::listen(Fd listener)
{
    auto receiver
        = m_provider.wrapListenSocketFd(listener.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    auto& ref = *receiver;
    return accept_loop(ref).attach(kj::mv(receiver));
}

kj::Promise<void> ControlServer::accept_loop(kj::ConnectionReceiver& receiver)
{
    // evalNow: kj's accept() throws its failure synchronously when no wait was needed.
    return kj::evalNow([&receiver]() { return receiver.accept(); })
        .then(
            [this, &receiver](kj::Own<kj::AsyncIoStream> stream) {
                m_accept_failing = false;
                serve(kj::mv(stream));
                return accept_loop(receiver);
            },
            [this, &receiver](kj::Exception&& exception) {
                // EMFILE, ENFILE, ENOMEM: a client holding many connections open must not end the
                // service for everyone. The connection stays queued; accept again once fds are freed.
                if (!m_accept_failing)
                    log_warning(std::string("cannot accept control connections (retrying every 100 ms): ")
                        + exception.getDescription().cStr());
                m_accept_failing = true;
                return m_timer.afterDelay(100 * kj::MILLISECONDS).then([this, &receiver]() {
                    return accept_loop(receiver);
                });
            });
}

void ControlServer::serve(kj::Own<kj::AsyncIoStream> stream)
{
    ucred cred {};
    uint length = sizeof(cred);
    stream->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &length);
    Caller caller { cred.uid, cred.gid, cred.pid };
    auto held = m_usage.take(caller.uid, UserUsage::Kind::connection);
    if (!held) {
        // Hung up at once: a connection over the limit must not hold even its fd. Logged at most
        // once a second, so the refusals cannot flood the log either.
        time_t now = time(nullptr);
        if (now != m_last_refusal_logged)
            log_warning("control connection refused: " + held.error().message);
        m_last_refusal_logged = now;
        return;
    }
    auto capability_stream = stream.downcast<kj::AsyncCapabilityStream>();
    // Every local user may connect: a message over max_control_message_words is refused on its
    // header, so a client cannot make the service buffer Cap'n Proto's default of 64 MiB.
    auto network = kj::heap<capnp::TwoPartyVatNetwork>(*capability_stream, ipc::max_fds_per_message,
        capnp::rpc::twoparty::Side::SERVER, ipc::receive_options(max_control_message_words));
    auto rpc = kj::heap(capnp::makeRpcServer(
        *network, capnp::Capability::Client(kj::heap<Bootstrap>(m_service, caller, m_version, m_usage))));
    auto disconnected = network->onDisconnect();
    // Torn down in dependency order: the RPC system, then the network it uses, then the stream.
    // (A multi-argument attach() would destroy them in the reverse order.)
    m_connections.add(disconnected.attach(kj::mv(rpc))
                          .attach(kj::mv(network))
                          .attach(kj::mv(capability_stream))
                          .attach(kj::mv(held.value())));
}

Result<Fd> bind_control_socket(const std::string& path)
{
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un address { .sun_family = AF_UNIX };
    if (path.size() >= sizeof(address.sun_path))
        return Error { -ENAMETOOLONG, "the control socket path '" + path + "' is too long" };
    std::copy(path.begin(), path.end(), address.sun_path);
    ::unlink(path.c_str());
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0
        || ::chmod(path.c_str(), 0666) < 0 || ::listen(fd.get(), 128) < 0)
        return Error::from_errno(errno, "cannot listen on " + path);
    return fd;
}

} // namespace bh::service
