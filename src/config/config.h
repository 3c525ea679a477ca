// Service configuration (<config-dir>/bulkhead.toml), user overrides, and the admin policy between them.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bh::service {

// How a VM reaches the network ([vm] network). `nat`: outbound connections through pasta, a
// user-mode stack running as the VM's user (docs/architecture.md, "VM networking"); the host's
// loopback services are reachable at nat_host_address. `host`: the host's own namespace.
enum class NetworkMode { none, nat, host };
inline constexpr const char* nat_host_address = "10.0.2.2";
inline constexpr const char* nat_dns_address = "10.0.2.3";
inline constexpr const char* nat_vm_address = "10.0.2.15";
const char* network_name(NetworkMode mode);
std::optional<NetworkMode> parse_network(const std::string& name);

// The VM settings in force for one session; kept with its VM.
struct VmSettings {
    uint32_t idle_timeout_s = 60; // 0: never
    // nat by default: the VM reaches what its user could reach anyway, and nothing more (pasta
    // runs as that user, with privileges only over the VM's own namespaces).
    NetworkMode network = NetworkMode::nat;
    std::string init; // empty: the built-in init
    uint32_t custom_config_flags = 0; // BH_VM_CONFIG_* for settings the user's config customized
};

// Which settings users may override. Secure by default: a user may change the idle timeout and
// choose between no network and nat, but sharing the host's network or replacing the VM's init
// needs the admin's [policy] consent.
struct AdminPolicy {
    bool allow_idle_timeout = true;
    std::vector<NetworkMode> allow_network = { NetworkMode::none, NetworkMode::nat };
    bool allow_init = false;
};

// What each user (uid) may hold at once; [limits] in the admin's bulkhead.toml. Root is bound too.
struct UserLimits {
    uint32_t connections = 32; // open control connections
    uint32_t calls = 64; // control calls in progress, over all their connections
    uint32_t registrations = 2; // registrations in progress (each holds a thread while it imports)
    uint32_t distributions = 64; // registered distributions
    uint32_t container_sessions = 16; // container sessions, each with a VM of its own
    uint64_t storage_bytes = 16ULL << 30; // bytes of file content over their distributions
    uint64_t storage_inodes = 2'000'000; // files, directories and links over their distributions
};

// Caps on every VM's cgroup: [limits] of the admin's bulkhead.toml. Users cannot change them (a
// user's file may only hold [vm]).
struct VmLimits {
    uint64_t pids_max = 4096; // pids.max: processes and threads; 0: no limit
    std::optional<uint64_t> memory_max; // bytes; unset: half the host's RAM; 0: no limit
    uint32_t stop_timeout_s = 10; // a SIGKILLed VM or distribution not gone by then is abandoned
};

struct ServiceConfig {
    VmSettings defaults;
    AdminPolicy policy;
    UserLimits limits;
    VmLimits vm_limits;
    bool require_verified_plugins = false; // [plugins] require_verified: every plugin pinned or signed
    // [plugins] host_template: hosts are forked from one prepared host (faster, smaller; one
    // address layout for all of them) rather than each exec'd (plugin/host-template.h)
    bool plugin_host_template = true;
};

// What a user's ~/.config/bulkhead/bulkhead.toml asks for; absent keys stay unset.
struct UserOverrides {
    std::optional<uint32_t> idle_timeout_s;
    std::optional<NetworkMode> network; // [vm] network, or host_network (true: host, false: none)
    std::optional<std::string> init;
};

// Parses TOML text of bulkhead.toml ([vm] idle_timeout_s, network ("none", "nat" or "host";
// host_network = true/false is a synonym of "host"/"none"), init; [policy]
// allow_user_idle_timeout, allow_user_network (the modes users may pick; allow_user_host_network
// = true adds "host"), allow_user_init; [limits] vm_pids_max,
// vm_memory_max: a whole number of bytes or a string with a K, M, G or T suffix, powers of 1024;
// vm_stop_timeout_s;
// connections_per_user, calls_per_user, registrations_per_user, distributions_per_user,
// container_sessions_per_user,
// storage_bytes_per_user, storage_inodes_per_user; [plugins] require_verified, host_template). `origin` names
// the file in errors. Unknown keys and wrongly typed values are errors.
Result<ServiceConfig> parse_service_config(const std::string& text, const std::string& origin);
// Reads <config-dir>/bulkhead.toml; a missing file gives the defaults.
Result<ServiceConfig> load_service_config(const std::string& config_dir);
// Parses the [vm] table of a user's bulkhead.toml.
Result<UserOverrides> parse_user_overrides(const std::string& text, const std::string& origin);

// The settings in force: the admin's defaults, with each override the policy allows.
// An override that is invalid (a relative init path) is an error; a forbidden one is ignored.
Result<VmSettings> apply_policy(const ServiceConfig& config, const UserOverrides& overrides);

enum class Isolation { process, none };

// One plugin, from <config-dir>/plugins.d/<file>.toml. A file that cannot be used keeps its
// name (the file's stem) and the reason in `error`: the plugin then fails to load.
struct PluginConfig {
    std::string name;
    std::string path; // absolute path of the .so
    Isolation isolation = Isolation::process;
    uint32_t hook_timeout_s = 60; // deadline of every hook call
    std::string file; // where it was configured, for messages
    std::optional<Error> error;
    std::string sha256; // pinned content (hex); empty: not pinned
    std::string signature; // path of a detached Ed25519 signature; empty: not signed
    uint64_t memory_limit_mb = 0; // RLIMIT_AS of its host; 0: none
    uint64_t max_open_files = 0; // RLIMIT_NOFILE of its host; 0: inherited
    uint64_t max_processes = 0; // pids.max of its host's cgroup (processes and threads); 0: none
    bool core_dumps = false; // let its host dump core (for debugging a crashing plugin)
};

// Parses one plugin file's TOML text: `path` (absolute, required), `name` (default: `stem`),
// `isolation` ("process", the default, or "none"), `hook_timeout_s` (1 or more; default 60),
// `sha256` (64 hex digits), `signature` (absolute path), `memory_limit_mb`, `max_open_files`,
// `max_processes`, `core_dumps` (bool, default false).
PluginConfig parse_plugin_config(const std::string& text, const std::string& stem, const std::string& origin);
// Every *.toml in <config-dir>/plugins.d, in file-name order. The same .so (by its resolved path)
// under a second name is dropped with a warning: the first name wins.
std::vector<PluginConfig> load_plugin_configs(const std::string& config_dir);

} // namespace bh::service
