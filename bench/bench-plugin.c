/* bench-plugin: the plugin the benchmarks load (bench/README.md). Built only against the public
 * header, like a third party's plugin.
 *
 * Every hook is as cheap as a hook can be, except on_distribution_registered, which takes its
 * orders from the distribution's name (the one free-form string a hook receives), so the
 * benchmark needs no side channel:
 *
 *   "noop"                 return 0 at once
 *   "calls:C"              C mount_folder calls from the hook thread, one after another
 *   "threads:N:calls:C"    N threads, each making C/N mount_folder calls, joined before returning
 *   "exec-C" or "exec-C-TAG"
 *                          C execute_binary("/bin/true") calls from the hook thread, one after
 *                          another, each reading its fd until EOF and closing it; writes
 *                          "C NANOSECONDS CODE" to this .so's path + ".exec" (see exec_order)
 *
 * mount_folder is called with the hook's session id and a fixed path; the benchmark's service
 * side answers it at once with an error code. The hook returns 0, or the first code that was not
 * the expected one, so the benchmark can check every call reached the service.
 *
 * The exec order comes from bench-exec, which registers a distribution by that name with a real
 * bulkheadd (distribution names allow no ':', hence the '-'; TAG keeps names unique). The hook's
 * code does not reach the registering client, hence the result file; dladdr gives this plugin's
 * real path even though the host loaded it from a memfd. */
#define _GNU_SOURCE
#include <bulkhead/plugin_api.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static const struct bh_plugin_api_v1* api;

struct worker {
    pthread_t thread;
    bh_session_id session;
    long calls;
    int result; /* the last code the service answered */
};

static int call_once(bh_session_id session)
{
    return api->mount_folder(session, "/bench", "/bench", 1, "bench");
}

/* Makes `calls` calls; 0 if all answered the same code (the expected one), else the odd one. */
static int call_many(bh_session_id session, long calls)
{
    int first = 0, i;
    for (i = 0; i < calls; i++) {
        int code = call_once(session);
        if (i == 0)
            first = code;
        else if (code != first)
            return code;
    }
    return first;
}

static void* worker_main(void* arg)
{
    struct worker* w = arg;
    w->result = call_many(w->session, w->calls);
    return NULL;
}

static int run_threads(bh_session_id session, int threads, long calls)
{
    struct worker workers[MAX_THREADS];
    int i, started = 0, result = 0;
    if (threads < 1 || threads > MAX_THREADS)
        return -22; /* EINVAL, kept <errno.h>-free like the header */
    for (i = 0; i < threads; i++) {
        workers[i].session = session;
        workers[i].calls = calls / threads;
        workers[i].result = 0;
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        if (i > 0 && workers[i].result != workers[0].result)
            result = workers[i].result;
    }
    if (started < threads)
        return -11; /* EAGAIN: the benchmark reports the failure */
    return result ? result : (started ? workers[0].result : 0);
}

/* One execute_binary("/bin/true"): the fd back, read until EOF (the program ended), closed.
 * 0, the call's failure code, or a negative errno if the fd misbehaved. */
static int exec_true(bh_session_id session)
{
    static const char* const argv[] = { "true", NULL };
    char buffer[64];
    ssize_t n;
    int fd = -1, code = api->execute_binary(session, "/bin/true", argv, &fd);
    if (code != 0)
        return code;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0 || (n < 0 && errno == EINTR)) { }
    code = n < 0 ? -errno : 0;
    close(fd);
    return code;
}

static double now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1e9 + (double)now.tv_nsec;
}

/* Writes "CALLS NANOSECONDS CODE" beside this .so; the benchmark reads it once the registration
 * (and so this hook) is over. */
static int write_result(long calls, double ns, int code)
{
    Dl_info self;
    char path[4096];
    int fd;
    if (!dladdr((void*)write_result, &self) || !self.dli_fname
        || snprintf(path, sizeof(path), "%s.exec", self.dli_fname) >= (int)sizeof(path))
        return -22;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    dprintf(fd, "%ld %.0f %d\n", calls, ns, code);
    close(fd);
    return code;
}

/* Stops at the first failure, which the result then carries. */
static int exec_order(bh_session_id session, long calls)
{
    long i;
    int code = 0;
    double start = now_ns();
    for (i = 0; i < calls && code == 0; i++)
        code = exec_true(session);
    return write_result(i, now_ns() - start, code);
}

/* Returns the code the calls got (all the same), so the caller checks it is the expected one. */
static int run_order(bh_session_id session, const char* order)
{
    int threads;
    long calls;
    if (!order || strcmp(order, "noop") == 0)
        return 0;
    if (sscanf(order, "threads:%d:calls:%ld", &threads, &calls) == 2)
        return run_threads(session, threads, calls);
    if (sscanf(order, "calls:%ld", &calls) == 1)
        return call_many(session, calls);
    if (sscanf(order, "exec-%ld", &calls) == 1)
        return exec_order(session, calls);
    return -22;
}

static int noop_vm(const struct bh_session_info* session, const struct bh_vm_settings* settings)
{
    (void)session;
    (void)settings;
    return 0;
}

static int noop_session(const struct bh_session_info* session)
{
    (void)session;
    return 0;
}

static int noop_distribution(const struct bh_session_info* session, const struct bh_distribution_info* d)
{
    (void)session;
    (void)d;
    return 0;
}

static int noop_offline(const struct bh_session_info* session, const struct bh_offline_distribution_info* d)
{
    (void)session;
    (void)d;
    return 0;
}

/* Not a veto hook, so its return code is ours to use: the code the calls got. */
static int ordered(const struct bh_session_info* session, const struct bh_offline_distribution_info* d)
{
    return run_order(session->session_id, d->name);
}

__attribute__((visibility("default"))) int BH_PLUGIN_ENTRY_V1(
    const struct bh_plugin_api_v1* service, struct bh_plugin_hooks_v1* hooks)
{
    api = service;
    hooks->on_vm_started = noop_vm;
    hooks->on_vm_stopping = noop_session;
    hooks->on_distribution_started = noop_distribution;
    hooks->on_distribution_stopping = noop_distribution;
    hooks->on_distribution_registered = ordered;
    hooks->on_distribution_unregistered = noop_offline;
    return 0;
}
