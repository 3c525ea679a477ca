// spawn_process: clone(CLONE_VM) + execve, with namespaces, a user-namespace id map and fd plumbing.
#include "base/spawn.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bh {

namespace {

    constexpr size_t child_stack_size = 256 * 1024;

    // Everything the child needs, prepared by the parent: the child shares the parent's memory
    // and may only make raw system calls (no allocation, no locks, no libc state).
    struct ChildContext {
        const char* path;
        int exec_fd;
        char* const* argv;
        char* const* envp;
        const std::pair<int, int>* fds;
        size_t fd_count;
        int first_free_fd;
        int sync_fd;
        int err_fd;
        const char* cwd;
        bool controlling_terminal;
        bool become_ns_root;
        int join_userns_fd;
        const Credentials* run_as;
        bool die_with_parent;
        pid_t parent_pid;
        bool new_pid_ns; // or a joined one: the parent is outside it, getppid() says 0
    };

    // The child runs on a stack ASan does not know (clone with CLONE_VM), so its frames are not
// instrumented.
#define BH_CHILD_CODE __attribute__((no_sanitize("address", "thread", "undefined")))

    // The kernel's struct sigaction (not glibc's), for raw rt_sigaction calls.
    // Under ThreadSanitizer the child gets its own copy of memory: a CLONE_VM child would run on
    // the parent thread's TLS and TSan's shadow state and crash before exec (SIGSEGV, seen).
#if defined(__SANITIZE_THREAD__)
    constexpr int share_memory = 0;
#else
    constexpr int share_memory = CLONE_VM;
#endif

    struct KernelSigaction {
        void* handler;
        unsigned long flags;
        void* restorer;
        uint64_t mask;
    };

    [[noreturn]] BH_CHILD_CODE void child_fail(const ChildContext& ctx)
    {
        int err = errno;
        syscall(SYS_write, ctx.err_fd, &err, sizeof(err));
        syscall(SYS_exit_group, 127);
        __builtin_unreachable();
    }

    BH_CHILD_CODE void child_reset_signals()
    {
        KernelSigaction dfl {};
        for (int sig = 1; sig < NSIG; ++sig) {
            if (sig != SIGKILL && sig != SIGSTOP)
                syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(uint64_t));
        }
    }

    BH_CHILD_CODE bool child_set_ids(uid_t uid, gid_t gid)
    {
        return syscall(SYS_setgroups, 0, nullptr) == 0 && syscall(SYS_setresgid, gid, gid, gid) == 0
            && syscall(SYS_setresuid, uid, uid, uid) == 0;
    }

    // Moves the planned fds to their numbers. Sources are first copied above every target, so
    // that a source whose number is another's target is never clobbered.
    BH_CHILD_CODE bool child_place_fds(const ChildContext& ctx)
    {
        int copies[64];
        if (ctx.fd_count > 64)
            return false;
        for (size_t i = 0; i < ctx.fd_count; ++i) {
            copies[i]
                = static_cast<int>(syscall(SYS_fcntl, ctx.fds[i].first, F_DUPFD_CLOEXEC, ctx.first_free_fd));
            if (copies[i] < 0)
                return false;
        }
        for (size_t i = 0; i < ctx.fd_count; ++i) {
            if (syscall(SYS_dup3, copies[i], ctx.fds[i].second, 0) < 0)
                return false;
        }
        return true;
    }

    BH_CHILD_CODE int child_main(void* arg)
    {
        const auto& ctx = *static_cast<const ChildContext*>(arg);
        child_reset_signals();
        if (ctx.die_with_parent) {
            syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (!ctx.new_pid_ns && syscall(SYS_getppid) != ctx.parent_pid)
                syscall(SYS_exit_group, 127);
        }
        char go = 0;
        if (ctx.sync_fd >= 0 && syscall(SYS_read, ctx.sync_fd, &go, 1) != 1)
            syscall(SYS_exit_group, 127);
        if (ctx.join_userns_fd >= 0 && syscall(SYS_setns, ctx.join_userns_fd, CLONE_NEWUSER) < 0)
            child_fail(ctx);
        if ((ctx.become_ns_root || ctx.join_userns_fd >= 0) && !child_set_ids(0, 0))
            child_fail(ctx);
        if (ctx.run_as && !child_set_ids(ctx.run_as->uid, ctx.run_as->gid))
            child_fail(ctx);
        // A change of ids clears the parent-death signal: armed again, for the ids the program runs with.
        if (ctx.die_with_parent) {
            syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (!ctx.new_pid_ns && syscall(SYS_getppid) != ctx.parent_pid)
                syscall(SYS_exit_group, 127);
        }
        // The program's fd could be one of the target numbers: move it above them first.
        long exec_fd
            = ctx.exec_fd >= 0 ? syscall(SYS_fcntl, ctx.exec_fd, F_DUPFD_CLOEXEC, ctx.first_free_fd) : -1;
        if (!child_place_fds(ctx))
            child_fail(ctx);
        // Only the planned fds reach the program: one the caller inherited without O_CLOEXEC
        // (from whoever started the service) would otherwise leak into every child.
        int highest_target = 2;
        for (size_t i = 0; i < ctx.fd_count; ++i)
            highest_target = ctx.fds[i].second > highest_target ? ctx.fds[i].second : highest_target;
        if (syscall(SYS_close_range, highest_target + 1, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
            child_fail(ctx);
        if (ctx.cwd[0] && syscall(SYS_chdir, ctx.cwd) < 0)
            child_fail(ctx);
        if (ctx.controlling_terminal && (syscall(SYS_setsid) < 0 || syscall(SYS_ioctl, 0, TIOCSCTTY, 0) < 0))
            child_fail(ctx);
        uint64_t empty_mask = 0;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty_mask, nullptr, sizeof(empty_mask));
        if (ctx.exec_fd >= 0)
            syscall(SYS_execveat, exec_fd, "", ctx.argv, ctx.envp, AT_EMPTY_PATH);
        else
            syscall(SYS_execve, ctx.path, ctx.argv, ctx.envp);
        child_fail(ctx);
    }

    std::vector<char*> to_c_array(const std::vector<std::string>& strings)
    {
        std::vector<char*> out;
        for (const auto& s : strings)
            out.push_back(const_cast<char*>(s.c_str()));
        out.push_back(nullptr);
        return out;
    }

    Status write_proc_file(pid_t pid, const char* name, const std::string& content)
    {
        std::string path = "/proc/" + std::to_string(pid) + "/" + name;
        Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
        if (!fd || ::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size()))
            return Error::from_errno(errno, "cannot write " + path);
        return {};
    }

    // Written by the (privileged) parent, so setgroups stays allowed in the namespace.
    Status write_id_maps(pid_t pid, const Credentials& ids, const std::optional<SubordinateIds>& more)
    {
        std::string uids = "0 " + std::to_string(ids.uid) + " 1\n";
        std::string gids = "0 " + std::to_string(ids.gid) + " 1\n";
        if (more) {
            uids += "1 " + std::to_string(more->uid_start) + " " + std::to_string(more->uid_count) + "\n";
            gids += "1 " + std::to_string(more->gid_start) + " " + std::to_string(more->gid_count) + "\n";
        }
        BH_TRY(write_proc_file(pid, "uid_map", uids));
        return write_proc_file(pid, "gid_map", gids);
    }

    struct Pipe {
        Fd read;
        Fd write;
    };

    // Moves `fd` to a number of at least `lowest`, if it is below.
    Fd at_least(Fd fd, int lowest)
    {
        if (fd.get() >= lowest)
            return fd;
        return Fd(fcntl(fd.get(), F_DUPFD_CLOEXEC, lowest));
    }

    // A CLOEXEC pipe whose ends sit at `lowest` or above: the child's own pipes must not have
    // a number the plan puts another fd at, or placing that fd would close them (possible when
    // the caller runs with stdio closed and the pipes get low numbers).
    Result<Pipe> make_pipe(int lowest)
    {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return Error::from_errno(errno, "cannot create a pipe");
        Pipe pipe { at_least(Fd(fds[0]), lowest), at_least(Fd(fds[1]), lowest) };
        if (!pipe.read || !pipe.write)
            return Error::from_errno(errno, "cannot move a pipe above the child's fd numbers");
        return pipe;
    }

    // Owns the child's stack; unmapped only once the child no longer runs on it.
    class ChildStack {
    public:
        ChildStack()
            : m_base(mmap(nullptr, child_stack_size, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0))
        {
        }
        ~ChildStack()
        {
            if (m_base != MAP_FAILED)
                munmap(m_base, child_stack_size);
        }
        bool ok() const { return m_base != MAP_FAILED; }
        void* top() const { return static_cast<char*>(m_base) + child_stack_size; }

    private:
        void* m_base;
    };

    // Blocks every signal on this thread for its lifetime, so no handler of ours runs on the
    // child's borrowed stack before it resets them.
    class SignalBlock {
    public:
        SignalBlock()
        {
            sigset_t all;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &m_old);
        }
        ~SignalBlock() { pthread_sigmask(SIG_SETMASK, &m_old, nullptr); }

    private:
        sigset_t m_old;
    };

    int first_free_fd_above(const SpawnPlan& plan)
    {
        int highest = 2;
        for (auto [from, to] : plan.fds)
            highest = std::max({ highest, from, to });
        highest = std::max(highest, plan.exec_fd);
        return highest + 1;
    }

    // Waits for the exec: EOF on the CLOEXEC error pipe means it happened; 4 bytes are an errno.
    Result<ChildProcess> await_exec(ChildProcess child, Fd err_read, const std::string& path)
    {
        int err = 0;
        ssize_t n;
        while ((n = ::read(err_read.get(), &err, sizeof(err))) < 0 && errno == EINTR) { }
        if (n == 0)
            return child;
        (void)child.wait();
        if (n != sizeof(err))
            return Error { -EIO, "cannot start '" + path + "': the child failed before exec" };
        return Error::from_errno(err, "cannot execute '" + path + "'");
    }

    // clone3 into `cgroup_fd` without CLONE_VM: the child runs child_main on its own copy of
    // our stack, like after fork.
    pid_t clone_into_cgroup(ChildContext& ctx, int namespaces, int cgroup_fd, int* pidfd)
    {
        clone_args args {};
        args.flags = CLONE_PIDFD | CLONE_INTO_CGROUP | static_cast<uint64_t>(namespaces);
        args.pidfd = reinterpret_cast<uint64_t>(pidfd);
        args.exit_signal = SIGCHLD;
        args.cgroup = static_cast<uint64_t>(cgroup_fd);
        long pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0)
            _exit(child_main(&ctx));
        return static_cast<pid_t>(pid);
    }

} // namespace

Result<ChildProcess> spawn_process(const SpawnPlan& plan)
{
    int first_free = first_free_fd_above(plan);
    auto err_pipe = make_pipe(first_free);
    auto sync_pipe = make_pipe(first_free);
    if (!err_pipe || !sync_pipe)
        return Error::from_errno(errno, "cannot start '" + plan.path + "'");
    bool userns = (plan.namespaces & CLONE_NEWUSER) != 0;
    if (userns && !plan.map_root_to)
        return Error { -EINVAL, "cannot start '" + plan.path + "': a user namespace needs an id map" };
    if (userns && plan.join_user_namespace >= 0)
        return Error { -EINVAL,
            "cannot start '" + plan.path + "': it cannot both join and make a user namespace" };
    auto argv = to_c_array(plan.argv);
    auto envp = to_c_array(plan.env);
    ChildContext ctx { plan.path.c_str(), plan.exec_fd, argv.data(), envp.data(), plan.fds.data(),
        plan.fds.size(), first_free, userns ? sync_pipe->read.get() : -1, err_pipe->write.get(),
        plan.cwd.c_str(), plan.controlling_terminal, userns, plan.join_user_namespace,
        plan.run_as ? &*plan.run_as : nullptr, plan.die_with_parent, getpid(),
        (plan.namespaces & CLONE_NEWPID) != 0 || plan.join_pid_namespace >= 0 };
    ChildStack stack;
    if (!stack.ok())
        return Error::from_errno(errno, "cannot start '" + plan.path + "': no memory for its stack");
    // The child's PID namespace is this thread's "PID namespace for children", set for the clone
    // and set back to the thread's own (a thread may always return to its active namespace).
    Fd own_pid_namespace;
    if (plan.join_pid_namespace >= 0) {
        own_pid_namespace = Fd(::open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC));
        if (!own_pid_namespace || ::setns(plan.join_pid_namespace, CLONE_NEWPID) < 0)
            return Error::from_errno(
                errno, "cannot start '" + plan.path + "' in the PID namespace asked for");
    }
    int pidfd = -1;
    pid_t pid;
    {
        SignalBlock block;
        pid = plan.cgroup_fd >= 0 ? clone_into_cgroup(ctx, plan.namespaces, plan.cgroup_fd, &pidfd) : -1;
        // Kernels before 5.7 have no clone3 (ENOSYS) or a shorter clone_args (E2BIG): start the
        // child outside the cgroup, which it then has to join (see SpawnPlan::cgroup_fd).
        if (plan.cgroup_fd < 0 || (pid < 0 && (errno == ENOSYS || errno == E2BIG)))
            // A process sharing its memory cannot join a user namespace (EINVAL): that child gets a copy.
            pid = clone(child_main, stack.top(),
                (plan.join_user_namespace >= 0 ? 0 : share_memory) | CLONE_PIDFD | plan.namespaces | SIGCHLD,
                &ctx, &pidfd);
    }
    int clone_errno = errno;
    if (own_pid_namespace && ::setns(own_pid_namespace.get(), CLONE_NEWPID) < 0)
        std::abort(); // every later child of this thread would land in that namespace
    if (pid < 0)
        return Error::from_errno(clone_errno, "cannot start '" + plan.path + "'");
    ChildProcess child(pid, Fd(pidfd));
    err_pipe->write.reset();
    if (userns) {
        auto mapped = write_id_maps(pid, *plan.map_root_to, plan.subordinate);
        if (!mapped)
            return mapped.take_error();
        if (::write(sync_pipe->write.get(), "g", 1) != 1)
            return Error::from_errno(errno, "cannot start '" + plan.path + "'");
    }
    return await_exec(std::move(child), std::move(err_pipe->read), plan.path);
}

} // namespace bh
