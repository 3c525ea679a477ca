// PluginRuntime and the C stubs: where plugin code is called, and where it calls us back.
#include "plugin/plugin-runtime.h"

#include "base/log.h"
#include "base/mutex.h"
#include "ipc/fd-cap.h"
#include "ipc/mailbox.h"
#include "plugin/call-lanes.h"
#include "plugin/hook-codec.h"
#include "plugin/stub-route.h"

#include <capnp/serialize.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <kj/function.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

// A process a plugin started: the plugin's until process_release. Its fds are the plugin's to take
// (each std stream once: the plugin closes what it took, so the program sees EOF on stdin); the
// handle lives on the serving loop's side and is destroyed there.
struct bh_process {
    bh::Mutex mutex;
    std::array<bh::Fd, 3> stdio BH_GUARDED_BY(mutex);
    bh::Fd exit;
    kj::Own<bh::host::ProcessHandle> handle;
};

namespace bh::host {

namespace {

    constexpr size_t max_argv = 4096;
    constexpr size_t max_text = 4096;

    // The table plugins call: filled once routed, never freed (plugins may keep it forever).
    bh_plugin_api_v1& api_table()
    {
        static bh_plugin_api_v1* table = new bh_plugin_api_v1 {};
        return *table;
    }

    int shut_down_code()
    {
        return -ESHUTDOWN;
    }
    Result<Fd> shut_down_socket()
    {
        return Error { -ESHUTDOWN, "the service connection is closed" };
    }

    // --- plugin_error ------------------------------------------------------------------------

    // The hook running on this thread, if any: plugin_error is legal only there.
    struct HookFrame {
        bool veto = false;
        bool used = false;
        std::optional<std::string> message;
    };
    thread_local HookFrame* t_frame = nullptr;

    int stub_plugin_error(const char* message)
    {
        HookFrame* frame = t_frame;
        if (!frame || !frame->veto)
            return BH_E_ILLEGAL_METHOD_CALL;
        if (!message)
            return -EINVAL;
        if (frame->used)
            return BH_E_ILLEGAL_STATE_CHANGE;
        frame->used = true;
        frame->message = std::string(message, strnlen(message, max_text));
        return 0;
    }

    // --- mount_folder and execute_binary* ------------------------------------------------------

    // The call on this thread's lane, when there is one (in a host): a CallRequest for `session`
    // that `fill` completes, and its answer. nullopt: take the stub route.
    template<typename Fill> std::optional<LaneAnswer> on_lane(uint32_t session, Fill&& fill)
    {
        if (!call_lanes_enabled())
            return std::nullopt;
        capnp::MallocMessageBuilder message(128);
        auto request = message.initRoot<proto::CallRequest>();
        request.setSession(session);
        fill(request);
        return call_on_lane(message);
    }

    int stub_mount_folder(
        bh_session_id session, const char* host_path, const char* vm_path, int read_only, const char* name)
    {
        if (!host_path || !vm_path)
            return -EINVAL;
        std::string host(host_path, strnlen(host_path, max_text));
        std::string vm(vm_path, strnlen(vm_path, max_text));
        std::string label = name ? std::string(name, strnlen(name, max_text)) : std::string();
        auto answer = on_lane(session, [&](proto::CallRequest::Builder request) {
            auto args = request.initMountFolder();
            args.setHostPath(host);
            args.setVmPath(vm);
            args.setReadOnly(read_only != 0);
            args.setName(label);
        });
        if (answer)
            return answer->code;
        auto call = [&](CallTarget& target) {
            return target.mount_folder(session, std::move(host), std::move(vm), read_only != 0, label);
        };
        return call_service<int>(call, shut_down_code());
    }

    int execute(bh_session_id session, std::optional<Uuid> distro, const char* path, const char* const* argv,
        int* out_fd)
    {
        if (!out_fd)
            return -EINVAL;
        *out_fd = -1;
        if (!path || !argv)
            return -EINVAL;
        std::vector<std::string> args;
        for (size_t i = 0; argv[i]; ++i) {
            if (i == max_argv)
                return -E2BIG;
            args.emplace_back(argv[i], strnlen(argv[i], max_text));
        }
        std::string program(path, strnlen(path, max_text));
        auto answer = on_lane(session, [&](proto::CallRequest::Builder request) {
            auto call = request.initExecuteBinary();
            if (distro)
                call.setDistribution(capnp::Data::Reader(distro->bytes.data(), distro->bytes.size()));
            call.setPath(program);
            auto list = call.initArgv(args.size());
            for (size_t i = 0; i < args.size(); ++i)
                list.set(i, args[i]);
        });
        if (answer) {
            if (answer->code != 0)
                return answer->code;
            if (!answer->fd)
                return -EPROTO;
            *out_fd = answer->fd.release();
            return 0;
        }
        auto call = [&](CallTarget& target) {
            return target.execute(session, distro, std::move(program), std::move(args));
        };
        Result<Fd> socket = call_service<Result<Fd>>(call, shut_down_socket());
        if (!socket)
            return socket.error().code;
        *out_fd = socket->release();
        return 0;
    }

    int stub_execute_binary(bh_session_id session, const char* path, const char* const* argv, int* out_fd)
    {
        return execute(session, std::nullopt, path, argv, out_fd);
    }

    int stub_execute_in_distribution(bh_session_id session, const bh_uuid* distribution, const char* path,
        const char* const* argv, int* out_fd)
    {
        if (!distribution) {
            if (out_fd)
                *out_fd = -1;
            return -EINVAL;
        }
        Uuid id;
        std::copy(std::begin(distribution->bytes), std::end(distribution->bytes), id.bytes.begin());
        return execute(session, id, path, argv, out_fd);
    }

    // --- Container sessions and their processes -----------------------------------------------

    std::string bounded(const char* text)
    {
        return std::string(text, strnlen(text, max_text));
    }

    // A NULL-terminated vector, or -E2BIG past max_argv entries.
    Result<std::vector<std::string>> strings_of(const char* const* list)
    {
        std::vector<std::string> out;
        for (size_t i = 0; list && list[i]; ++i) {
            if (i == max_argv)
                return Error { -E2BIG, "too many entries" };
            out.push_back(bounded(list[i]));
        }
        return out;
    }

    int stub_container_mount_folder(
        bh_container_session_id session, const char* host_path, const char* mountpoint, int read_only)
    {
        if (!host_path || !mountpoint)
            return -EINVAL;
        std::string host = bounded(host_path), target = bounded(mountpoint);
        auto answer = on_lane(session, [&](proto::CallRequest::Builder request) {
            auto args = request.initContainerMountFolder();
            args.setHostPath(host);
            args.setMountpoint(target);
            args.setReadOnly(read_only != 0);
        });
        if (answer)
            return answer->code;
        auto call = [&](CallTarget& calls) {
            return calls.container_mount(session, std::move(host), std::move(target), read_only != 0);
        };
        return call_service<int>(call, shut_down_code());
    }

    int stub_container_unmount_folder(bh_container_session_id session, const char* mountpoint)
    {
        if (!mountpoint)
            return -EINVAL;
        std::string target = bounded(mountpoint);
        auto answer = on_lane(
            session, [&](proto::CallRequest::Builder request) { request.setContainerUnmountFolder(target); });
        if (answer)
            return answer->code;
        auto call = [&](CallTarget& calls) { return calls.container_unmount(session, std::move(target)); };
        return call_service<int>(call, shut_down_code());
    }

    int stub_container_create_process(bh_container_session_id session, const char* executable,
        const char* const* argv, const char* const* envp, bh_process** out_process, int* out_errno)
    {
        if (out_errno)
            *out_errno = 0;
        if (!out_process)
            return -EINVAL;
        *out_process = nullptr;
        if (!executable || !argv)
            return -EINVAL;
        auto args = strings_of(argv);
        auto env = strings_of(envp);
        if (!args || !env)
            return -E2BIG;
        std::string program = bounded(executable);
        auto call = [&](CallTarget& calls) {
            return calls.create_process(
                session, std::move(program), std::move(args.value()), std::move(env.value()));
        };
        Result<ProcessStart> started = call_service<Result<ProcessStart>>(
            call, Error { -ESHUTDOWN, "the service connection is closed" });
        if (!started) {
            int code = started.error().code;
            if (out_errno && code < 0 && code > -4096)
                *out_errno = -code;
            return code;
        }
        auto* process = new bh_process;
        {
            MutexLock lock(process->mutex); // not shared yet, but what it guards is written under it
            process->stdio = std::move(started->stdio);
        }
        process->exit = std::move(started->exit);
        process->handle = kj::mv(started->handle);
        *out_process = process;
        return 0;
    }

    int stub_process_get_fd(bh_process* process, int which, int* out_fd)
    {
        if (!out_fd)
            return -EINVAL;
        *out_fd = -1;
        if (!process || which < 0 || which > 2)
            return -EINVAL;
        MutexLock lock(process->mutex);
        if (!process->stdio[which])
            return -EBADF; // taken already
        *out_fd = process->stdio[which].release();
        return 0;
    }

    int stub_process_get_exit_fd(bh_process* process, int* out_fd)
    {
        if (!out_fd)
            return -EINVAL;
        *out_fd = -1;
        if (!process)
            return -EINVAL;
        int copy = fcntl(process->exit.get(), F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
            return -errno;
        *out_fd = copy;
        return 0;
    }

    int stub_process_get_exit_code(bh_process* process, int* out_code)
    {
        if (!out_code || !process)
            return -EINVAL;
        auto call = [&](CallTarget&) { return process->handle->exit_code(); };
        Result<int> code
            = call_service<Result<int>>(call, Error { -ESHUTDOWN, "the service connection is closed" });
        if (!code)
            return code.error().code;
        *out_code = code.value();
        return 0;
    }

    void stub_process_release(bh_process* process)
    {
        if (!process)
            return;
        kj::Own<ProcessHandle> handle = kj::mv(process->handle);
        delete process;
        // Destroyed on the serving loop, which kills the program if it still runs.
        auto call = [&](CallTarget&) {
            auto dropped = kj::mv(handle);
            return kj::Promise<int>(0);
        };
        if (call_service<int>(call, shut_down_code()) != 0 && handle)
            (void)new kj::Own<ProcessHandle>(kj::mv(handle)); // no loop left to destroy it on
    }

    // --- What plugins call ---------------------------------------------------------------------

    // Every function in the table is noexcept: nothing may unwind into a plugin's C frames. An
    // allocation that fails is -ENOMEM; any other exception (none is expected) is -EIO, logged.
    template<auto Stub> struct Guarded;
    template<typename R, typename... Args, R (*Stub)(Args...)> struct Guarded<Stub> {
        static R call(Args... args) noexcept
        {
            try {
                return Stub(args...);
            } catch (const std::bad_alloc&) {
                if constexpr (!std::is_void_v<R>)
                    return -ENOMEM;
            } catch (...) {
                try {
                    log_error("a plugin API call failed with an unexpected exception");
                } catch (...) {
                }
                if constexpr (!std::is_void_v<R>)
                    return -EIO;
            }
        }
    };
    template<auto Stub> constexpr auto guarded = &Guarded<Stub>::call;

} // namespace

// --- Routing -----------------------------------------------------------------------------------

bh_version parse_version(const char* text)
{
    bh_version version {};
    if (sscanf(text, "%u.%u.%u", &version.major, &version.minor, &version.revision) < 1)
        version = {};
    return version;
}

void route_stubs_to(CallTarget& target, bh_version version, kj::UnixEventPort& port)
{
    bh_plugin_api_v1& api = api_table();
    api.version = version;
    api.mount_folder = guarded<stub_mount_folder>;
    api.execute_binary = guarded<stub_execute_binary>;
    api.plugin_error = guarded<stub_plugin_error>;
    api.execute_binary_in_distribution = guarded<stub_execute_in_distribution>;
    api.container_mount_folder = guarded<stub_container_mount_folder>;
    api.container_unmount_folder = guarded<stub_container_unmount_folder>;
    api.container_create_process = guarded<stub_container_create_process>;
    api.process_get_fd = guarded<stub_process_get_fd>;
    api.process_get_exit_fd = guarded<stub_process_get_exit_fd>;
    api.process_get_exit_code = guarded<stub_process_get_exit_code>;
    api.process_release = guarded<stub_process_release>;
    open_route(target, port);
}

kj::Promise<void> unroute_stubs()
{
    return close_route();
}

// --- The hook thread ---------------------------------------------------------------------------

const char* hook_name(Hook hook)
{
    switch (hook) {
    case Hook::vm_started:
        return "on_vm_started";
    case Hook::vm_stopping:
        return "on_vm_stopping";
    case Hook::distribution_started:
        return "on_distribution_started";
    case Hook::distribution_stopping:
        return "on_distribution_stopping";
    case Hook::distribution_registered:
        return "on_distribution_registered";
    case Hook::distribution_unregistered:
        return "on_distribution_unregistered";
    case Hook::container_session_created:
        return "on_container_session_created";
    case Hook::container_session_stopping:
        return "on_container_session_stopping";
    case Hook::container_started:
        return "on_container_started";
    case Hook::container_stopping:
        return "on_container_stopping";
    case Hook::image_created:
        return "on_image_created";
    case Hook::image_deleted:
        return "on_image_deleted";
    case Hook::container_vm_started:
        return "on_container_vm_started";
    case Hook::container_vm_stopping:
        return "on_container_vm_stopping";
    }
    return "unknown hook";
}

bool is_veto(Hook hook)
{
    return hook == Hook::vm_started || hook == Hook::distribution_started
        || hook == Hook::container_session_created || hook == Hook::container_started;
}

// Shared by the runtime and its thread, so a thread outliving its runtime (a plugin stuck in a
// hook) still owns what it reads.
struct PluginRuntime::State {
    std::string name;
    // Jobs for the hook thread, posted by the runtime's loop; closed by abandon().
    ipc::Mailbox<kj::Function<void()>> jobs { ipc::Consumer::thread };
    bh_plugin_hooks_v1 hooks {}; // written by load() and read by run(), both on the hook thread

    void serve()
    {
        while (auto job = jobs.wait())
            (*job)();
    }

    void post(kj::Function<void()> job)
    {
        // Refused once abandoned: dropping it here rejects its promise through its sender.
        (void)jobs.post(kj::mv(job));
    }

    Result<uint32_t> load(Fd memfd, const std::string& path);
    HookOutcome run(const HookCall& call);
    void serve_lane(int lane);
};

PluginRuntime::PluginRuntime(std::string name, kj::UnixEventPort& port)
    : m_state(std::make_shared<State>())
    , m_inbox(port)
{
    m_state->name = std::move(name);
    std::thread([state = m_state]() { state->serve(); }).detach();
}

PluginRuntime::~PluginRuntime()
{
    abandon();
}

void PluginRuntime::abandon()
{
    // Dropped outside the mailbox's lock: their senders reject the pending promises.
    auto dropped = m_state->jobs.close();
}

namespace {

    int entry_failure(int code)
    {
        return code < 0 ? code : -EPROTO;
    }

} // namespace

Result<uint32_t> PluginRuntime::State::load(Fd memfd, const std::string& path)
{
    auto loaded = dlopen_memfd(std::move(memfd), path);
    if (!loaded)
        return Error { loaded.error().code, "plugin '" + name + "': " + loaded.error().message };
    void* library = loaded.value();
    auto entry = reinterpret_cast<bh_plugin_entry_v1_fn>(dlsym(library, entry_point_name));
    if (!entry)
        return Error { -ENOEXEC,
            "plugin '" + name + "' (" + path + ") does not export " + std::string(entry_point_name) };
    hooks = {};
    int rc = entry(&api_table(), &hooks);
    if (rc != 0)
        return Error { entry_failure(rc),
            "the entry point of plugin '" + name + "' failed: " + bh_result_name(rc) };
    uint32_t mask = 0;
    void* const* slots = reinterpret_cast<void* const*>(&hooks);
    for (uint32_t i = 0; i < sizeof(hooks) / sizeof(void*); ++i)
        mask |= slots[i] ? (1u << i) : 0;
    return mask;
}

namespace {

    const char* nullable(const std::optional<std::string>& text)
    {
        return text ? text->c_str() : nullptr;
    }

    int invoke(const bh_plugin_hooks_v1& hooks, const HookCall& call)
    {
        bh_session_info session { call.session.session_id, call.session.uid, call.session.gid,
            call.session.user_name.c_str() };
        const DistroArgs& d = call.distro;
        bh_uuid id {};
        std::copy(d.id.bytes.begin(), d.id.bytes.end(), id.bytes);
        bh_distribution_info online { id, d.name.c_str(), d.pid_namespace, nullable(d.package), d.init_pid,
            nullable(d.flavor), nullable(d.version) };
        bh_offline_distribution_info offline { id, d.name.c_str(), nullable(d.package), nullable(d.flavor),
            nullable(d.version) };
        bh_vm_settings settings { call.custom_config_flags };
        const ContainerArgs& c = call.container;
        bh_container_session_info container { c.session_id, c.display_name.c_str(), c.application_pid, c.uid,
            c.gid, c.user_name.c_str() };
        switch (call.hook) {
        case Hook::container_session_created:
            return hooks.on_container_session_created ? hooks.on_container_session_created(&container) : 0;
        case Hook::container_session_stopping:
            return hooks.on_container_session_stopping ? hooks.on_container_session_stopping(&container) : 0;
        case Hook::container_started:
            return hooks.on_container_started ? hooks.on_container_started(&container, call.text.c_str()) : 0;
        case Hook::container_stopping:
            return hooks.on_container_stopping ? hooks.on_container_stopping(&container, call.text.c_str())
                                               : 0;
        case Hook::image_created:
            return hooks.on_image_created ? hooks.on_image_created(&container, call.text.c_str()) : 0;
        case Hook::image_deleted:
            return hooks.on_image_deleted ? hooks.on_image_deleted(&container, call.text.c_str()) : 0;
        case Hook::container_vm_started:
            return hooks.on_container_vm_started ? hooks.on_container_vm_started(&container) : 0;
        case Hook::container_vm_stopping:
            return hooks.on_container_vm_stopping ? hooks.on_container_vm_stopping(&container) : 0;
        case Hook::vm_started:
            return hooks.on_vm_started ? hooks.on_vm_started(&session, &settings) : 0;
        case Hook::vm_stopping:
            return hooks.on_vm_stopping ? hooks.on_vm_stopping(&session) : 0;
        case Hook::distribution_started:
            return hooks.on_distribution_started ? hooks.on_distribution_started(&session, &online) : 0;
        case Hook::distribution_stopping:
            return hooks.on_distribution_stopping ? hooks.on_distribution_stopping(&session, &online) : 0;
        case Hook::distribution_registered:
            return hooks.on_distribution_registered ? hooks.on_distribution_registered(&session, &offline)
                                                    : 0;
        case Hook::distribution_unregistered:
            return hooks.on_distribution_unregistered ? hooks.on_distribution_unregistered(&session, &offline)
                                                      : 0;
        }
        return 0;
    }

} // namespace

HookOutcome PluginRuntime::State::run(const HookCall& call)
{
    HookFrame frame { is_veto(call.hook) };
    t_frame = &frame; // plugin_error is reset at each hook and legal only on this thread
    int rc = invoke(hooks, call);
    t_frame = nullptr;
    HookOutcome outcome;
    if (rc < 0) {
        outcome.code = rc;
        if (frame.veto)
            outcome.message = std::move(frame.message);
    }
    return outcome;
}

void PluginRuntime::State::serve_lane(int lane)
{
    for (;;) {
        std::optional<HookCall> call;
        if (kj::runCatchingExceptions([&]() {
                capnp::StreamFdMessageReader reader(lane, ipc::receive_options());
                auto decoded = decode_hook_request(reader.getRoot<proto::HookRequest>());
                if (!decoded)
                    log_error("plugin '" + name
                        + "': a hook from the service that cannot be read: " + decoded.error().message);
                else
                    call = std::move(decoded.value());
            })
            != nullptr) {
            return; // the service closed the lane: it is done with this host
        }
        if (!call)
            return; // the service breaks the protocol: its end sees the lane close
        lane_received();
        // Outside any try: plugin code is never run under our exception handlers.
        HookOutcome outcome = run(*call);
        lane_sent();
        capnp::MallocMessageBuilder reply(64);
        encode_outcome(outcome, reply.initRoot<proto::HookResult>());
        if (kj::runCatchingExceptions([&]() { capnp::writeMessageToFd(lane, reply); }) != nullptr)
            return;
    }
}

void PluginRuntime::serve_hook_lane(Fd lane)
{
    m_state->post([state = m_state.get(), lane = std::move(lane)]() { state->serve_lane(lane.get()); });
}

kj::Promise<Result<uint32_t>> PluginRuntime::load(Fd memfd, std::string path)
{
    auto result = m_inbox.expect<Result<uint32_t>>();
    m_state->post([state = m_state.get(), memfd = std::move(memfd), path = std::move(path),
                      sender = std::move(result.sender)]() mutable {
        sender.send(state->load(std::move(memfd), path));
    });
    return kj::mv(result.promise);
}

kj::Promise<HookOutcome> PluginRuntime::run(HookCall call)
{
    auto result = m_inbox.expect<HookOutcome>();
    m_state->post([state = m_state.get(), call = std::move(call),
                      sender = std::move(result.sender)]() mutable { sender.send(state->run(call)); });
    return kj::mv(result.promise);
}

} // namespace bh::host
