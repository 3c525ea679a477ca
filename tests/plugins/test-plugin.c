/* test-plugin: the fixture plugin of the plugin integration tests (tests/integration/plugins-*.sh).
 *
 * Built only against the public header, include/bulkhead/plugin_api.h, exactly as a third party's
 * plugin would be. Its behaviour is chosen by a sidecar file, fixture.conf, in the directory that
 * holds the .so (found through dladdr on one of its own functions):
 *
 *     mode=<Mode>          one of the modes listed in `modes` below
 *     log=<absolute path>  where every event is appended, one line per event
 *
 * The log is opened with O_APPEND and every line is written with a single write(), so lines from
 * several threads or processes never interleave. Line formats (fields always in this order;
 * nullable strings print as "(null)"; ids are lowercase 8-4-4-4-12 hex of the 16 bytes in order):
 *
 *   Plugin loaded (mode=M, api_version=MAJ.MIN.REV)
 *   VM created (session_id=S, uid=U, gid=G, user_name=N, custom_config_flags=F)
 *   VM stopping (session_id=S, uid=U, gid=G, user_name=N)
 *   Distribution started (session_id=S, name=N, id=ID, package=P, flavor=F, version=V, init_pid=I,
 *       pid_namespace=NS)                                          (one line in the log)
 *   Distribution stopping (same fields as started)
 *   Distribution registered (session_id=S, name=N, id=ID, package=P, flavor=F, version=V)
 *   Distribution unregistered (same fields as registered)
 *
 * Results of service calls, by bh_result_name(); argv is printed joined with single spaces:
 *
 *   mount_folder(session_id=S, host_path=H, vm_path=V, read_only=R, name=N) -> RESULT
 *   execute_binary(session_id=S, path=P, argv=A) -> RESULT            on success
 *   execute_binary(session_id=S, path=P, argv=A) -> RESULT (out_fd=FD) on failure (FD should be -1)
 *   execute_binary_in_distribution(session_id=S, id=ID, path=P, argv=A) -> RESULT [(out_fd=FD)]
 *   plugin_error(message=M) -> RESULT         plugin_error(NULL) -> RESULT
 *   plugin_error(message=M) from another thread -> RESULT
 *   output: LINE       each line a program run through execute_binary* printed (read to EOF)
 *   output: <timeout>  the program's socket did not reach EOF within 10 s
 *   write H/hello -> RESULT                (Success: the file the VM then reads back)
 *
 * Mode-specific lines:
 *
 *   child pid=P (KIND)                      SpawnChild, KIND is direct or grandchild; P is the
 *                                           pid as /proc/self names it in the child
 *   flood started (lines=N)  /  flood finished (lines=N, result=RESULT)        StderrFlood
 *   writing N random bytes to fd 3 (type=T)  /  write to fd 3 -> RESULT      Garbage
 *                                           (T: socket, fifo, other or none)
 *   lane abuse: WHAT -> RESULT              HookLaneGarbage, LaneNotASocket, TooManyLanes,
 *                                           CallLaneGarbage (on_vm_started; then sleeps 1 s):
 *       an impossible message header on the hook lane (fd 5); a pipe registered as a call lane
 *       on fd 6; 65 call lanes registered; a call lane carrying 13 bytes. Each is what a hostile
 *       host could send the service (proto/plugin_host.capnp, "Lanes").
 *   sending SIGKILL to own process                                           HostCrash
 *   RLIMIT_AS soft=S hard=H  /  allocation failed after N MiB               AllocateForever
 *   RLIMIT_NOFILE soft=S hard=H  /  opened N files, then RESULT             CountOpenFiles
 *                                           (S, H: a number or "unlimited")
 *
 * AllocateForever (on_vm_started) mallocs and fills 16 MiB blocks until malloc returns NULL, then
 * logs and abort()s: a memory limit on its host turns it into a crash. As a safety net on a host
 * without any limit it stops after 1 GiB, logs "no allocation failed in 1024 MiB" and vetoes with
 * -ENOMEM. CountOpenFiles (on_vm_started) opens /dev/null until open() fails (at most 100000
 * times), logs how many it opened and why it stopped, closes them again and returns 0.
 *
 * Concurrency modes (tests/integration/plugins-concurrency.sh); counters are __atomic builtins:
 *
 *   ConcurrentCallbacks (on_vm_started): 4 threads released by a barrier each mount_folder the
 *   plugin's directory at /concurrent/N and run /bin/true (read to EOF) (success counts these
 *   threads); then, until 4 calls were inside the service at once (at most 50 rounds: on a busy
 *   machine a thread may finish its calls before the last one is scheduled), 4 threads released
 *   by a barrier each run /bin/true again; then 32 threads run /bin/true 100 times each (stress_calls=N
 *   in fixture.conf: N times each, 1 to 1000). Each
 *   failed call logs "concurrent CALL ... -> RESULT"; then
 *     Concurrent callbacks complete: success=N failures=F maxConcurrent=M
 *     Concurrent rounds: R
 *     Stress complete: success=N failures=F
 *     Stress elapsed: MS ms (32 threads x 100 execute_binary /bin/true)
 *   (M: the most threads simultaneously inside a service call, in any round; a service that
 *   serialized its callbacks would never let it pass 1.)
 *
 *   SlowCallbackDoesNotBlockOthers (on_vm_started): 4 threads released together, one runs
 *   `sh -c "sleep 1; echo slow"`, three run `echo fast`, each reading to EOF, then
 *     completed: KIND (result=RESULT, output=TEXT)       KIND: slow or fast, once per thread
 *     Completion order: KIND KIND KIND KIND
 *
 *   AsyncApiCallFromWorker: on_distribution_started starts a thread that waits until the hook
 *   has returned, sleeps 200 ms, then runs `echo hello-from-worker` in the distribution (logging
 *   the usual execute_binary_in_distribution line); on_distribution_stopping joins it and logs
 *     Async worker output: TEXT
 *
 *   CallbacksDuringTermination: on_distribution_started starts 4 threads that run /bin/true in
 *   the distribution every millisecond (reading to EOF) until on_vm_stopping, 200 ms after it was
 *   called, stops and joins them (worker_rounds=N in fixture.conf: only on the first N distribution
 *   starts; default: on every one):
 *     Termination call results: total=N NAME=COUNT...       (NAME by bh_result_name)
 *
 *   TwoSessionsAtOnce (on_vm_started): counts the hooks inside it; "overlap (session_id=S,
 *   inside=N)" when another one is; mounts the plugin's directory at /two-sessions (the usual
 *   mount_folder line), sleeps 300 ms, checks again and leaves.
 *
 *   ThreadBeforeFirstHook / ThreadAfterEntryFailure: the entry point starts a thread that at once
 *   runs /bin/true with session 1 (the usual execute_binary line); the second mode then returns
 *   -EINVAL from the entry point.
 *
 *   HammerThroughShutdown: the first on_distribution_started starts 4 threads that, every
 *   millisecond and forever, alternately run /bin/true in that distribution and in the VM (reading
 *   to EOF). No hook ever stops them: they call on through VM and service shutdown. Each new result
 *   code, the first time any thread sees it:
 *     Hammer result: NAME (after N calls)
 *
 *   StuckCallback: on_distribution_started starts one thread that waits (at most 60 s) for the
 *   file "go" in the plugin's directory, then runs /bin/true in the distribution:
 *     Stuck call started  /  Stuck call returned RESULT (out_fd=FD)
 *
 *   FailToLoadSlowly: the entry point sleeps one second, then returns -EINVAL (FailToLoad at once).
 *
 *   ReturnLate (on_vm_started): sleeps six seconds (past a short hook_timeout_s), then logs
 *     on_vm_started returned late (session_id=S)
 *   and succeeds.
 *
 *   StopSlowly (on_vm_stopping): sleeps three seconds, then logs
 *     on_vm_stopping returned (session_id=S)
 *
 *   EntryHangs: the entry point starts the two sleeping children of SpawnChild (same lines),
 *   logs "hanging in the entry point" and never returns (pause(), forever).
 *   EntrySpins: the entry point logs "spinning in the entry point" and busy-loops forever.
 *
 *   ExecuteOutOfFds (on_vm_started): lowers its RLIMIT_NOFILE soft limit to 64, opens /dev/null
 *   until open() fails, then runs `echo fds-back` with no fd left for the answer, closes what it
 *   opened, restores the limit and runs it again:
 *     opened N files, then RESULT               (as in CountOpenFiles)
 *     execute_binary(...) -> RESULT (out_fd=FD)  the usual lines, the first one out of fds
 *
 * Variants: the .so holds the marker "BULKHEAD-FIXTURE-VARIANT:original" once. Built with
 * -DBH_FIXTURE_VARIANT='"impostor"' (the test-plugin-impostor target), or with the marker's last
 * eight bytes patched in a copy, it is a different file that behaves the same but first logs
 *
 *   Plugin variant: V                       only when V is not "original"; logged by an ELF
 *                                           constructor, so as soon as dlopen runs any of its code
 *
 * Finding fixture.conf: dladdr names the file this .so was loaded from. When it was loaded from
 * an anonymous file (a memfd, through /proc/self/fd/N), the memfd's name, as /proc/self/maps
 * shows it ("/memfd:NAME (deleted)"), is used if NAME is an absolute path.
 *
 * Children started in SpawnChild carry BULKHEAD_FIXTURE_TAG=<log path> in their environment so a
 * test can find them whatever pid namespace they live in. */
#define _GNU_SOURCE
#include <bulkhead/plugin_api.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum mode {
    MODE_SUCCESS,
    MODE_FAIL_TO_LOAD,
    MODE_FAIL_TO_START_VM,
    MODE_FAIL_TO_START_DISTRO,
    MODE_FAIL_TO_STOP_VM,
    MODE_FAIL_TO_STOP_DISTRO,
    MODE_API_ERRORS,
    MODE_PLUGIN_REQUIRES_UPDATE,
    MODE_ERROR_MESSAGE_START_VM,
    MODE_ERROR_MESSAGE_START_DISTRO,
    MODE_FAIL_TO_START_VM_WITH_PLUGIN_ERROR_MESSAGE,
    MODE_SAME_DISTRO_ID,
    MODE_INIT_PID_IS_DIFFERENT,
    MODE_GET_USERNAME,
    MODE_VM_SETTINGS_FLAGS,
    MODE_FAIL_TO_REGISTER_UNREGISTER_DISTRO,
    MODE_RUN_DISTRO_COMMAND,
    MODE_DUPLICATED_PLUGIN,
    MODE_HOST_CRASH,
    MODE_SPAWN_CHILD,
    MODE_STDERR_FLOOD,
    MODE_GARBAGE,
    MODE_CALLBACK_AFTER_HOOK,
    MODE_HANG_IN_VM_STARTED,
    MODE_ALLOCATE_FOREVER,
    MODE_COUNT_OPEN_FILES,
    MODE_CONCURRENT_CALLBACKS,
    MODE_SLOW_CALLBACK,
    MODE_ASYNC_API_CALL_FROM_WORKER,
    MODE_CALLBACKS_DURING_TERMINATION,
    MODE_TWO_SESSIONS_AT_ONCE,
    MODE_THREAD_BEFORE_FIRST_HOOK,
    MODE_THREAD_AFTER_ENTRY_FAILURE,
    MODE_HAMMER_THROUGH_SHUTDOWN,
    MODE_STUCK_CALLBACK,
    MODE_FAIL_TO_LOAD_SLOWLY,
    MODE_RETURN_LATE,
    MODE_STOP_SLOWLY,
    MODE_ENTRY_HANGS,
    MODE_ENTRY_SPINS,
    MODE_EXECUTE_OUT_OF_FDS,
    MODE_WSLC_SESSION_REJECTED,
    MODE_WSLC_VM_NEVER_STARTED,
    MODE_WSLC_VM_RESTART,
    MODE_WSLC_VM_STOP_COMMITTED,
    MODE_PARALLEL_WSLC_WITH_CALLBACKS,
    MODE_WSLC_ASYNC_CALLBACK_POST_RETURN,
    MODE_WSLC_PROCESS_API,
    MODE_WSLC_HOST_CRASH_IN_CREATED,
    MODE_WSLC_HOST_KILLED_IN_CREATE_PROCESS,
    MODE_WSLC_CONTAINER_REJECTED,
    MODE_HOOK_LANE_GARBAGE,
    MODE_LANE_NOT_A_SOCKET,
    MODE_TOO_MANY_LANES,
    MODE_CALL_LANE_GARBAGE,
};

static const char* const modes[] = {
    "Success",
    "FailToLoad",
    "FailToStartVm",
    "FailToStartDistro",
    "FailToStopVm",
    "FailToStopDistro",
    "ApiErrors",
    "PluginRequiresUpdate",
    "ErrorMessageStartVm",
    "ErrorMessageStartDistro",
    "FailToStartVmWithPluginErrorMessage",
    "SameDistroId",
    "InitPidIsDifferent",
    "GetUsername",
    "VmSettingsFlags",
    "FailToRegisterUnregisterDistro",
    "RunDistroCommand",
    "DuplicatedPlugin",
    "HostCrash",
    "SpawnChild",
    "StderrFlood",
    "Garbage",
    "CallbackAfterHook",
    "HangInVmStarted",
    "AllocateForever",
    "CountOpenFiles",
    "ConcurrentCallbacks",
    "SlowCallbackDoesNotBlockOthers",
    "AsyncApiCallFromWorker",
    "CallbacksDuringTermination",
    "TwoSessionsAtOnce",
    "ThreadBeforeFirstHook",
    "ThreadAfterEntryFailure",
    "HammerThroughShutdown",
    "StuckCallback",
    "FailToLoadSlowly",
    "ReturnLate",
    "StopSlowly",
    "EntryHangs",
    "EntrySpins",
    "ExecuteOutOfFds",
    "WslcSessionRejected",
    "WslcVmNeverStarted",
    "WslcVmRestart",
    "WslcVmStopCommitted",
    "ParallelWslcWithCallbacks",
    "WslcAsyncCallbackPostReturn",
    "WslcProcessApi",
    "WslcHostCrashInCreated",
    "WslcHostKilledInCreateProcess",
    "WslcContainerRejected",
    "HookLaneGarbage",
    "LaneNotASocket",
    "TooManyLanes",
    "CallLaneGarbage",
};

#define FLOOD_LINES 1100000 /* "flood line N\n": about 20 MB in all */
#define READ_TIMEOUT_MS 10000
#define ALLOCATION_MIB 16
#define ALLOCATION_CAP_MIB 1024
#define MAX_OPEN_FILES_PROBE 100000

/* Patched in copies of the .so by tests that need a different file (see "Variants" above).
 * volatile: read at run time, never folded into the code by the compiler. */
#define VARIANT_PREFIX "BULKHEAD-FIXTURE-VARIANT:"
#ifndef BH_FIXTURE_VARIANT
#define BH_FIXTURE_VARIANT "original"
#endif
static volatile const char variant_marker[] = VARIANT_PREFIX BH_FIXTURE_VARIANT;

static const struct bh_plugin_api_v1* api;
static enum mode mode;
static int log_fd = -1;
static char log_path[PATH_MAX];
static char own_dir[PATH_MAX];

static const char* str(const char* s)
{
    return s ? s : "(null)";
}

/* One line, one write(): lines from concurrent threads and processes stay whole. */
static void log_line(const char* format, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char* format, ...)
{
    char line[8192];
    va_list args;
    int n;
    va_start(args, format);
    n = vsnprintf(line, sizeof(line) - 1, format, args);
    va_end(args);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    (void)!write(log_fd, line, (size_t)n);
}

static void format_uuid(const struct bh_uuid* id, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int i, o = 0;
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[id->bytes[i] >> 4];
        out[o++] = hex[id->bytes[i] & 0xf];
    }
    out[o] = '\0';
}

static void join_argv(const char* const* argv, char* out, size_t size)
{
    size_t used = 0;
    int i;
    out[0] = '\0';
    for (i = 0; argv && argv[i]; i++) {
        int n = snprintf(out + used, size - used, "%s%s", i ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= size - used)
            return;
        used += (size_t)n;
    }
}

static long elapsed_ms(const struct timespec* since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* Reads fd to EOF, waiting at most READ_TIMEOUT_MS in all; keeps the first size - 1 bytes in out
 * (NUL-terminated; out may be NULL with size 0) and discards the rest. Returns 0, or -ETIME. */
static int drain(int fd, char* out, size_t size, size_t* used)
{
    char buffer[4096];
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    *used = 0;
    if (out && size)
        out[0] = '\0';
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        long elapsed = elapsed_ms(&start);
        ssize_t n;
        if (elapsed >= READ_TIMEOUT_MS || poll(&p, 1, (int)(READ_TIMEOUT_MS - elapsed)) == 0)
            return -ETIME;
        n = read(fd, buffer, sizeof(buffer));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break;
        if (out && *used + 1 < size) {
            size_t take = (size_t)n < size - 1 - *used ? (size_t)n : size - 1 - *used;
            memcpy(out + *used, buffer, take);
            *used += take;
            out[*used] = '\0';
        }
    }
    return 0;
}

/* Sends `input` (if any, then half-closes), reads the socket to EOF and logs each line as
 * "output: LINE"; closes the fd. */
static void log_output(int fd, const char* input)
{
    char buffer[65536];
    size_t used = 0;
    if (input) {
        size_t length = strlen(input), done = 0;
        while (done < length) {
            ssize_t n = write(fd, input + done, length - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            done += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
    }
    if (drain(fd, buffer, sizeof(buffer), &used) < 0)
        log_line("output: <timeout>");
    close(fd);
    {
        char* line = buffer;
        while (*line) {
            char* end = strchr(line, '\n');
            if (end)
                *end = '\0';
            log_line("output: %s", line);
            if (!end)
                break;
            line = end + 1;
        }
    }
}

static int run_in_vm(bh_session_id session, const char* path, const char* const* argv, const char* input)
{
    char args[1024];
    int fd = 12345; /* the service must overwrite it: with -1 on failure */
    int result = api->execute_binary(session, path, argv, &fd);
    join_argv(argv, args, sizeof(args));
    if (result != 0) {
        log_line("execute_binary(session_id=%u, path=%s, argv=%s) -> %s (out_fd=%d)", session, str(path),
            args, bh_result_name(result), fd);
        return result;
    }
    log_line("execute_binary(session_id=%u, path=%s, argv=%s) -> %s", session, str(path), args,
        bh_result_name(result));
    log_output(fd, input);
    return 0;
}

static int run_in_distribution(
    bh_session_id session, const struct bh_uuid* id, const char* path, const char* const* argv)
{
    char args[1024], uuid[37];
    int fd = 12345;
    int result = api->execute_binary_in_distribution(session, id, path, argv, &fd);
    join_argv(argv, args, sizeof(args));
    if (id)
        format_uuid(id, uuid);
    else
        strcpy(uuid, "(null)");
    if (result != 0) {
        log_line("execute_binary_in_distribution(session_id=%u, id=%s, path=%s, argv=%s) -> %s (out_fd=%d)",
            session, uuid, str(path), args, bh_result_name(result), fd);
        return result;
    }
    log_line("execute_binary_in_distribution(session_id=%u, id=%s, path=%s, argv=%s) -> %s", session, uuid,
        str(path), args, bh_result_name(result));
    log_output(fd, NULL);
    return 0;
}

static int mount_and_log(
    bh_session_id session, const char* host_path, const char* vm_path, int read_only, const char* name)
{
    int result = api->mount_folder(session, host_path, vm_path, read_only, name);
    log_line("mount_folder(session_id=%u, host_path=%s, vm_path=%s, read_only=%d, name=%s) -> %s", session,
        str(host_path), str(vm_path), read_only, str(name), bh_result_name(result));
    return result;
}

static int error_and_log(const char* message)
{
    int result = api->plugin_error(message);
    if (message)
        log_line("plugin_error(message=%s) -> %s", message, bh_result_name(result));
    else
        log_line("plugin_error(NULL) -> %s", bh_result_name(result));
    return result;
}

static void* plugin_error_from_other_thread(void* unused)
{
    int result = api->plugin_error("From another thread");
    (void)unused;
    log_line("plugin_error(message=From another thread) from another thread -> %s", bh_result_name(result));
    return NULL;
}

/* ---- SpawnChild ---- */

static char** tagged_environment(void)
{
    extern char** environ;
    static char tag[PATH_MAX + 32];
    size_t count = 0, i, o = 0;
    char** envp;
    while (environ[count])
        count++;
    envp = calloc(count + 2, sizeof(char*));
    if (!envp)
        return NULL;
    for (i = 0; i < count; i++) {
        if (strncmp(environ[i], "BULKHEAD_FIXTURE_TAG=", 21) != 0)
            envp[o++] = environ[i];
    }
    snprintf(tag, sizeof(tag), "BULKHEAD_FIXTURE_TAG=%s", log_path);
    envp[o++] = tag;
    envp[o] = NULL;
    return envp;
}

/* In a freshly forked child (async-signal-safe calls only): log our pid, become `sleep 1000`. */
static void become_sleeper(const char* kind, char** envp)
{
    static char* const argv[] = { "sleep", "1000", NULL };
    char self[32], line[128];
    ssize_t n = readlink("/proc/self", self, sizeof(self) - 1);
    size_t used = 0, k;
    const char* parts[4];
    if (n <= 0)
        _exit(126);
    self[n] = '\0';
    parts[0] = "child pid=";
    parts[1] = self;
    parts[2] = " (";
    parts[3] = kind;
    for (k = 0; k < 4; k++) {
        size_t length = strlen(parts[k]);
        memcpy(line + used, parts[k], length);
        used += length;
    }
    line[used++] = ')';
    line[used++] = '\n';
    (void)!write(log_fd, line, used);
    execve("/bin/sleep", argv, envp);
    execve("/usr/bin/sleep", argv, envp);
    _exit(127);
}

static void spawn_children(void)
{
    char** envp = tagged_environment();
    pid_t direct, middle;
    if (!envp) {
        log_line("spawn: out of memory");
        return;
    }
    direct = fork();
    if (direct == 0) {
        setsid();
        become_sleeper("direct", envp);
    }
    if (direct < 0)
        log_line("fork -> %s", bh_result_name(-errno));
    middle = fork();
    if (middle == 0) {
        setsid();
        if (fork() == 0)
            become_sleeper("grandchild", envp);
        _exit(0);
    }
    if (middle < 0)
        log_line("fork -> %s", bh_result_name(-errno));
    else
        waitpid(middle, NULL, 0);
    free(envp);
}

/* ---- StderrFlood ---- */

static void* flood(void* unused)
{
    char line[64];
    int i, result = 0;
    (void)unused;
    log_line("flood started (lines=%d)", FLOOD_LINES);
    for (i = 0; i < FLOOD_LINES && result == 0; i++) {
        int length = snprintf(line, sizeof(line), "flood line %d\n", i);
        int done = 0;
        while (done < length) {
            ssize_t n = write(STDERR_FILENO, line + done, (size_t)(length - done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                result = n < 0 ? -errno : -EIO;
                break;
            }
            done += (int)n;
        }
    }
    log_line("flood finished (lines=%d, result=%s)", i, bh_result_name(result));
    return NULL;
}

/* ---- CallbackAfterHook ---- */

static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
static int distribution_started_done;
static bh_session_id late_session;

/* Waits until on_distribution_started has logged (at most 10 s), so the log order is fixed,
 * then calls the service from this thread, long after on_vm_started returned. */
static void* late_call(void* unused)
{
    static const char* const argv[] = { "echo", "late", NULL };
    struct timespec deadline;
    (void)unused;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&late_lock);
    while (!distribution_started_done) {
        if (pthread_cond_timedwait(&late_cond, &late_lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&late_lock);
    usleep(100 * 1000);
    run_in_vm(late_session, "/bin/echo", argv, NULL);
    return NULL;
}

static int start_detached(void* (*function)(void*))
{
    pthread_t thread;
    pthread_attr_t attributes;
    int result;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    result = pthread_create(&thread, &attributes, function, NULL);
    pthread_attr_destroy(&attributes);
    if (result != 0)
        log_line("pthread_create -> %s", bh_result_name(-result));
    return -result;
}

/* ---- AllocateForever and CountOpenFiles ---- */

static void format_limit(rlim_t value, char out[32])
{
    if (value == RLIM_INFINITY)
        strcpy(out, "unlimited");
    else
        snprintf(out, 32, "%llu", (unsigned long long)value);
}

static void log_limit(const char* name, int resource)
{
    struct rlimit limit;
    char soft[32], hard[32];
    if (getrlimit(resource, &limit) != 0) {
        log_line("%s -> %s", name, bh_result_name(-errno));
        return;
    }
    format_limit(limit.rlim_cur, soft);
    format_limit(limit.rlim_max, hard);
    log_line("%s soft=%s hard=%s", name, soft, hard);
}

static int allocate_forever(void)
{
    size_t block = (size_t)ALLOCATION_MIB << 20;
    int allocated = 0;
    log_limit("RLIMIT_AS", RLIMIT_AS);
    while (allocated < ALLOCATION_CAP_MIB) {
        char* p = malloc(block);
        if (!p) {
            log_line("allocation failed after %d MiB", allocated);
            abort();
        }
        memset(p, 0x5a, block); /* touched, so the memory is really used; never freed */
        allocated += ALLOCATION_MIB;
    }
    log_line("no allocation failed in %d MiB", allocated);
    return -ENOMEM;
}

/* Opens /dev/null until open() fails (at most MAX_OPEN_FILES_PROBE times) and logs how many it
 * opened and why it stopped; close_all_opened() closes them again. */
static int opened_fds[MAX_OPEN_FILES_PROBE];
static int opened_count;

static void open_until_failure(void)
{
    int result = 0;
    opened_count = 0;
    while (opened_count < MAX_OPEN_FILES_PROBE) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            result = -errno;
            break;
        }
        opened_fds[opened_count++] = fd;
    }
    log_line("opened %d files, then %s", opened_count, bh_result_name(result));
}

static void close_all_opened(void)
{
    while (opened_count > 0)
        close(opened_fds[--opened_count]);
}

static void count_open_files(void)
{
    log_limit("RLIMIT_NOFILE", RLIMIT_NOFILE);
    open_until_failure();
    close_all_opened();
}

/* ExecuteOutOfFds: execute_binary while this process has no fd left for the answer's socket. */
static void execute_out_of_fds(bh_session_id session)
{
    static const char* const argv[] = { "echo", "fds-back", NULL };
    struct rlimit saved, low;
    if (getrlimit(RLIMIT_NOFILE, &saved) != 0) {
        log_line("RLIMIT_NOFILE -> %s", bh_result_name(-errno));
        return;
    }
    low = saved;
    if (low.rlim_cur == RLIM_INFINITY || low.rlim_cur > 64)
        low.rlim_cur = 64; /* exhausted in a few opens rather than thousands */
    if (setrlimit(RLIMIT_NOFILE, &low) != 0)
        log_line("setrlimit(RLIMIT_NOFILE) -> %s", bh_result_name(-errno));
    open_until_failure();
    run_in_vm(session, "/bin/echo", argv, NULL);
    close_all_opened();
    if (setrlimit(RLIMIT_NOFILE, &saved) != 0)
        log_line("setrlimit(RLIMIT_NOFILE) -> %s", bh_result_name(-errno));
    run_in_vm(session, "/bin/echo", argv, NULL);
}

/* ---- concurrency modes ---- */

/* Reads fd to EOF (at most READ_TIMEOUT_MS) into out (may be NULL), cutting a trailing newline;
 * closes fd. Returns 0, or -ETIME when EOF did not come in time. */
static int read_to_eof(int fd, char* out, size_t size)
{
    size_t used = 0;
    int result = drain(fd, out, size, &used);
    close(fd);
    if (used && out[used - 1] == '\n')
        out[used - 1] = '\0';
    return result;
}

/* Starts count joinable threads running function(index); returns how many started. */
static int start_threads(pthread_t* threads, int count, void* (*function)(void*))
{
    int i, result;
    for (i = 0; i < count; i++) {
        result = pthread_create(&threads[i], NULL, function, (void*)(intptr_t)i);
        if (result != 0) {
            log_line("pthread_create -> %s", bh_result_name(-result));
            break;
        }
    }
    return i;
}

static void join_threads(pthread_t* threads, int count)
{
    int i;
    for (i = 0; i < count; i++)
        pthread_join(threads[i], NULL);
}

/* ConcurrentCallbacks */

#define CONCURRENT_THREADS 4
#define STRESS_THREADS 32
#define STRESS_CALLS 100
static int stress_calls = STRESS_CALLS;
static int worker_rounds; /* CallbacksDuringTermination: distribution starts that get workers; 0: all */

static bh_session_id concurrent_session;
static pthread_barrier_t concurrent_barrier;
static int concurrent_inside, concurrent_max, concurrent_success, concurrent_failures, concurrent_round;
#define CONCURRENT_MAX_ROUNDS 50
static int stress_success, stress_failures;

static void concurrent_enter(void)
{
    int now = __atomic_add_fetch(&concurrent_inside, 1, __ATOMIC_SEQ_CST);
    int max = __atomic_load_n(&concurrent_max, __ATOMIC_SEQ_CST);
    while (now > max
        && !__atomic_compare_exchange_n(&concurrent_max, &max, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

static void concurrent_leave(void)
{
    __atomic_sub_fetch(&concurrent_inside, 1, __ATOMIC_SEQ_CST);
}

/* Runs /bin/true in the VM and reads it to EOF; logs a failure with `what`. */
static int run_true(bh_session_id session, const char* what, int measure)
{
    static const char* const argv[] = { "true", NULL };
    int fd = -1, result;
    if (measure)
        concurrent_enter();
    result = api->execute_binary(session, "/bin/true", argv, &fd);
    if (measure)
        concurrent_leave();
    if (result != 0) {
        log_line("concurrent execute_binary(%s) -> %s (out_fd=%d)", what, bh_result_name(result), fd);
        return result;
    }
    result = read_to_eof(fd, NULL, 0);
    if (result != 0)
        log_line("concurrent execute_binary(%s): reading to EOF -> %s", what, bh_result_name(result));
    return result;
}

static void* concurrent_worker(void* arg)
{
    int index = (int)(intptr_t)arg, result, ok = 1;
    char vm_path[64], name[64];
    snprintf(vm_path, sizeof(vm_path), "/concurrent/%d", index);
    snprintf(name, sizeof(name), "concurrent-%d", index);
    pthread_barrier_wait(&concurrent_barrier);
    if (concurrent_round == 0) {
        concurrent_enter();
        result = api->mount_folder(concurrent_session, own_dir, vm_path, 1, name);
        concurrent_leave();
        if (result != 0) {
            log_line("concurrent mount_folder(vm_path=%s) -> %s", vm_path, bh_result_name(result));
            ok = 0;
        }
    }
    if (run_true(concurrent_session, vm_path, 1) != 0)
        ok = 0;
    if (concurrent_round == 0 || !ok)
        __atomic_add_fetch(ok ? &concurrent_success : &concurrent_failures, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void* stress_worker(void* arg)
{
    int i;
    char what[64];
    snprintf(what, sizeof(what), "stress thread %d", (int)(intptr_t)arg);
    for (i = 0; i < stress_calls; i++)
        __atomic_add_fetch(run_true(concurrent_session, what, 0) == 0 ? &stress_success : &stress_failures, 1,
            __ATOMIC_SEQ_CST);
    return NULL;
}

static void concurrent_callbacks(bh_session_id session)
{
    pthread_t threads[STRESS_THREADS];
    struct timespec start;
    int started;
    concurrent_session = session;
    for (concurrent_round = 0; concurrent_round == 0
         || (concurrent_round < CONCURRENT_MAX_ROUNDS && concurrent_max < CONCURRENT_THREADS);
         concurrent_round++) {
        pthread_barrier_init(&concurrent_barrier, NULL, CONCURRENT_THREADS);
        started = start_threads(threads, CONCURRENT_THREADS, concurrent_worker);
        if (started < CONCURRENT_THREADS) {
            log_line("only %d of %d threads started; exiting", started, CONCURRENT_THREADS);
            _exit(1); /* the others wait at the barrier forever */
        }
        join_threads(threads, started);
        pthread_barrier_destroy(&concurrent_barrier);
    }
    log_line("Concurrent callbacks complete: success=%d failures=%d maxConcurrent=%d", concurrent_success,
        concurrent_failures, concurrent_max);
    log_line("Concurrent rounds: %d", concurrent_round);
    clock_gettime(CLOCK_MONOTONIC, &start);
    started = start_threads(threads, STRESS_THREADS, stress_worker);
    join_threads(threads, started);
    log_line("Stress complete: success=%d failures=%d", stress_success, stress_failures);
    log_line("Stress elapsed: %ld ms (%d threads x %d execute_binary /bin/true)", elapsed_ms(&start), started,
        stress_calls);
}

/* SlowCallbackDoesNotBlockOthers */

static pthread_barrier_t slow_barrier;
static pthread_mutex_t slow_lock = PTHREAD_MUTEX_INITIALIZER;
static char slow_order[64];
static bh_session_id slow_session;

static void* slow_worker(void* arg)
{
    static const char* const slow[] = { "sh", "-c", "sleep 1; echo slow", NULL };
    static const char* const fast[] = { "echo", "fast", NULL };
    int is_slow = (int)(intptr_t)arg == 0, fd = -1, result;
    const char* kind = is_slow ? "slow" : "fast";
    char output[256] = "";
    pthread_barrier_wait(&slow_barrier);
    result = is_slow ? api->execute_binary(slow_session, "/bin/sh", slow, &fd)
                     : api->execute_binary(slow_session, "/bin/echo", fast, &fd);
    if (result == 0)
        result = read_to_eof(fd, output, sizeof(output));
    pthread_mutex_lock(&slow_lock);
    snprintf(slow_order + strlen(slow_order), sizeof(slow_order) - strlen(slow_order), "%s%s",
        slow_order[0] ? " " : "", kind);
    log_line("completed: %s (result=%s, output=%s)", kind, bh_result_name(result), output);
    pthread_mutex_unlock(&slow_lock);
    return NULL;
}

static void slow_callback(bh_session_id session)
{
    pthread_t threads[4];
    int started;
    slow_session = session;
    pthread_barrier_init(&slow_barrier, NULL, 4);
    started = start_threads(threads, 4, slow_worker);
    if (started < 4) {
        log_line("only %d of 4 threads started; exiting", started);
        _exit(1);
    }
    join_threads(threads, started);
    pthread_barrier_destroy(&slow_barrier);
    log_line("Completion order: %s", slow_order);
}

/* AsyncApiCallFromWorker and CallbacksDuringTermination: calls into a running distribution */

#define TERMINATION_THREADS 4
#define MAX_CODES 16

static pthread_mutex_t worker_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t worker_cond = PTHREAD_COND_INITIALIZER;
static int worker_hook_returned, workers_running, workers_stop;
static bh_session_id worker_session;
static struct bh_uuid worker_distribution;
static pthread_t worker_threads[TERMINATION_THREADS];
static int worker_count;
static char async_output[256];

struct code_count {
    int code;
    long count;
};
static struct code_count termination_counts[TERMINATION_THREADS][MAX_CODES];

static void* async_worker(void* unused)
{
    static const char* const argv[] = { "echo", "hello-from-worker", NULL };
    char uuid[37];
    int fd = 12345, result;
    (void)unused;
    pthread_mutex_lock(&worker_lock);
    while (!worker_hook_returned)
        pthread_cond_wait(&worker_cond, &worker_lock);
    pthread_mutex_unlock(&worker_lock);
    usleep(200 * 1000);
    result
        = api->execute_binary_in_distribution(worker_session, &worker_distribution, "/bin/echo", argv, &fd);
    format_uuid(&worker_distribution, uuid);
    if (result != 0) {
        log_line("execute_binary_in_distribution(session_id=%u, id=%s, path=/bin/echo, argv=echo "
                 "hello-from-worker) "
                 "-> %s (out_fd=%d)",
            worker_session, uuid, bh_result_name(result), fd);
        snprintf(async_output, sizeof(async_output), "<%s>", bh_result_name(result));
        return NULL;
    }
    log_line("execute_binary_in_distribution(session_id=%u, id=%s, path=/bin/echo, argv=echo "
             "hello-from-worker) -> OK",
        worker_session, uuid);
    result = read_to_eof(fd, async_output, sizeof(async_output));
    if (result != 0)
        snprintf(async_output, sizeof(async_output), "<reading: %s>", bh_result_name(result));
    return NULL;
}

static void* termination_worker(void* arg)
{
    static const char* const argv[] = { "true", NULL };
    int index = (int)(intptr_t)arg;
    for (;;) {
        int fd = -1, result, i;
        pthread_mutex_lock(&worker_lock);
        i = workers_stop;
        pthread_mutex_unlock(&worker_lock);
        if (i)
            break;
        result = api->execute_binary_in_distribution(
            worker_session, &worker_distribution, "/bin/true", argv, &fd);
        if (result == 0)
            result = read_to_eof(fd, NULL, 0);
        for (i = 0; i < MAX_CODES; i++) {
            struct code_count* slot = &termination_counts[index][i];
            if (slot->count == 0 || slot->code == result) {
                slot->code = result;
                slot->count++;
                break;
            }
        }
        usleep(1000);
    }
    return NULL;
}

static void start_distribution_workers(const struct bh_session_info* session,
    const struct bh_distribution_info* distribution, void* (*function)(void*), int count)
{
    if (workers_running)
        return;
    worker_session = session->session_id;
    worker_distribution = distribution->id;
    worker_hook_returned = 0;
    workers_stop = 0;
    memset(termination_counts, 0, sizeof(termination_counts));
    worker_count = start_threads(worker_threads, count, function);
    workers_running = 1;
}

static void stop_distribution_workers(void)
{
    if (!workers_running)
        return;
    pthread_mutex_lock(&worker_lock);
    workers_stop = 1;
    worker_hook_returned = 1; /* in case the hook's return was never signalled */
    pthread_cond_broadcast(&worker_cond);
    pthread_mutex_unlock(&worker_lock);
    join_threads(worker_threads, worker_count);
    workers_running = 0;
}

static void log_termination_counts(void)
{
    struct code_count total[TERMINATION_THREADS * MAX_CODES];
    int kinds = 0, t, i, k;
    long sum = 0;
    char line[2048];
    size_t used;
    memset(total, 0, sizeof(total));
    for (t = 0; t < TERMINATION_THREADS; t++) {
        for (i = 0; i < MAX_CODES && termination_counts[t][i].count; i++) {
            for (k = 0; k < kinds && total[k].code != termination_counts[t][i].code; k++) { }
            if (k == kinds)
                total[kinds++].code = termination_counts[t][i].code;
            total[k].count += termination_counts[t][i].count;
            sum += termination_counts[t][i].count;
        }
    }
    used = (size_t)snprintf(line, sizeof(line), "Termination call results: total=%ld", sum);
    for (k = 0; k < kinds && used < sizeof(line); k++)
        used += (size_t)snprintf(
            line + used, sizeof(line) - used, " %s=%ld", bh_result_name(total[k].code), total[k].count);
    log_line("%s", line);
}

/* HammerThroughShutdown and StuckCallback */

#define HAMMER_THREADS 4

static pthread_t hammer_threads[HAMMER_THREADS];
static int hammer_started;
static bh_session_id hammer_session;
static struct bh_uuid hammer_distribution;
static long hammer_calls;
static pthread_mutex_t hammer_lock = PTHREAD_MUTEX_INITIALIZER;
static int hammer_seen[MAX_CODES], hammer_seen_count;

/* Logs a result code the first time any hammer thread sees it. */
static void hammer_record(int result)
{
    long calls = __atomic_add_fetch(&hammer_calls, 1, __ATOMIC_SEQ_CST);
    int i;
    pthread_mutex_lock(&hammer_lock);
    for (i = 0; i < hammer_seen_count && hammer_seen[i] != result; i++) { }
    if (i == hammer_seen_count && i < MAX_CODES) {
        hammer_seen[hammer_seen_count++] = result;
        log_line("Hammer result: %s (after %ld calls)", bh_result_name(result), calls);
    }
    pthread_mutex_unlock(&hammer_lock);
}

static void* hammer_worker(void* arg)
{
    static const char* const argv[] = { "true", NULL };
    long round = (long)(intptr_t)arg;
    for (;; round++) {
        int fd = -1, result;
        if (round % 2)
            result = api->execute_binary(hammer_session, "/bin/true", argv, &fd);
        else
            result = api->execute_binary_in_distribution(
                hammer_session, &hammer_distribution, "/bin/true", argv, &fd);
        if (result == 0)
            result = read_to_eof(fd, NULL, 0);
        hammer_record(result);
        usleep(1000);
    }
    return NULL;
}

static void start_hammer(
    const struct bh_session_info* session, const struct bh_distribution_info* distribution)
{
    if (hammer_started)
        return;
    hammer_started = 1;
    hammer_session = session->session_id;
    hammer_distribution = distribution->id;
    start_threads(hammer_threads, HAMMER_THREADS, hammer_worker);
}

static bh_session_id stuck_session;
static struct bh_uuid stuck_distribution;
static pthread_t stuck_thread;

static void* stuck_worker(void* unused)
{
    static const char* const argv[] = { "true", NULL };
    char go[PATH_MAX + 8];
    int fd = -1, result, waited;
    (void)unused;
    snprintf(go, sizeof(go), "%s/go", own_dir);
    for (waited = 0; access(go, F_OK) != 0 && waited < 6000; waited++)
        usleep(10 * 1000);
    log_line("Stuck call started");
    result = api->execute_binary_in_distribution(stuck_session, &stuck_distribution, "/bin/true", argv, &fd);
    log_line("Stuck call returned %s (out_fd=%d)", bh_result_name(result), fd);
    if (result == 0)
        close(fd);
    return NULL;
}

static void start_stuck_worker(
    const struct bh_session_info* session, const struct bh_distribution_info* distribution)
{
    stuck_session = session->session_id;
    stuck_distribution = distribution->id;
    if (pthread_create(&stuck_thread, NULL, stuck_worker, NULL) == 0)
        pthread_detach(stuck_thread);
}

/* TwoSessionsAtOnce */

static int two_sessions_inside;

static void two_sessions_vm_started(bh_session_id session)
{
    int before = __atomic_fetch_add(&two_sessions_inside, 1, __ATOMIC_SEQ_CST);
    if (before > 0)
        log_line("overlap (session_id=%u, inside=%d)", session, before + 1);
    mount_and_log(session, own_dir, "/two-sessions", 1, "two-sessions");
    usleep(300 * 1000);
    before = __atomic_load_n(&two_sessions_inside, __ATOMIC_SEQ_CST);
    if (before > 1)
        log_line("overlap (session_id=%u, inside=%d)", session, before);
    __atomic_sub_fetch(&two_sessions_inside, 1, __ATOMIC_SEQ_CST);
}

/* ThreadBeforeFirstHook and ThreadAfterEntryFailure */

static void* entry_call(void* unused)
{
    static const char* const argv[] = { "true", NULL };
    (void)unused;
    run_in_vm(1, "/bin/true", argv, NULL);
    return NULL;
}

/* ---- hooks ---- */

static int success_vm_started(bh_session_id session)
{
    static const char* const cat_hello[] = { "cat", "/test-plugin/deep/folder/hello", NULL };
    static const char* const cat_stdin[] = { "cat", NULL };
    static const char* const probe[] = { "sh", "-c",
        "if touch /test-plugin/deep/folder/probe 2>/dev/null; then echo writable; else echo read-only; fi",
        NULL };
    char hello[PATH_MAX + 8];
    int fd, result = 0;

    mount_and_log(session, own_dir, "/test-plugin/deep/folder", 1, "test-plugin");
    /* Written from the host side after the mount: the VM must see the live folder. */
    snprintf(hello, sizeof(hello), "%s/hello", own_dir);
    fd = open(hello, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "OK", 2) != 2)
        result = -errno;
    if (fd >= 0)
        close(fd);
    log_line("write %s -> %s", hello, bh_result_name(result));
    run_in_vm(session, "/bin/cat", cat_hello, NULL);
    run_in_vm(session, "/bin/sh", probe, NULL);
    run_in_vm(session, "/bin/cat", cat_stdin, "ping\n");
    return 0;
}

static int api_errors_vm_started(bh_session_id session)
{
    static const char* const missing[] = { "bulkhead-missing-program", NULL };
    pthread_t thread;

    mount_and_log(session, "/nonexistent/bulkhead-fixture", "/missing", 1, "missing");
    run_in_vm(session, "/nonexistent/bulkhead-missing-program", missing, NULL);
    mount_and_log(9999, own_dir, "/unknown-session", 1, "unknown-session");
    mount_and_log(session, own_dir, "relative/path", 1, "relative");
    if (pthread_create(&thread, NULL, plugin_error_from_other_thread, NULL) == 0)
        pthread_join(thread, NULL);
    error_and_log(NULL);
    error_and_log("First message");
    error_and_log("Second message");
    return 0; /* a message attached but no failure: the VM starts normally */
}

/* Sends one fd and one byte on the call lane registry (fd 6), as a host's thread does. */
static int register_lane(int fd)
{
    char byte = 1;
    struct iovec iov = { &byte, 1 };
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buffer;
    msg.msg_controllen = sizeof(control.buffer);
    struct cmsghdr* header = CMSG_FIRSTHDR(&msg);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof(int));
    return sendmsg(6, &msg, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

/* The lane abuse modes: what a hostile host could do to the service's ends of its lanes. */
static void abuse_lanes(void)
{
    int result = 0;
    const char* what = "?";
    if (mode == MODE_HOOK_LANE_GARBAGE) {
        /* A stream message header claiming 65536 segments: never a valid hook answer. */
        static const unsigned char header[8] = { 0xff, 0xff, 0, 0, 0, 0, 0, 0 };
        what = "an impossible header on fd 5";
        if (write(5, header, sizeof(header)) != (ssize_t)sizeof(header))
            result = -errno;
    } else if (mode == MODE_LANE_NOT_A_SOCKET) {
        int ends[2];
        what = "a pipe registered as a call lane";
        if (pipe(ends) < 0)
            result = -errno;
        else
            result = register_lane(ends[0]);
    } else if (mode == MODE_TOO_MANY_LANES) {
        what = "65 call lanes registered";
        for (int i = 0; i < 65 && result == 0; ++i) {
            int ends[2];
            if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ends) < 0)
                result = -errno;
            else
                result = register_lane(ends[1]); /* ends[0] stays open: the lane stays */
        }
    } else {
        int ends[2];
        what = "13 bytes on a call lane";
        if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ends) < 0 || register_lane(ends[1]) < 0)
            result = -errno;
        else if (send(ends[0], "not a message", 13, MSG_NOSIGNAL) != 13)
            result = -errno;
    }
    /* Logged after: the service may kill this process as soon as it reads what was sent. */
    log_line("lane abuse: %s -> %s", what, bh_result_name(result));
}

static int on_vm_started(const struct bh_session_info* session, const struct bh_vm_settings* settings)
{
    log_line("VM created (session_id=%u, uid=%u, gid=%u, user_name=%s, custom_config_flags=%u)",
        session->session_id, session->uid, session->gid, str(session->user_name),
        settings->custom_config_flags);
    switch (mode) {
    case MODE_SUCCESS:
        return success_vm_started(session->session_id);
    case MODE_FAIL_TO_START_VM:
        return -EPERM;
    case MODE_API_ERRORS:
        return api_errors_vm_started(session->session_id);
    case MODE_ERROR_MESSAGE_START_VM:
    case MODE_FAIL_TO_START_VM_WITH_PLUGIN_ERROR_MESSAGE:
        error_and_log("Plugin error message");
        return -EPERM;
    case MODE_HOST_CRASH:
        log_line("sending SIGKILL to own process");
        kill(getpid(), SIGKILL);
        pause();
        return 0;
    case MODE_SPAWN_CHILD:
        spawn_children();
        return 0;
    case MODE_HANG_IN_VM_STARTED:
        /* A child first, so the test can check that what a hung plugin spawned dies with it. */
        spawn_children();
        log_line("hanging in on_vm_started");
        for (;;)
            pause();
    case MODE_RETURN_LATE:
        sleep(6);
        log_line("on_vm_started returned late (session_id=%u)", session->session_id);
        return 0;
    case MODE_STDERR_FLOOD:
        start_detached(flood);
        return 0;
    case MODE_GARBAGE: {
        unsigned char bytes[4096];
        struct stat st;
        const char* type = "none";
        int result = 0;
        size_t got = 0;
        while (got < sizeof(bytes)) {
            ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (fstat(3, &st) == 0)
            type = S_ISSOCK(st.st_mode) ? "socket" : S_ISFIFO(st.st_mode) ? "fifo" : "other";
        /* Logged first: the service may kill this process as soon as the bytes arrive. */
        log_line("writing %zu random bytes to fd 3 (type=%s)", got, type);
        if (write(3, bytes, got) < 0)
            result = -errno;
        log_line("write to fd 3 -> %s", bh_result_name(result));
        sleep(1);
        return 0;
    }
    case MODE_HOOK_LANE_GARBAGE:
    case MODE_LANE_NOT_A_SOCKET:
    case MODE_TOO_MANY_LANES:
    case MODE_CALL_LANE_GARBAGE:
        abuse_lanes();
        sleep(1);
        return 0;
    case MODE_CALLBACK_AFTER_HOOK:
        late_session = session->session_id;
        return start_detached(late_call);
    case MODE_ALLOCATE_FOREVER:
        return allocate_forever();
    case MODE_COUNT_OPEN_FILES:
        count_open_files();
        return 0;
    case MODE_EXECUTE_OUT_OF_FDS:
        execute_out_of_fds(session->session_id);
        return 0;
    case MODE_CONCURRENT_CALLBACKS:
        concurrent_callbacks(session->session_id);
        return 0;
    case MODE_SLOW_CALLBACK:
        slow_callback(session->session_id);
        return 0;
    case MODE_TWO_SESSIONS_AT_ONCE:
        two_sessions_vm_started(session->session_id);
        return 0;
    default:
        return 0;
    }
}

static int on_vm_stopping(const struct bh_session_info* session)
{
    static const char* const echo[] = { "echo", "stopping", NULL };
    log_line("VM stopping (session_id=%u, uid=%u, gid=%u, user_name=%s)", session->session_id, session->uid,
        session->gid, str(session->user_name));
    if (mode == MODE_API_ERRORS) {
        run_in_vm(session->session_id, "/bin/echo", echo, NULL); /* the VM still serves calls */
        error_and_log("Not a veto hook");
    }
    if (mode == MODE_CALLBACKS_DURING_TERMINATION && workers_running) {
        usleep(200 * 1000); /* the threads go on calling while the VM is stopping */
        stop_distribution_workers();
        log_termination_counts();
    }
    if (mode == MODE_STOP_SLOWLY) {
        sleep(3);
        log_line("on_vm_stopping returned (session_id=%u)", session->session_id);
    }
    return mode == MODE_FAIL_TO_STOP_VM ? -EPERM : 0;
}

static void log_distribution(
    const char* event, const struct bh_session_info* session, const struct bh_distribution_info* distribution)
{
    char uuid[37];
    format_uuid(&distribution->id, uuid);
    log_line(
        "Distribution %s (session_id=%u, name=%s, id=%s, package=%s, flavor=%s, version=%s, init_pid=%u, "
        "pid_namespace=%llu)",
        event, session->session_id, str(distribution->name), uuid, str(distribution->package),
        str(distribution->flavor), str(distribution->version), distribution->init_pid,
        (unsigned long long)distribution->pid_namespace);
}

static int on_distribution_started(
    const struct bh_session_info* session, const struct bh_distribution_info* distribution)
{
    static const char* const os_release[] = { "cat", "/etc/os-release", NULL };
    static const char* const missing[] = { "bulkhead-missing-program", NULL };
    static const struct bh_uuid unknown
        = { { 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1 } };
    int result = 0;

    log_distribution("started", session, distribution);
    switch (mode) {
    case MODE_FAIL_TO_START_DISTRO:
        result = -EPERM;
        break;
    case MODE_ERROR_MESSAGE_START_DISTRO:
        error_and_log("Plugin error message");
        result = -EPERM;
        break;
    case MODE_RUN_DISTRO_COMMAND:
        run_in_distribution(session->session_id, &distribution->id, "/bin/cat", os_release);
        run_in_distribution(
            session->session_id, &distribution->id, "/nonexistent/bulkhead-missing-program", missing);
        run_in_distribution(session->session_id, &unknown, "/bin/cat", os_release);
        run_in_distribution(session->session_id, NULL, "/bin/cat", os_release);
        break;
    case MODE_ASYNC_API_CALL_FROM_WORKER:
        start_distribution_workers(session, distribution, async_worker, 1);
        break;
    case MODE_CALLBACKS_DURING_TERMINATION: {
        static int rounds;
        if (worker_rounds == 0 || rounds++ < worker_rounds)
            start_distribution_workers(session, distribution, termination_worker, TERMINATION_THREADS);
        break;
    }
    case MODE_HAMMER_THROUGH_SHUTDOWN:
        start_hammer(session, distribution);
        break;
    case MODE_STUCK_CALLBACK:
        start_stuck_worker(session, distribution);
        break;
    default:
        break;
    }
    pthread_mutex_lock(&late_lock);
    distribution_started_done = 1;
    pthread_cond_broadcast(&late_cond);
    pthread_mutex_unlock(&late_lock);
    if (mode == MODE_ASYNC_API_CALL_FROM_WORKER) {
        /* The worker waits for this, then 200 ms more: its call comes after the hook returned. */
        pthread_mutex_lock(&worker_lock);
        worker_hook_returned = 1;
        pthread_cond_broadcast(&worker_cond);
        pthread_mutex_unlock(&worker_lock);
    }
    return result;
}

static int on_distribution_stopping(
    const struct bh_session_info* session, const struct bh_distribution_info* distribution)
{
    log_distribution("stopping", session, distribution);
    if (mode == MODE_ASYNC_API_CALL_FROM_WORKER && workers_running) {
        stop_distribution_workers();
        log_line("Async worker output: %s", async_output);
    }
    return mode == MODE_FAIL_TO_STOP_DISTRO ? -EPERM : 0;
}

static void log_offline(const char* event, const struct bh_session_info* session,
    const struct bh_offline_distribution_info* distribution)
{
    char uuid[37];
    format_uuid(&distribution->id, uuid);
    log_line("Distribution %s (session_id=%u, name=%s, id=%s, package=%s, flavor=%s, version=%s)", event,
        session->session_id, str(distribution->name), uuid, str(distribution->package),
        str(distribution->flavor), str(distribution->version));
}

static int on_distribution_registered(
    const struct bh_session_info* session, const struct bh_offline_distribution_info* distribution)
{
    log_offline("registered", session, distribution);
    return mode == MODE_FAIL_TO_REGISTER_UNREGISTER_DISTRO ? -EPERM : 0;
}

static int on_distribution_unregistered(
    const struct bh_session_info* session, const struct bh_offline_distribution_info* distribution)
{
    static const char* const echo[] = { "echo", "unregistered", NULL };
    log_offline("unregistered", session, distribution);
    if (mode == MODE_API_ERRORS) {
        /* The tests unregister with no VM running. */
        mount_and_log(session->session_id, own_dir, "/no-vm", 1, "no-vm");
        run_in_vm(session->session_id, "/bin/echo", echo, NULL);
        error_and_log("Not a veto hook");
    }
    return mode == MODE_FAIL_TO_REGISTER_UNREGISTER_DISTRO ? -EPERM : 0;
}

/* ---- configuration and entry point ---- */

/* Copies a configuration value, cutting it at the destination's size (always NUL-terminated). */
/* ---- Container sessions (tests/integration/plugins-containers.sh) ----
 *
 *   Container session created (session_id=S, name=N, application_pid=P, uid=U, gid=G, user_name=N)
 *   Container session stopping (same fields)
 *   Container VM started (session_id=S, name=N)
 *   Container VM stopping (session_id=S, name=N)
 *   create_process(PATH) -> RESULT [errno=E] [exit=CODE] [output=TEXT]
 *   mount(MOUNTPOINT) -> RESULT / unmount(MOUNTPOINT) -> RESULT
 *   Image created (id=ID, name=TAG)                   Id and RepoTags[0] of the inspect JSON
 *   Image deleted (id=ID)
 *   Container started (name=N, image=I, state=S)      Name, Image and State.Status of the JSON
 *   Container stopping (id=ID)
 *   (a member missing from the JSON, or not a string, prints as "?")
 *
 *   WslcContainerRejected (on_container_started): after its usual line, logs "vetoing the
 *   container", calls plugin_error("container rejected by test-plugin") (the usual plugin_error
 *   line) and returns -EPERM.
 *
 *   WslcHostKilledInCreateProcess (on_container_vm_started): 4 threads each keep 4
 *   `/bin/sleep 987` processes (never released), log "killers: 16 kept" once all are, then call
 *   container_create_process(/bin/sleep 987) and release it, without pause, until a call fails;
 *   the test SIGKILLs the host meanwhile, so calls are in flight.
 */

/* Runs path with argv/envp in the session's VM: feeds `input` to its stdin, reads its stdout to
 * EOF, waits for the exit fd and logs "create_process(PATH) -> RESULT errno=E exit=CODE output=TEXT"
 * under `label`. Returns the create result. */
static int run_process(bh_container_session_id session, const char* label, const char* const* argv,
    const char* const* envp, const char* input)
{
    struct bh_process* process = NULL;
    int err = -1, rc, code = -1, fd = -1, exit_fd = -1;
    char output[512] = "";
    rc = api->container_create_process(session, argv[0], argv, envp, &process, &err);
    if (rc != 0) {
        log_line("%s -> %s errno=%d (process=%s)", label, bh_result_name(rc), err, process ? "set" : "NULL");
        return rc;
    }
    if (api->process_get_fd(process, 0, &fd) == 0) {
        if (input)
            (void)!write(fd, input, strlen(input));
        close(fd);
    }
    if (api->process_get_fd(process, 1, &fd) == 0)
        read_to_eof(fd, output, sizeof(output));
    if (api->process_get_exit_fd(process, &exit_fd) == 0) {
        struct pollfd p = { exit_fd, POLLIN, 0 };
        if (poll(&p, 1, READ_TIMEOUT_MS) != 1)
            log_line("%s: the exit fd did not poll readable", label);
        close(exit_fd);
    }
    int exit_rc = api->process_get_exit_code(process, &code);
    api->process_release(process);
    log_line(
        "%s -> %s exit=%d (%s) output=%s", label, bh_result_name(rc), code, bh_result_name(exit_rc), output);
    return rc;
}

static const char* const true_argv[] = { "/bin/true", NULL };

/* ---- A small JSON reader: what a plugin needs to read members of the inspect JSON ----
 *
 * Each function takes a pointer into the text and returns the position after what it read, or NULL
 * when the text is not what it expects. Values are never built, only skipped or copied. */

#define JSON_MAX_DEPTH 64

static const char* json_space(const char* p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static int json_hex(const char* p, unsigned* out)
{
    unsigned value = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        value <<= 4;
        if (c >= '0' && c <= '9')
            value |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            value |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            value |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = value;
    return 0;
}

/* Appends `c` to out[*used] if it still fits (one byte is kept for the NUL). */
static void json_put(char* out, size_t size, size_t* used, char c)
{
    if (out && *used + 1 < size)
        out[(*used)++] = c;
}

static void json_put_utf8(char* out, size_t size, size_t* used, unsigned code)
{
    if (code < 0x80) {
        json_put(out, size, used, (char)code);
    } else if (code < 0x800) {
        json_put(out, size, used, (char)(0xc0 | (code >> 6)));
        json_put(out, size, used, (char)(0x80 | (code & 0x3f)));
    } else if (code < 0x10000) {
        json_put(out, size, used, (char)(0xe0 | (code >> 12)));
        json_put(out, size, used, (char)(0x80 | ((code >> 6) & 0x3f)));
        json_put(out, size, used, (char)(0x80 | (code & 0x3f)));
    } else {
        json_put(out, size, used, (char)(0xf0 | (code >> 18)));
        json_put(out, size, used, (char)(0x80 | ((code >> 12) & 0x3f)));
        json_put(out, size, used, (char)(0x80 | ((code >> 6) & 0x3f)));
        json_put(out, size, used, (char)(0x80 | (code & 0x3f)));
    }
}

/* The string at `p` (its opening quote), unescaped into `out` (cut to `size`, NUL-terminated; `out`
 * NULL: only skipped). */
static const char* json_string(const char* p, char* out, size_t size)
{
    size_t used = 0;
    if (*p != '"')
        return NULL;
    for (p++; *p != '"'; p++) {
        unsigned code;
        if ((unsigned char)*p < 0x20)
            return NULL; /* the NUL that ends the text, or a raw control character */
        if (*p != '\\') {
            json_put(out, size, &used, *p);
            continue;
        }
        switch (*++p) {
        case '"':
        case '\\':
        case '/':
            json_put(out, size, &used, *p);
            break;
        case 'b':
            json_put(out, size, &used, '\b');
            break;
        case 'f':
            json_put(out, size, &used, '\f');
            break;
        case 'n':
            json_put(out, size, &used, '\n');
            break;
        case 'r':
            json_put(out, size, &used, '\r');
            break;
        case 't':
            json_put(out, size, &used, '\t');
            break;
        case 'u':
            if (json_hex(p + 1, &code) != 0)
                return NULL;
            p += 4;
            if (code >= 0xd800 && code < 0xdc00) { /* a high surrogate: its low one follows */
                unsigned low;
                if (p[1] != '\\' || p[2] != 'u' || json_hex(p + 3, &low) != 0 || low < 0xdc00 || low > 0xdfff)
                    return NULL;
                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            } else if (code >= 0xdc00 && code <= 0xdfff) {
                return NULL;
            }
            json_put_utf8(out, size, &used, code);
            break;
        default:
            return NULL; /* an unknown escape, or the end of the text */
        }
    }
    if (out && size)
        out[used] = '\0';
    return p + 1;
}

/* Skips the value at `p`: an object or array with everything nested in it, a string, or a number or
 * literal. Brackets must match. */
static const char* json_skip(const char* p)
{
    char open[JSON_MAX_DEPTH];
    int depth = 0;
    p = json_space(p);
    do {
        if (*p == '"') {
            p = json_string(p, NULL, 0);
            if (!p)
                return NULL;
        } else if (*p == '{' || *p == '[') {
            if (depth == JSON_MAX_DEPTH)
                return NULL;
            open[depth++] = *p++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0 || open[depth - 1] != (*p == '}' ? '{' : '['))
                return NULL;
            depth--;
            p++;
        } else if (*p == '\0') {
            return NULL;
        } else if (depth == 0) { /* a number or literal standing alone */
            const char* start = p;
            while (*p && !strchr(",}] \t\n\r", *p))
                p++;
            return p == start ? NULL : p;
        } else {
            p++; /* separators, numbers and literals inside a container */
        }
    } while (depth > 0);
    return p;
}

/* The value of the member `name` of the object at `p`, or NULL when it has none. */
static const char* json_member(const char* p, const char* name)
{
    char key[256];
    if (!p || *(p = json_space(p)) != '{')
        return NULL;
    p = json_space(p + 1);
    if (*p == '}')
        return NULL;
    for (;;) {
        p = json_string(p, key, sizeof(key));
        if (!p || *(p = json_space(p)) != ':')
            return NULL;
        p = json_space(p + 1);
        if (strcmp(key, name) == 0)
            return p;
        p = json_skip(p);
        if (!p || *(p = json_space(p)) != ',')
            return NULL; /* '}': the object ended without it */
        p = json_space(p + 1);
    }
}

/* The string `value` (a string, or an array whose first element is one) copied to `out`; "?" when
 * there is none. */
static const char* json_text(const char* value, char* out, size_t size)
{
    if (value && *value == '[')
        value = json_space(value + 1);
    if (!value || !json_string(value, out, size))
        return "?";
    return out;
}

static void log_container(const char* event, const struct bh_container_session_info* s)
{
    log_line(
        "Container session %s (session_id=%u, name=%s, application_pid=%d, uid=%u, gid=%u, user_name=%s)",
        event, s->session_id, str(s->display_name), s->application_pid, s->uid, s->gid, str(s->user_name));
}

/* mount+unmount of the plugin's directory at /restart-mount, and /bin/true, logged as ok or failed. */
static void restart_calls(bh_container_session_id session, const char* when)
{
    int rc = run_process(session, "true", true_argv, NULL, NULL);
    int mounted = api->container_mount_folder(session, own_dir, "/restart-mount", 1);
    int unmounted = mounted == 0 ? api->container_unmount_folder(session, "/restart-mount") : 1;
    log_line("%s: true %s, mount %s, unmount %s", when, rc == 0 ? "ok" : "failed",
        mounted == 0 ? "ok" : "failed",
        unmounted == 0       ? "ok"
            : unmounted == 1 ? "skipped"
                             : "failed");
}

/* WslcAsyncCallbackPostReturn: a thread calls 200 ms after on_container_session_created returned,
 * and, when the session's VM is being started (--start-vm), not before its on_container_vm_started
 * (at most 4 s): under ThreadSanitizer a VM takes longer than 200 ms to start, and the case is about
 * a call after the hook returned, not one racing the VM's start. */
static bh_container_session_id async_session;
static pthread_mutex_t async_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t async_cond = PTHREAD_COND_INITIALIZER;
static int async_vm_started;
static void* async_container_call(void* unused)
{
    struct timespec until;
    (void)unused;
    usleep(200 * 1000);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 4;
    pthread_mutex_lock(&async_lock);
    while (!async_vm_started && pthread_cond_timedwait(&async_cond, &async_lock, &until) == 0) { }
    pthread_mutex_unlock(&async_lock);
    run_process(async_session, "post-return create_process(/bin/true)", true_argv, NULL, NULL);
    return NULL;
}

/* WslcVmStopCommitted */
static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop_window_done, vm_stops;
static bh_container_session_id stop_session;
static struct bh_process* leaked;
static void* stop_window_call(void* unused)
{
    int exit_fd = -1, code = -1;
    (void)unused;
    run_process(stop_session, "stop-window create_process(/bin/true)", true_argv, NULL, NULL);
    pthread_mutex_lock(&stop_lock);
    stop_window_done = 1;
    pthread_cond_signal(&stop_cond);
    pthread_mutex_unlock(&stop_lock);
    if (api->process_get_exit_fd(leaked, &exit_fd) == 0) {
        struct pollfd p = { exit_fd, POLLIN, 0 };
        int ready = poll(&p, 1, READ_TIMEOUT_MS);
        close(exit_fd);
        int rc = api->process_get_exit_code(leaked, &code);
        log_line("leaked sleep: exit fd %s, exit code %s %d", ready == 1 ? "readable" : "not readable",
            bh_result_name(rc), code);
    }
    api->process_release(leaked);
    return NULL;
}

/* WslcHostKilledInCreateProcess */
#define KILLED_THREADS 4
#define KILLED_KEPT 4
static bh_container_session_id killed_session;
static int killed_kept;
static void* killed_worker(void* unused)
{
    const char* const sleeper[] = { "/bin/sleep", "987", NULL };
    struct bh_process* process = NULL;
    int i;
    (void)unused;
    for (i = 0; i < KILLED_KEPT; i++) {
        if (api->container_create_process(killed_session, sleeper[0], sleeper, NULL, &process, NULL) != 0)
            return NULL;
        if (__atomic_add_fetch(&killed_kept, 1, __ATOMIC_SEQ_CST) == KILLED_THREADS * KILLED_KEPT)
            log_line("killers: %d kept", KILLED_THREADS * KILLED_KEPT);
    }
    while (api->container_create_process(killed_session, sleeper[0], sleeper, NULL, &process, NULL) == 0)
        api->process_release(process);
    return NULL;
}

/* ParallelWslcWithCallbacks: a worker per session waits for its vm_started, then all call at once. */
#define PARALLEL_SESSIONS 2
static pthread_mutex_t parallel_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t parallel_cond = PTHREAD_COND_INITIALIZER;
static bh_container_session_id parallel_started[16];
static int parallel_started_count, parallel_inside, parallel_max, parallel_ok, parallel_workers;
static pthread_barrier_t parallel_barrier;
static void* parallel_worker(void* arg)
{
    bh_container_session_id session = (bh_container_session_id)(intptr_t)arg;
    struct bh_process* process = NULL;
    int i, found = 0, rc;
    pthread_mutex_lock(&parallel_lock);
    while (!found) {
        for (i = 0; i < parallel_started_count; i++)
            found |= parallel_started[i] == session;
        if (!found)
            pthread_cond_wait(&parallel_cond, &parallel_lock);
    }
    pthread_mutex_unlock(&parallel_lock);
    pthread_barrier_wait(&parallel_barrier);
    __atomic_add_fetch(&parallel_inside, 1, __ATOMIC_SEQ_CST);
    int inside = __atomic_load_n(&parallel_inside, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&parallel_max, __ATOMIC_SEQ_CST);
    while (inside > seen
        && !__atomic_compare_exchange_n(
            &parallel_max, &seen, inside, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { }
    rc = api->container_create_process(session, "/bin/true", true_argv, NULL, &process, NULL);
    /* Still inside until every worker got in: the calls overlapped if the count reached them all. */
    usleep(100 * 1000);
    inside = __atomic_load_n(&parallel_inside, __ATOMIC_SEQ_CST);
    seen = __atomic_load_n(&parallel_max, __ATOMIC_SEQ_CST);
    while (inside > seen
        && !__atomic_compare_exchange_n(
            &parallel_max, &seen, inside, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { }
    __atomic_sub_fetch(&parallel_inside, 1, __ATOMIC_SEQ_CST);
    api->process_release(process);
    if (rc == 0)
        __atomic_add_fetch(&parallel_ok, 1, __ATOMIC_SEQ_CST);
    if (__atomic_add_fetch(&parallel_workers, 1, __ATOMIC_SEQ_CST) == PARALLEL_SESSIONS)
        log_line("parallel: %d of %d succeeded, max in flight %d",
            __atomic_load_n(&parallel_ok, __ATOMIC_SEQ_CST), PARALLEL_SESSIONS,
            __atomic_load_n(&parallel_max, __ATOMIC_SEQ_CST));
    return NULL;
}

static void process_api(bh_container_session_id session)
{
    struct bh_process* process = NULL;
    int err = 0, rc, fd = -1, code = -1;
    const char* const missing[] = { "/does/not/exist", NULL };
    const char* const sleeper[] = { "/bin/sleep", "5", NULL };
    const char* const cat[] = { "/bin/cat", NULL };
    const char* const twelve[] = { "/bin/sh", "-c", "exit 12", NULL };
    const char* const echo_env[] = { "/bin/sh", "-c", "echo $BH_TEST_VAR", NULL };
    const char* const env[] = { "BH_TEST_VAR=from-envp", NULL };
    const char* const touch[] = { "/bin/sh", "-c",
        "if echo x 2>/dev/null >/ro-mount/written; then echo written; else echo refused; fi", NULL };
    rc = api->container_create_process(session, missing[0], missing, NULL, &process, &err);
    log_line("missing executable -> %s errno=%d", bh_result_name(rc), err);
    rc = api->container_create_process(session, sleeper[0], sleeper, NULL, &process, &err);
    if (rc == 0) {
        log_line("process_get_fd(999) -> %s", bh_result_name(api->process_get_fd(process, 999, &fd)));
        log_line("exit code while running -> %s", bh_result_name(api->process_get_exit_code(process, &code)));
        api->process_release(process);
    }
    run_process(session, "cat", cat, NULL, "fed-through-stdin");
    run_process(session, "exit 12", twelve, NULL, NULL);
    run_process(session, "envp", echo_env, env, NULL);
    log_line("relative mountpoint -> %s",
        bh_result_name(api->container_mount_folder(session, own_dir, "relative", 0)));
    log_line("missing host folder -> %s",
        bh_result_name(api->container_mount_folder(session, "/does/not/exist", "/missing", 0)));
    log_line("read-only mount -> %s",
        bh_result_name(api->container_mount_folder(session, own_dir, "/ro-mount", 1)));
    run_process(session, "write to read-only", touch, NULL, NULL);
    log_line("unmount of a mount not made -> %s",
        bh_result_name(api->container_unmount_folder(session, "/storage")));
    log_line("unmount -> %s", bh_result_name(api->container_unmount_folder(session, "/ro-mount")));
    log_line("unknown session -> %s",
        bh_result_name(api->container_create_process(999999, "/bin/true", true_argv, NULL, &process, NULL)));
}

static int on_container_session_created(const struct bh_container_session_info* session)
{
    log_container("created", session);
    switch (mode) {
    case MODE_WSLC_SESSION_REJECTED:
        log_line("vetoing the container session");
        return -EPERM;
    case MODE_WSLC_VM_NEVER_STARTED:
        run_process(session->session_id, "create_process(/bin/true) in created", true_argv, NULL, NULL);
        break;
    case MODE_WSLC_ASYNC_CALLBACK_POST_RETURN:
        async_session = session->session_id;
        start_detached(async_container_call);
        break;
    case MODE_PARALLEL_WSLC_WITH_CALLBACKS: {
        pthread_t thread;
        static int barrier_ready;
        if (!barrier_ready++)
            pthread_barrier_init(&parallel_barrier, NULL, PARALLEL_SESSIONS);
        if (pthread_create(&thread, NULL, parallel_worker, (void*)(intptr_t)session->session_id) == 0)
            pthread_detach(thread);
        break;
    }
    case MODE_WSLC_HOST_CRASH_IN_CREATED:
        log_line("sending SIGKILL to own process");
        kill(getpid(), SIGKILL);
        break;
    default:
        break;
    }
    return 0;
}

static int on_container_session_stopping(const struct bh_container_session_info* session)
{
    log_container("stopping", session);
    return 0;
}

static int on_container_vm_started(const struct bh_container_session_info* session)
{
    log_line(
        "Container VM started (session_id=%u, name=%s)", session->session_id, str(session->display_name));
    if (mode == MODE_WSLC_VM_RESTART)
        restart_calls(session->session_id, "vm_started");
    if (mode == MODE_WSLC_PROCESS_API)
        process_api(session->session_id);
    if (mode == MODE_WSLC_HOST_KILLED_IN_CREATE_PROCESS) {
        int i;
        killed_session = session->session_id;
        for (i = 0; i < KILLED_THREADS; i++)
            start_detached(killed_worker);
    }
    if (mode == MODE_WSLC_ASYNC_CALLBACK_POST_RETURN) {
        pthread_mutex_lock(&async_lock);
        async_vm_started = 1;
        pthread_cond_broadcast(&async_cond);
        pthread_mutex_unlock(&async_lock);
    }
    if (mode == MODE_PARALLEL_WSLC_WITH_CALLBACKS) {
        pthread_mutex_lock(&parallel_lock);
        if (parallel_started_count < 16)
            parallel_started[parallel_started_count++] = session->session_id;
        pthread_cond_broadcast(&parallel_cond);
        pthread_mutex_unlock(&parallel_lock);
    }
    return 0;
}

static int on_container_vm_stopping(const struct bh_container_session_info* session)
{
    log_line(
        "Container VM stopping (session_id=%u, name=%s)", session->session_id, str(session->display_name));
    if (mode == MODE_WSLC_VM_RESTART)
        restart_calls(session->session_id, "vm_stopping");
    if (mode == MODE_WSLC_VM_STOP_COMMITTED && vm_stops++ == 0) {
        const char* const sleeper[] = { "/bin/sleep", "60", NULL };
        int rc = api->container_create_process(session->session_id, sleeper[0], sleeper, NULL, &leaked, NULL);
        log_line("kept sleep 60 -> %s", bh_result_name(rc));
        stop_session = session->session_id;
        if (rc == 0 && start_detached(stop_window_call) == 0) {
            pthread_mutex_lock(&stop_lock);
            while (!stop_window_done)
                pthread_cond_wait(&stop_cond, &stop_lock);
            pthread_mutex_unlock(&stop_lock);
        }
    }
    return 0;
}

static int on_image_created(const struct bh_container_session_info* session, const char* inspect_json)
{
    char id[256], name[1024];
    (void)session;
    log_line("Image created (id=%s, name=%s)", json_text(json_member(inspect_json, "Id"), id, sizeof(id)),
        json_text(json_member(inspect_json, "RepoTags"), name, sizeof(name)));
    return 0;
}

static int on_image_deleted(const struct bh_container_session_info* session, const char* image_id)
{
    (void)session;
    log_line("Image deleted (id=%s)", str(image_id));
    return 0;
}

static int on_container_started(const struct bh_container_session_info* session, const char* inspect_json)
{
    char name[1024], image[1024], state[256];
    (void)session;
    log_line("Container started (name=%s, image=%s, state=%s)",
        json_text(json_member(inspect_json, "Name"), name, sizeof(name)),
        json_text(json_member(inspect_json, "Image"), image, sizeof(image)),
        json_text(json_member(json_member(inspect_json, "State"), "Status"), state, sizeof(state)));
    if (mode == MODE_WSLC_CONTAINER_REJECTED) {
        log_line("vetoing the container");
        error_and_log("container rejected by test-plugin");
        return -EPERM;
    }
    return 0;
}

static int on_container_stopping(const struct bh_container_session_info* session, const char* container_id)
{
    (void)session;
    log_line("Container stopping (id=%s)", str(container_id));
    return 0;
}

static void copy_bounded(char* out, size_t size, const char* in)
{
    size_t n = strnlen(in, size - 1);
    memcpy(out, in, n);
    out[n] = '\0';
}

/* The name /proc/self/maps gives the mapping that holds `address`, if it is a memfd named by an
 * absolute path ("/memfd:/abs/path (deleted)"): the file this .so was copied from. */
static int memfd_origin(const void* address, char* out, size_t size)
{
    static const char memfd[] = "/memfd:", deleted[] = " (deleted)";
    char line[PATH_MAX + 256];
    int found = -1;
    FILE* maps = fopen("/proc/self/maps", "re");
    if (!maps)
        return -1;
    while (found < 0 && fgets(line, sizeof(line), maps)) {
        unsigned long long start, end;
        char* name;
        size_t length;
        if (sscanf(line, "%llx-%llx", &start, &end) != 2)
            continue;
        if ((unsigned long long)(uintptr_t)address < start || (unsigned long long)(uintptr_t)address >= end)
            continue;
        line[strcspn(line, "\n")] = '\0';
        name = strstr(line, memfd);
        if (!name)
            break;
        name += sizeof(memfd) - 1;
        length = strlen(name);
        if (length >= sizeof(deleted) - 1 && strcmp(name + length - (sizeof(deleted) - 1), deleted) == 0)
            name[length - (sizeof(deleted) - 1)] = '\0';
        if (name[0] == '/' && strlen(name) < size) {
            strcpy(out, name);
            found = 0;
        }
        break;
    }
    fclose(maps);
    return found;
}

/* Whether this copy of the .so had its variant marker patched; its variant, in `out`. */
static int patched_variant(char* out, size_t size)
{
    size_t prefix = sizeof(VARIANT_PREFIX) - 1, i;
    for (i = 0; i + 1 < size && i + prefix + 1 < sizeof(variant_marker); i++)
        out[i] = variant_marker[prefix + i];
    out[i] = '\0';
    return strcmp(out, "original") != 0;
}

static int read_configuration(void)
{
    Dl_info info = { 0 };
    char so[PATH_MAX], conf[PATH_MAX + 16], line[PATH_MAX + 16], mode_name[128] = "";
    char* slash;
    FILE* file;
    size_t i;

    /* Loaded from a memfd: its name says where it was copied from. Otherwise dli_fname may be a
     * relative or /proc/self/fd/N path: realpath resolves either. */
    if (memfd_origin((const void*)read_configuration, so, sizeof(so)) != 0
        && (!dladdr((void*)read_configuration, &info) || !info.dli_fname || !realpath(info.dli_fname, so))) {
        fprintf(stderr, "test-plugin: cannot find its own path (dladdr: %s)\n",
            info.dli_fname ? info.dli_fname : "(null)");
        return -ENODATA;
    }
    strcpy(own_dir, so);
    slash = strrchr(own_dir, '/');
    if (!slash)
        return -ENODATA;
    *slash = '\0';
    snprintf(conf, sizeof(conf), "%s/fixture.conf", own_dir);
    file = fopen(conf, "re");
    if (!file) {
        fprintf(stderr, "test-plugin: cannot open %s: %s\n", conf, strerror(errno));
        return -ENODATA;
    }
    while (fgets(line, sizeof(line), file)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "mode=", 5) == 0)
            copy_bounded(mode_name, sizeof(mode_name), line + 5);
        else if (strncmp(line, "log=", 4) == 0)
            copy_bounded(log_path, sizeof(log_path), line + 4);
        else if (strncmp(line, "worker_rounds=", 14) == 0)
            worker_rounds = atoi(line + 14);
        else if (strncmp(line, "stress_calls=", 13) == 0) {
            stress_calls = atoi(line + 13);
            if (stress_calls < 1 || stress_calls > 1000) {
                fprintf(stderr, "test-plugin: %s: stress_calls must be 1 to 1000\n", conf);
                fclose(file);
                return -EINVAL;
            }
        }
    }
    fclose(file);
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(mode_name, modes[i]) == 0)
            break;
    }
    if (i == sizeof(modes) / sizeof(modes[0]) || log_path[0] != '/') {
        fprintf(stderr, "test-plugin: %s needs mode=<known mode> and log=<absolute path>\n", conf);
        return -ENODATA;
    }
    mode = (enum mode)i;
    log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        fprintf(stderr, "test-plugin: cannot open %s: %s\n", log_path, strerror(errno));
        return -ENODATA;
    }
    return 0;
}

/* A patched variant says so as soon as any of its code runs: from its ELF constructor, while
 * dlopen() maps it, before anyone looks up the entry point. */
__attribute__((constructor)) static void announce_variant(void)
{
    char variant[64];
    if (patched_variant(variant, sizeof(variant)) && read_configuration() == 0)
        log_line("Plugin variant: %s", variant);
}

__attribute__((visibility("default"))) int BH_PLUGIN_ENTRY_V1(
    const struct bh_plugin_api_v1* service, struct bh_plugin_hooks_v1* hooks)
{
    int result = log_fd >= 0 ? 0 : read_configuration(); /* a patched variant's constructor read it */
    if (result != 0)
        return result;
    api = service;
    log_line("Plugin loaded (mode=%s, api_version=%u.%u.%u)", modes[mode], service->version.major,
        service->version.minor, service->version.revision);
    if (mode == MODE_FAIL_TO_LOAD)
        return -EINVAL;
    if (mode == MODE_FAIL_TO_LOAD_SLOWLY) {
        sleep(1);
        return -EINVAL;
    }
    if (mode == MODE_THREAD_BEFORE_FIRST_HOOK || mode == MODE_THREAD_AFTER_ENTRY_FAILURE) {
        int started = start_detached(entry_call);
        if (mode == MODE_THREAD_AFTER_ENTRY_FAILURE || started != 0)
            return -EINVAL;
    }
    if (mode == MODE_PLUGIN_REQUIRES_UPDATE)
        BH_PLUGIN_REQUIRE_VERSION(9999, 0, 0, service);
    if (mode == MODE_ENTRY_HANGS) {
        /* Children first, so the test can check that what a hung entry point spawned dies too. */
        spawn_children();
        log_line("hanging in the entry point");
        for (;;)
            pause();
    }
    if (mode == MODE_ENTRY_SPINS) {
        volatile unsigned long spins = 0;
        log_line("spinning in the entry point");
        for (;;)
            ++spins;
    }

    hooks->on_vm_started = on_vm_started;
    hooks->on_vm_stopping = on_vm_stopping;
    hooks->on_distribution_started = on_distribution_started;
    hooks->on_distribution_stopping = on_distribution_stopping;
    hooks->on_distribution_registered = on_distribution_registered;
    hooks->on_distribution_unregistered = on_distribution_unregistered;
    hooks->on_container_session_created = on_container_session_created;
    hooks->on_container_session_stopping = on_container_session_stopping;
    hooks->on_container_vm_started = on_container_vm_started;
    hooks->on_container_vm_stopping = on_container_vm_stopping;
    hooks->on_container_started = on_container_started;
    hooks->on_container_stopping = on_container_stopping;
    hooks->on_image_created = on_image_created;
    hooks->on_image_deleted = on_image_deleted;
    return 0;
}
