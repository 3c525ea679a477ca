/* folder-share: an example Bulkhead plugin that shares one host folder, read-only, with every VM.
 *
 * It reads its settings from folder-share.conf beside its own .so:
 *
 *     folder=/srv/bulkhead-share      # host folder to share (absolute)
 *     mountpoint=/mnt/folder-share    # where it appears inside each VM (absolute)
 *
 * and logs every distribution start and stop. Everything it prints goes to stderr, which the
 * service copies into its own log as "plugin <name>: <line>".
 *
 * Build: see docs/plugin-authors.md. Only the public header is used. */

/* dladdr() is a GNU extension; ask for it before any system header is included. */
#define _GNU_SOURCE

#include <bulkhead/plugin_api.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONF_NAME "folder-share.conf"
#define DEFAULT_FOLDER "/srv/bulkhead-share"
#define DEFAULT_MOUNTPOINT "/mnt/folder-share"
/* A hook holds up the operation that triggered it (here: the user's VM start), so every wait
 * in a hook has a deadline. */
#define LS_DEADLINE_MS 5000

/* Set once by the entry point, only read afterwards; the service never runs two hooks of one
 * plugin at the same time, so no lock is needed. */
static const struct bh_plugin_api_v1* g_api;
static char g_folder[PATH_MAX] = DEFAULT_FOLDER;
static char g_mountpoint[PATH_MAX] = DEFAULT_MOUNTPOINT;
/* Whether the folder came from the configuration file: a folder the administrator asked for
 * must be shared or the VM is refused; the built-in default is shared only if it exists. */
static int g_folder_configured;

/* Finds folder-share.conf in the directory of this .so. dladdr on the address of one of our
 * own variables answers "which file was I loaded from", whatever path the administrator
 * configured. */
static int conf_path(char* out, size_t size)
{
    Dl_info info;
    const char* slash;
    if (dladdr(g_folder, &info) == 0 || info.dli_fname == NULL)
        return -ENOENT;
    slash = strrchr(info.dli_fname, '/');
    if (slash == NULL)
        return -ENOENT;
    if ((size_t)snprintf(out, size, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, CONF_NAME)
        >= size)
        return -ENAMETOOLONG;
    return 0;
}

/* Copies an absolute path value into dest; anything else is a configuration error. */
static int set_path(char* dest, const char* value, const char* path, int line_no)
{
    if (value[0] != '/' || strlen(value) >= PATH_MAX) {
        fprintf(stderr, "%s:%d: '%s' is not an absolute path\n", path, line_no, value);
        return -EINVAL;
    }
    strcpy(dest, value);
    return 0;
}

/* Parses key=value lines; '#' starts a comment. A missing file keeps the defaults; a file we
 * cannot read or understand is an error. */
static int read_conf(void)
{
    char path[PATH_MAX], line[PATH_MAX + 64];
    int line_no = 0, result = conf_path(path, sizeof path);
    FILE* file;
    if (result < 0) {
        fprintf(stderr, "cannot locate my own .so (%s); sharing %s if it exists\n", bh_result_name(result),
            g_folder);
        return 0;
    }
    file = fopen(path, "re"); /* "e": O_CLOEXEC, so programs we start never inherit it */
    if (file == NULL && errno == ENOENT) {
        fprintf(stderr, "no %s; sharing %s if it exists. Put 'folder=/abs/dir' there to choose.\n", path,
            g_folder);
        return 0;
    }
    if (file == NULL) {
        result = -errno;
        fprintf(stderr, "cannot read %s: %s\n", path, bh_result_name(result));
        return result;
    }
    while (result == 0 && fgets(line, sizeof line, file) != NULL) {
        char *value, *end = line + strcspn(line, "#\r\n");
        line_no++;
        while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (line[0] == '\0')
            continue;
        value = strchr(line, '=');
        if (value == NULL) {
            fprintf(stderr, "%s:%d: expected key=value\n", path, line_no);
            result = -EINVAL;
            break;
        }
        *value++ = '\0';
        if (strcmp(line, "folder") == 0) {
            result = set_path(g_folder, value, path, line_no);
            g_folder_configured = 1;
        } else if (strcmp(line, "mountpoint") == 0) {
            result = set_path(g_mountpoint, value, path, line_no);
        } else {
            fprintf(stderr, "%s:%d: unknown key '%s'\n", path, line_no, line);
            result = -EINVAL;
        }
    }
    fclose(file);
    return result;
}

/* Formats a UUID the canonical way (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), as `bulkhead list`. */
static void format_uuid(const struct bh_uuid* id, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int i, n = 0;
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[n++] = '-';
        out[n++] = hex[id->bytes[i] >> 4];
        out[n++] = hex[id->bytes[i] & 0xf];
    }
    out[n] = '\0';
}

/* Reads everything the program writes until it exits (EOF), or the deadline passes. */
static int read_all(int fd, char* buf, size_t size)
{
    size_t used = 0;
    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        ssize_t n;
        int ready = poll(&pfd, 1, LS_DEADLINE_MS);
        if (ready == 0)
            return -ETIMEDOUT;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return -errno;
        n = read(fd, buf + used, size - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0 || (used += (size_t)n) == size - 1)
            break; /* the program exited, or we have all we will print */
    }
    buf[used] = '\0';
    return 0;
}

/* Lists the mountpoint from inside the VM: proof that the mount is visible there, not just that
 * the service said yes. Only logs; a listing that fails does not undo a mount that worked. */
static void verify_mount(const struct bh_session_info* session)
{
    const char* const argv[] = { "ls", "-1", g_mountpoint, NULL };
    char out[1024], *c;
    int fd = -1, result = g_api->execute_binary(session->session_id, "/bin/ls", argv, &fd);
    if (result < 0) {
        fprintf(
            stderr, "cannot run /bin/ls in the VM of %s: %s\n", session->user_name, bh_result_name(result));
        return;
    }
    /* fd is ours: it is the program's stdin and stdout. We send nothing, so we end our writing
     * half at once; a program that reads stdin would otherwise wait for us forever. */
    if (shutdown(fd, SHUT_WR) < 0)
        fprintf(stderr, "shutdown of the ls socket: %s\n", bh_result_name(-errno));
    result = read_all(fd, out, sizeof out);
    close(fd);
    if (result < 0) {
        fprintf(
            stderr, "reading ls output from the VM of %s: %s\n", session->user_name, bh_result_name(result));
        return;
    }
    /* One log line, however many entries: newlines between names become spaces. */
    for (c = out; *c != '\0'; c++) {
        if (*c == '\n')
            *c = c[1] != '\0' ? ' ' : '\0';
    }
    fprintf(stderr, "VM of %s: ls %s in the VM shows: %s\n", session->user_name, g_mountpoint,
        out[0] != '\0' ? out : "(empty)");
}

/* on_vm_started may veto: a failure here aborts the VM's creation and the user sees our
 * plugin_error message. */
static int on_vm_started(const struct bh_session_info* session, const struct bh_vm_settings* settings)
{
    char message[2 * PATH_MAX + 64];
    int result;
    (void)settings;
    if (!g_folder_configured && access(g_folder, F_OK) != 0) {
        fprintf(stderr, "VM of %s started; default folder %s does not exist, nothing shared\n",
            session->user_name, g_folder);
        return 0;
    }
    result = g_api->mount_folder(session->session_id, g_folder, g_mountpoint, 1, "folder-share");
    if (result < 0) {
        int error_result;
        snprintf(message, sizeof message, "cannot share %s at %s: %s", g_folder, g_mountpoint,
            bh_result_name(result));
        fprintf(stderr, "VM of %s: %s\n", session->user_name, message);
        /* Legal here: we are on the hook's own thread, inside a veto hook, and call it once. */
        error_result = g_api->plugin_error(message);
        if (error_result < 0)
            fprintf(stderr, "plugin_error: %s\n", bh_result_name(error_result));
        return result;
    }
    fprintf(stderr, "VM of %s (uid %u): shared %s read-only at %s\n", session->user_name,
        (unsigned)session->uid, g_folder, g_mountpoint);
    verify_mount(session);
    return 0;
}

/* Nullable strings in the hook data are printed as "?". */
static const char* or_unknown(const char* text)
{
    return text != NULL ? text : "?";
}

static void log_distribution(
    const char* event, const struct bh_session_info* session, const struct bh_distribution_info* distro)
{
    char id[37];
    format_uuid(&distro->id, id);
    fprintf(stderr, "distribution %s %s: user %s, id %s, %s %s, init pid %u\n", distro->name, event,
        session->user_name, id, or_unknown(distro->flavor), or_unknown(distro->version),
        (unsigned)distro->init_pid);
}

/* The pointers we receive are valid only during the call: log now, keep nothing. */
static int on_distribution_started(
    const struct bh_session_info* session, const struct bh_distribution_info* distro)
{
    log_distribution("started", session, distro);
    return 0;
}

static int on_distribution_stopping(
    const struct bh_session_info* session, const struct bh_distribution_info* distro)
{
    log_distribution("stopping", session, distro);
    return 0;
}

/* The one exported symbol. It runs once, when the service activates its plugins. */
int BH_PLUGIN_ENTRY_V1(const struct bh_plugin_api_v1* api, struct bh_plugin_hooks_v1* hooks)
{
    int result;
    /* We call mount_folder, execute_binary and plugin_error, all present since 0.1.0. */
    BH_PLUGIN_REQUIRE_VERSION(0, 1, 0, api);
    result = read_conf();
    if (result < 0)
        return result; /* a broken configuration is better refused now than guessed at */
    g_api = api;
    hooks->on_vm_started = on_vm_started;
    hooks->on_distribution_started = on_distribution_started;
    hooks->on_distribution_stopping = on_distribution_stopping;
    fprintf(stderr, "loaded (service %u.%u.%u): will share %s at %s\n", (unsigned)api->version.major,
        (unsigned)api->version.minor, (unsigned)api->version.revision, g_folder, g_mountpoint);
    return 0;
}
