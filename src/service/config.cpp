// Configuration parsing with toml++ and the admin policy.
#include "service/config.h"

#include <bulkhead/plugin_api.h>
#include <fstream>
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
        BH_TRY(check_keys(*table, { "idle_timeout_s", "host_network", "init" }, origin, "vm."));
        BH_TRY(read_optional(*table, "idle_timeout_s", vm.idle_timeout_s, origin));
        BH_TRY(read_optional(*table, "host_network", vm.host_network, origin));
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
        BH_TRY(check_keys(*table, { "allow_user_idle_timeout", "allow_user_host_network", "allow_user_init" },
            origin, "policy."));
        std::optional<bool> idle, network, init;
        BH_TRY(read_optional(*table, "allow_user_idle_timeout", idle, origin));
        BH_TRY(read_optional(*table, "allow_user_host_network", network, origin));
        BH_TRY(read_optional(*table, "allow_user_init", init, origin));
        policy = { idle.value_or(true), network.value_or(true), init.value_or(true) };
        return {};
    }

} // namespace

Result<ServiceConfig> parse_service_config(const std::string& text, const std::string& origin)
{
    auto root = parse_toml(text, origin);
    if (!root)
        return root.take_error();
    BH_TRY(check_keys(*root, { "vm", "policy" }, origin, ""));
    auto vm = read_vm_table(*root, origin);
    if (!vm)
        return vm.take_error();
    ServiceConfig config;
    config.defaults.idle_timeout_s = vm->idle_timeout_s.value_or(60);
    config.defaults.host_network = vm->host_network.value_or(false);
    config.defaults.init = vm->init.value_or("");
    BH_TRY(read_policy(*root, config.policy, origin));
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
    if (overrides.host_network && config.policy.allow_host_network) {
        settings.host_network = *overrides.host_network;
        if (*overrides.host_network)
            settings.custom_config_flags |= BH_VM_CONFIG_HOST_NETWORK;
    }
    if (overrides.init && !overrides.init->empty() && config.policy.allow_init) {
        settings.init = *overrides.init;
        settings.custom_config_flags |= BH_VM_CONFIG_CUSTOM_INIT;
    }
    return settings;
}

} // namespace bh::service
