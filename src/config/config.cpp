// Configuration parsing with toml++ and the admin policy.
#include "config/config.h"

#include "base/log.h"

#include <algorithm>
#include <bulkhead/plugin_api.h>
#include <climits>
#include <dirent.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace bh::service {

namespace {

    Error config_error(const std::string& origin, const std::string& why)
    {
        return Error { -EINVAL, "invalid configuration in " + origin + ": " + why };
    }

    Result<toml::table> parse_toml(const std::string& text, const std::string& origin)
    {
        try {
            return toml::parse(text, origin);
        } catch (const toml::parse_error& e) {
            std::ostringstream where;
            where << e.source().begin;
            return config_error(origin, std::string(e.description()) + " at " + where.str());
        }
    }

    // Rejects keys a table may not have, so a typo never silently does nothing.
    Status check_keys(const toml::table& table, const std::set<std::string>& allowed,
        const std::string& origin, const std::string& prefix)
    {
        for (const auto& [key, value] : table) {
            if (!allowed.contains(std::string(key.str())))
                return config_error(origin, "unknown key '" + prefix + std::string(key.str()) + "'");
        }
        return {};
    }

    template<typename T>
    Status read_optional(
        const toml::table& table, const char* key, std::optional<T>& out, const std::string& origin)
    {
        const toml::node* node = table.get(key);
        if (!node)
            return {};
        if constexpr (std::is_same_v<T, uint32_t>) {
            auto value = node->value_exact<int64_t>();
            if (!value || *value < 0 || *value > 365LL * 24 * 3600)
                return config_error(origin, std::string("'") + key + "' must be a whole number of seconds");
            out = static_cast<uint32_t>(*value);
        } else {
            auto value = node->value_exact<T>();
            if (!value)
                return config_error(origin, std::string("'") + key + "' has the wrong type");
            out = *value;
        }
        return {};
    }

    Result<UserOverrides> read_vm_table(const toml::table& root, const std::string& origin)
    {
        UserOverrides vm;
        const toml::table* table = root["vm"].as_table();
        if (!table)
            return vm;
        BH_TRY(check_keys(*table, { "idle_timeout_s", "network", "host_network", "init" }, origin, "vm."));
        BH_TRY(read_optional(*table, "idle_timeout_s", vm.idle_timeout_s, origin));
        std::optional<bool> host_network;
        std::optional<std::string> network;
        BH_TRY(read_optional(*table, "host_network", host_network, origin));
        BH_TRY(read_optional(*table, "network", network, origin));
        if (network) {
            vm.network = parse_network(*network);
            if (!vm.network)
                return config_error(
                    origin, "'vm.network' must be \"none\", \"nat\" or \"host\", not '" + *network + "'");
            if (host_network && *host_network != (*vm.network == NetworkMode::host))
                return config_error(origin, "'vm.host_network' contradicts 'vm.network'");
        } else if (host_network) {
            vm.network = *host_network ? NetworkMode::host : NetworkMode::none;
        }
        BH_TRY(read_optional(*table, "init", vm.init, origin));
        if (vm.init && !vm.init->empty() && vm.init->front() != '/')
            return config_error(origin, "'vm.init' must be an absolute path, not '" + *vm.init + "'");
        return vm;
    }

    Status read_policy(const toml::table& root, AdminPolicy& policy, const std::string& origin)
    {
        const toml::table* table = root["policy"].as_table();
        if (!table)
            return {};
        BH_TRY(check_keys(*table,
            { "allow_user_idle_timeout", "allow_user_network", "allow_user_host_network", "allow_user_init" },
            origin, "policy."));
        std::optional<bool> idle, host_network, init;
        BH_TRY(read_optional(*table, "allow_user_idle_timeout", idle, origin));
        BH_TRY(read_optional(*table, "allow_user_host_network", host_network, origin));
        BH_TRY(read_optional(*table, "allow_user_init", init, origin));
        AdminPolicy defaults;
        policy = { idle.value_or(defaults.allow_idle_timeout), defaults.allow_network,
            init.value_or(defaults.allow_init) };
        if (const toml::node* modes = table->get("allow_user_network")) {
            const toml::array* list = modes->as_array();
            if (!list)
                return config_error(origin, "'policy.allow_user_network' must be a list of network modes");
            policy.allow_network.clear();
            for (const toml::node& mode : *list) {
                auto name = mode.value_exact<std::string>();
                auto parsed = name ? parse_network(*name) : std::nullopt;
                if (!parsed)
                    return config_error(
                        origin, "'policy.allow_user_network' may list only \"none\", \"nat\" and \"host\"");
                policy.allow_network.push_back(*parsed);
            }
        }
        auto host = std::find(policy.allow_network.begin(), policy.allow_network.end(), NetworkMode::host);
        if (host_network.value_or(false) && host == policy.allow_network.end())
            policy.allow_network.push_back(NetworkMode::host);
        else if (host_network && !*host_network && host != policy.allow_network.end())
            policy.allow_network.erase(host);
        return {};
    }

    // "512M", "4G", "1048576": bytes, with an optional K, M, G or T suffix (powers of 1024).
    std::optional<uint64_t> parse_size(const toml::node& node)
    {
        if (auto number = node.value_exact<int64_t>())
            return *number >= 0 ? std::optional<uint64_t>(static_cast<uint64_t>(*number)) : std::nullopt;
        auto text = node.value_exact<std::string>();
        if (!text || text->empty() || !isdigit(static_cast<unsigned char>(text->front())))
            return std::nullopt;
        size_t digits = std::min(text->find_first_not_of("0123456789"), text->size());
        std::string suffix = text->substr(digits);
        static const std::map<std::string, int> shifts { { "", 0 }, { "K", 10 }, { "k", 10 }, { "M", 20 },
            { "m", 20 }, { "G", 30 }, { "g", 30 }, { "T", 40 }, { "t", 40 } };
        auto shift = shifts.find(suffix);
        if (shift == shifts.end() || digits > 15)
            return std::nullopt;
        uint64_t value = std::stoull(text->substr(0, digits));
        if (value > (UINT64_MAX >> 1 >> shift->second))
            return std::nullopt;
        return value << shift->second;
    }

    // A positive whole number, at most `max`, for a key of [limits].
    template<typename T>
    Status read_limit(
        const toml::table& table, const char* key, T& out, int64_t max, const std::string& origin)
    {
        const toml::node* node = table.get(key);
        if (!node)
            return {};
        auto value = node->value_exact<int64_t>();
        if (!value || *value < 1 || *value > max)
            return config_error(origin,
                std::string("'limits.") + key + "' must be a whole number from 1 to " + std::to_string(max));
        out = static_cast<T>(*value);
        return {};
    }

    Status read_user_limits(const toml::table& root, UserLimits& limits, const std::string& origin)
    {
        const toml::table* table = root["limits"].as_table();
        if (!table)
            return {};
        BH_TRY(read_limit(*table, "connections_per_user", limits.connections, 4096, origin));
        BH_TRY(read_limit(*table, "calls_per_user", limits.calls, 65536, origin));
        BH_TRY(read_limit(*table, "registrations_per_user", limits.registrations, 64, origin));
        BH_TRY(read_limit(*table, "distributions_per_user", limits.distributions, 10000, origin));
        BH_TRY(read_limit(*table, "container_sessions_per_user", limits.container_sessions, 1024, origin));
        if (const toml::node* node = table->get("storage_bytes_per_user")) {
            auto bytes = parse_size(*node);
            if (!bytes || *bytes == 0)
                return config_error(
                    origin, "'limits.storage_bytes_per_user' must be bytes, or a size such as \"16G\"");
            limits.storage_bytes = *bytes;
        }
        BH_TRY(read_limit(*table, "storage_inodes_per_user", limits.storage_inodes, INT64_MAX, origin));
        return {};
    }

    Status read_vm_limits(const toml::table& root, VmLimits& limits, const std::string& origin)
    {
        const toml::table* table = root["limits"].as_table();
        if (!table)
            return {};
        if (const toml::node* node = table->get("vm_pids_max")) {
            auto value = node->value_exact<int64_t>();
            // The kernel's own ceiling on pids (PID_MAX_LIMIT).
            if (!value || *value < 0 || *value > (1 << 22))
                return config_error(origin, "'limits.vm_pids_max' must be a whole number from 0 to 4194304");
            limits.pids_max = static_cast<uint64_t>(*value);
        }
        BH_TRY(read_limit(*table, "vm_stop_timeout_s", limits.stop_timeout_s, 3600, origin));
        if (const toml::node* node = table->get("vm_memory_max")) {
            limits.memory_max = parse_size(*node);
            if (!limits.memory_max)
                return config_error(origin, "'limits.vm_memory_max' must be bytes, or a size such as \"4G\"");
        }
        return {};
    }

} // namespace

const char* network_name(NetworkMode mode)
{
    switch (mode) {
    case NetworkMode::none:
        return "none";
    case NetworkMode::nat:
        return "nat";
    case NetworkMode::host:
        return "host";
    }
    return "none";
}

std::optional<NetworkMode> parse_network(const std::string& name)
{
    for (NetworkMode mode : { NetworkMode::none, NetworkMode::nat, NetworkMode::host }) {
        if (name == network_name(mode))
            return mode;
    }
    return std::nullopt;
}

Result<ServiceConfig> parse_service_config(const std::string& text, const std::string& origin)
{
    auto root = parse_toml(text, origin);
    if (!root)
        return root.take_error();
    BH_TRY(check_keys(*root, { "vm", "policy", "limits", "plugins" }, origin, ""));
    auto vm = read_vm_table(*root, origin);
    if (!vm)
        return vm.take_error();
    ServiceConfig config;
    config.defaults.idle_timeout_s = vm->idle_timeout_s.value_or(60);
    config.defaults.network = vm->network.value_or(NetworkMode::nat);
    config.defaults.init = vm->init.value_or("");
    BH_TRY(read_policy(*root, config.policy, origin));
    if (const toml::table* limits = (*root)["limits"].as_table())
        BH_TRY(check_keys(*limits,
            { "vm_pids_max", "vm_memory_max", "vm_stop_timeout_s", "connections_per_user", "calls_per_user",
                "registrations_per_user", "distributions_per_user", "container_sessions_per_user",
                "storage_bytes_per_user", "storage_inodes_per_user" },
            origin, "limits."));
    BH_TRY(read_vm_limits(*root, config.vm_limits, origin));
    BH_TRY(read_user_limits(*root, config.limits, origin));
    if (const toml::table* plugins = (*root)["plugins"].as_table()) {
        BH_TRY(check_keys(*plugins, { "require_verified", "host_template" }, origin, "plugins."));
        std::optional<bool> required, host_template;
        BH_TRY(read_optional(*plugins, "require_verified", required, origin));
        BH_TRY(read_optional(*plugins, "host_template", host_template, origin));
        config.require_verified_plugins = required.value_or(false);
        config.plugin_host_template = host_template.value_or(true);
    }
    return config;
}

Result<ServiceConfig> load_service_config(const std::string& config_dir)
{
    std::string path = config_dir + "/bulkhead.toml";
    std::ifstream file(path);
    if (!file)
        return errno == ENOENT ? Result<ServiceConfig>(ServiceConfig {})
                               : Error::from_errno(errno, "cannot read " + path);
    std::stringstream text;
    text << file.rdbuf();
    return parse_service_config(text.str(), path);
}

Result<UserOverrides> parse_user_overrides(const std::string& text, const std::string& origin)
{
    auto root = parse_toml(text, origin);
    if (!root)
        return root.take_error();
    BH_TRY(check_keys(*root, { "vm" }, origin, ""));
    return read_vm_table(*root, origin);
}

Result<VmSettings> apply_policy(const ServiceConfig& config, const UserOverrides& overrides)
{
    VmSettings settings = config.defaults;
    if (overrides.init && !overrides.init->empty() && overrides.init->front() != '/')
        return Error { -EINVAL, "the VM init '" + *overrides.init + "' is not an absolute path" };
    if (overrides.idle_timeout_s && config.policy.allow_idle_timeout)
        settings.idle_timeout_s = *overrides.idle_timeout_s;
    const auto& allowed = config.policy.allow_network;
    if (overrides.network && std::find(allowed.begin(), allowed.end(), *overrides.network) != allowed.end()) {
        settings.network = *overrides.network;
        if (*overrides.network == NetworkMode::host)
            settings.custom_config_flags |= BH_VM_CONFIG_HOST_NETWORK;
    }
    if (overrides.init && !overrides.init->empty() && config.policy.allow_init) {
        settings.init = *overrides.init;
        settings.custom_config_flags |= BH_VM_CONFIG_CUSTOM_INIT;
    }
    return settings;
}

namespace {

    Status read_integrity(const toml::table& table, PluginConfig& config, const std::string& origin)
    {
        std::optional<std::string> sha256, signature;
        BH_TRY(read_optional(table, "sha256", sha256, origin));
        BH_TRY(read_optional(table, "signature", signature, origin));
        if (sha256 && (sha256->size() != 64 || !std::all_of(sha256->begin(), sha256->end(), isxdigit)))
            return config_error(origin, "'sha256' must be 64 hexadecimal digits");
        if (signature && (signature->empty() || signature->front() != '/'))
            return config_error(origin, "'signature' must be the absolute path of a detached signature");
        config.sha256 = sha256.value_or("");
        config.signature = signature.value_or("");
        return {};
    }

    Status read_limits(const toml::table& table, PluginConfig& config, const std::string& origin)
    {
        for (const char* key : { "memory_limit_mb", "max_open_files", "max_processes" }) {
            const toml::node* node = table.get(key);
            if (!node)
                continue;
            auto value = node->value_exact<int64_t>();
            if (!value || *value < 1 || *value > (1LL << 30))
                return config_error(origin, std::string("'") + key + "' must be a positive whole number");
            std::string name = key;
            uint64_t& field = name == "memory_limit_mb" ? config.memory_limit_mb
                : name == "max_open_files"              ? config.max_open_files
                                                        : config.max_processes;
            field = static_cast<uint64_t>(*value);
        }
        return {};
    }

    Status read_plugin_keys(const toml::table& table, PluginConfig& config, const std::string& origin)
    {
        BH_TRY(check_keys(table,
            { "path", "name", "isolation", "hook_timeout_s", "sha256", "signature", "memory_limit_mb",
                "max_open_files", "max_processes", "core_dumps" },
            origin, ""));
        std::optional<std::string> path, name, isolation;
        BH_TRY(read_optional(table, "path", path, origin));
        BH_TRY(read_optional(table, "name", name, origin));
        BH_TRY(read_optional(table, "isolation", isolation, origin));
        std::optional<uint32_t> timeout;
        BH_TRY(read_optional(table, "hook_timeout_s", timeout, origin));
        if (timeout && *timeout == 0)
            return config_error(origin, "'hook_timeout_s' must be at least 1");
        config.hook_timeout_s = timeout.value_or(config.hook_timeout_s);
        BH_TRY(read_integrity(table, config, origin));
        BH_TRY(read_limits(table, config, origin));
        std::optional<bool> core_dumps;
        BH_TRY(read_optional(table, "core_dumps", core_dumps, origin));
        config.core_dumps = core_dumps.value_or(false);
        if (!path || path->empty() || path->front() != '/')
            return config_error(origin, "'path' must be the absolute path of the plugin's .so");
        if (name && name->empty())
            return config_error(origin, "'name' must not be empty");
        if (isolation && *isolation != "process" && *isolation != "none")
            return config_error(origin, "'isolation' must be \"process\" or \"none\"");
        config.path = *path;
        config.name = name.value_or(config.name);
        config.isolation = isolation == "none" ? Isolation::none : Isolation::process;
        return {};
    }

} // namespace

PluginConfig parse_plugin_config(const std::string& text, const std::string& stem, const std::string& origin)
{
    PluginConfig config { stem, "", Isolation::process, 60, origin };
    auto parsed = parse_toml(text, origin);
    Status status = parsed ? read_plugin_keys(parsed.value(), config, origin) : Status(parsed.take_error());
    if (!status)
        config.error = status.take_error();
    return config;
}

namespace {

    std::string resolved(const std::string& path)
    {
        char buffer[PATH_MAX];
        return realpath(path.c_str(), buffer) ? std::string(buffer) : path;
    }

} // namespace

std::vector<PluginConfig> load_plugin_configs(const std::string& config_dir)
{
    std::string dir = config_dir + "/plugins.d";
    std::vector<std::string> files;
    if (DIR* stream = opendir(dir.c_str())) {
        while (dirent* entry = readdir(stream)) {
            std::string file = entry->d_name;
            if (file.size() > 5 && file.ends_with(".toml") && file[0] != '.')
                files.push_back(file);
        }
        closedir(stream);
    }
    std::sort(files.begin(), files.end());
    std::vector<PluginConfig> out;
    std::map<std::string, std::string> seen; // resolved .so path -> name
    for (const auto& file : files) {
        std::ifstream in(dir + "/" + file);
        std::stringstream text;
        text << in.rdbuf();
        PluginConfig config
            = parse_plugin_config(text.str(), file.substr(0, file.size() - 5), dir + "/" + file);
        if (!config.error) {
            auto [it, fresh] = seen.emplace(resolved(config.path), config.name);
            if (!fresh) {
                log_warning("plugin '" + config.name + "' (" + config.file + ") loads " + config.path
                    + ", which plugin '" + it->second + "' loads already; ignoring it");
                continue;
            }
        }
        out.push_back(std::move(config));
    }
    return out;
}

} // namespace bh::service
