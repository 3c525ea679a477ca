/* The Bulkhead plugin API, version 1: the stable C contract between Bulkhead and its plugins.
 *
 * It implements the normative Plugin API v1 specification (the team's shared spec/plugin-api.md);
 * docs/plugin-authors.md is the guide for writing a plugin. Names, field order and semantics here
 * are fixed; plugins compiled against this header keep working, unmodified, whether they are
 * loaded in-process or in an isolated host process. */
#ifndef BULKHEAD_PLUGIN_API_H
#define BULKHEAD_PLUGIN_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. 0 is success; a negative value is a failure: either a negative errno or one of
 * these, which lie below -4095 (outside the errno range) and never change once released. */
#define BH_E_PLUGIN_REQUIRES_UPDATE (-0x10001)
#define BH_E_SESSION_NOT_FOUND (-0x10002)
#define BH_E_VM_NOT_RUNNING (-0x10003)
#define BH_E_DISTRO_NOT_RUNNING (-0x10004)
#define BH_E_ILLEGAL_METHOD_CALL (-0x10005)
#define BH_E_ILLEGAL_STATE_CHANGE (-0x10006)
#define BH_E_PLUGIN_UNTRUSTED (-0x10007)

struct bh_version {
    uint32_t major;
    uint32_t minor;
    uint32_t revision;
};

typedef uint32_t bh_session_id;

struct bh_session_info {
    bh_session_id session_id; /* handle for the service functions */
    uint32_t uid; /* the user the session belongs to */
    uint32_t gid;
    const char* user_name; /* login name of uid */
};

enum {
    BH_VM_CONFIG_HOST_NETWORK = 1, /* user config shares the host network namespace */
    BH_VM_CONFIG_CUSTOM_INIT = 2 /* user config replaces the VM's init program */
};

struct bh_vm_settings {
    uint32_t custom_config_flags;
};

struct bh_uuid {
    uint8_t bytes[16];
};

struct bh_distribution_info {
    struct bh_uuid id; /* stable across service restarts and reboots */
    const char* name;
    uint64_t pid_namespace; /* inode number of the distribution's pid namespace */
    const char* package; /* nullable: what it was installed from */
    uint32_t init_pid; /* pid of the distribution's init, as seen from the VM */
    const char* flavor; /* nullable: os-release ID, e.g. "debian" */
    const char* version; /* nullable: os-release VERSION_ID, e.g. "12" */
};

struct bh_offline_distribution_info {
    struct bh_uuid id;
    const char* name;
    const char* package; /* nullable */
    const char* flavor; /* nullable */
    const char* version; /* nullable */
};

typedef uint32_t bh_container_session_id; /* a separate id space from bh_session_id */

struct bh_container_session_info {
    bh_container_session_id session_id;
    const char* display_name;
    int32_t application_pid; /* pid of the process that created the session */
    uint32_t uid;
    uint32_t gid;
    const char* user_name;
};

struct bh_process; /* opaque */

/* The hooks a plugin may set; the service zero-fills the table before the entry point runs and
 * never calls a NULL hook. Hooks of one plugin are never called concurrently. */
struct bh_plugin_hooks_v1 {
    int (*on_vm_started)(const struct bh_session_info*, const struct bh_vm_settings*);
    int (*on_vm_stopping)(const struct bh_session_info*);
    int (*on_distribution_started)(const struct bh_session_info*, const struct bh_distribution_info*);
    int (*on_distribution_stopping)(const struct bh_session_info*, const struct bh_distribution_info*);
    int (*on_distribution_registered)(
        const struct bh_session_info*, const struct bh_offline_distribution_info*);
    int (*on_distribution_unregistered)(
        const struct bh_session_info*, const struct bh_offline_distribution_info*);
    int (*on_container_session_created)(const struct bh_container_session_info*);
    int (*on_container_session_stopping)(const struct bh_container_session_info*);
    int (*on_container_started)(const struct bh_container_session_info*, const char* inspect_json);
    int (*on_container_stopping)(const struct bh_container_session_info*, const char* container_id);
    int (*on_image_created)(const struct bh_container_session_info*, const char* inspect_json);
    int (*on_image_deleted)(const struct bh_container_session_info*, const char* image_id);
    int (*on_container_vm_started)(const struct bh_container_session_info*);
    int (*on_container_vm_stopping)(const struct bh_container_session_info*);
};

/* The service functions handed to the plugin; callable from any thread between the entry point
 * returning and the plugin's unload (plugin_error excepted: see the spec). */
struct bh_plugin_api_v1 {
    struct bh_version version;
    int (*mount_folder)(
        bh_session_id session, const char* host_path, const char* vm_path, int read_only, const char* name);
    int (*execute_binary)(bh_session_id session, const char* path, const char* const* argv, int* out_fd);
    int (*plugin_error)(const char* message);
    int (*execute_binary_in_distribution)(bh_session_id session, const struct bh_uuid* distribution,
        const char* path, const char* const* argv, int* out_fd);
    int (*container_mount_folder)(
        bh_container_session_id session, const char* host_path, const char* mountpoint, int read_only);
    int (*container_unmount_folder)(bh_container_session_id session, const char* mountpoint);
    int (*container_create_process)(bh_container_session_id session, const char* executable,
        const char* const* argv, const char* const* envp, struct bh_process** out_process, int* out_errno);
    int (*process_get_fd)(struct bh_process* process, int which, int* out_fd);
    int (*process_get_exit_fd)(struct bh_process* process, int* out_fd);
    int (*process_get_exit_code)(struct bh_process* process, int* out_code);
    void (*process_release)(struct bh_process* process);
};

typedef int (*bh_plugin_entry_v1_fn)(const struct bh_plugin_api_v1* api, struct bh_plugin_hooks_v1* hooks);

/* The name of the one symbol a plugin exports. */
#define BH_PLUGIN_ENTRY_V1 bh_plugin_entry_v1

/* Whether `version` is lower than (major, minor, revision), compared lexicographically. A function
 * rather than inline comparisons, so a constant 0 never meets "unsigned < 0" warnings. */
static inline int bh_version_older_than(
    const struct bh_version* version, uint32_t major, uint32_t minor, uint32_t revision)
{
    if (version->major != major)
        return version->major < major;
    if (version->minor != minor)
        return version->minor < minor;
    return version->revision < revision;
}

/* Inside the entry point: returns BH_E_PLUGIN_REQUIRES_UPDATE from the enclosing function when
 * api->version is lower than (major, minor, revision), compared lexicographically. */
#define BH_PLUGIN_REQUIRE_VERSION(req_major, req_minor, req_revision, api)                                   \
    do {                                                                                                     \
        if (bh_version_older_than(                                                                           \
                &(api)->version, (uint32_t)(req_major), (uint32_t)(req_minor), (uint32_t)(req_revision)))    \
            return BH_E_PLUGIN_REQUIRES_UPDATE;                                                              \
    } while (0)

/* A stable symbolic name for a result: "OK", "BH_E_...", an errno name such as "ENOENT", or
 * "0x..." for values it does not know. The returned string is static. */
static inline const char* bh_result_name(int result)
{
    static const struct {
        int code;
        const char* name;
    } names[] = {
        { 0, "OK" },
        { BH_E_PLUGIN_REQUIRES_UPDATE, "BH_E_PLUGIN_REQUIRES_UPDATE" },
        { BH_E_SESSION_NOT_FOUND, "BH_E_SESSION_NOT_FOUND" },
        { BH_E_VM_NOT_RUNNING, "BH_E_VM_NOT_RUNNING" },
        { BH_E_DISTRO_NOT_RUNNING, "BH_E_DISTRO_NOT_RUNNING" },
        { BH_E_ILLEGAL_METHOD_CALL, "BH_E_ILLEGAL_METHOD_CALL" },
        { BH_E_ILLEGAL_STATE_CHANGE, "BH_E_ILLEGAL_STATE_CHANGE" },
        { BH_E_PLUGIN_UNTRUSTED, "BH_E_PLUGIN_UNTRUSTED" },
        /* errno values are fixed by the Linux ABI; listed by number to stay <errno.h>-free. */
        { -1, "EPERM" },
        { -2, "ENOENT" },
        { -3, "ESRCH" },
        { -4, "EINTR" },
        { -5, "EIO" },
        { -6, "ENXIO" },
        { -7, "E2BIG" },
        { -8, "ENOEXEC" },
        { -9, "EBADF" },
        { -10, "ECHILD" },
        { -11, "EAGAIN" },
        { -12, "ENOMEM" },
        { -13, "EACCES" },
        { -14, "EFAULT" },
        { -16, "EBUSY" },
        { -17, "EEXIST" },
        { -18, "EXDEV" },
        { -19, "ENODEV" },
        { -20, "ENOTDIR" },
        { -21, "EISDIR" },
        { -22, "EINVAL" },
        { -23, "ENFILE" },
        { -24, "EMFILE" },
        { -25, "ENOTTY" },
        { -26, "ETXTBSY" },
        { -27, "EFBIG" },
        { -28, "ENOSPC" },
        { -29, "ESPIPE" },
        { -30, "EROFS" },
        { -31, "EMLINK" },
        { -32, "EPIPE" },
        { -34, "ERANGE" },
        { -36, "ENAMETOOLONG" },
        { -38, "ENOSYS" },
        { -39, "ENOTEMPTY" },
        { -40, "ELOOP" },
        { -61, "ENODATA" },
        { -62, "ETIME" },
        { -71, "EPROTO" },
        { -74, "EBADMSG" },
        { -75, "EOVERFLOW" },
        { -87, "EUSERS" },
        { -95, "EOPNOTSUPP" },
        { -98, "EADDRINUSE" },
        { -103, "ECONNABORTED" },
        { -104, "ECONNRESET" },
        { -107, "ENOTCONN" },
        { -108, "ESHUTDOWN" },
        { -110, "ETIMEDOUT" },
        { -111, "ECONNREFUSED" },
        { -122, "EDQUOT" },
        { -125, "ECANCELED" },
    };
    static const char hex[] = "0123456789abcdef";
    /* Per thread, so concurrent callers never see each other's text (GCC and Clang). */
    static __thread char unknown[11];
    size_t i;
    uint32_t bits = (uint32_t)result;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].code == result)
            return names[i].name;
    }
    unknown[0] = '0';
    unknown[1] = 'x';
    for (i = 0; i < 8; i++)
        unknown[2 + i] = hex[(bits >> (28 - 4 * i)) & 0xf];
    unknown[10] = '\0';
    return unknown;
}

#ifdef __cplusplus
}
#endif

#endif /* BULKHEAD_PLUGIN_API_H */
