// Unit tests of configuration parsing and the admin policy.
#include "config/config.h"

#include <bulkhead/plugin_api.h>
#include <gtest/gtest.h>

namespace bh::service {

TEST(Config, DefaultsWhenEmpty)
{
    auto config = parse_service_config("", "test.toml");
    ASSERT_TRUE(config.ok());
    EXPECT_EQ(config->defaults.idle_timeout_s, 60u);
    // Outbound through pasta unless the admin says otherwise: what the user could reach anyway.
    EXPECT_EQ(config->defaults.network, NetworkMode::nat);
    // Secure by default: without the admin's consent no user shares the host's network or
    // replaces the VM's init; none and nat are theirs to pick.
    EXPECT_EQ(config->policy.allow_network, (std::vector { NetworkMode::none, NetworkMode::nat }));
    EXPECT_FALSE(config->policy.allow_init);
    EXPECT_TRUE(config->policy.allow_idle_timeout);
    EXPECT_EQ(config->limits.connections, UserLimits {}.connections);
}

TEST(Config, WithNoAdminFileUsersGetNeitherHostNetworkNorTheirOwnInit)
{
    auto overrides = parse_user_overrides("[vm]\nhost_network = true\ninit = \"/bin/sh\"\n", "u.toml");
    ASSERT_TRUE(overrides.ok());
    auto settings = apply_policy(ServiceConfig {}, overrides.value());
    ASSERT_TRUE(settings.ok());
    EXPECT_EQ(settings->network, NetworkMode::nat);
    EXPECT_EQ(settings->init, "");
    EXPECT_EQ(settings->custom_config_flags, 0u);
}

TEST(Config, ReadsPerUserLimits)
{
    auto config = parse_service_config(
        "[limits]\nconnections_per_user = 4\ncalls_per_user = 9\n"
        "registrations_per_user = 1\ndistributions_per_user = 3\ncontainer_sessions_per_user = 5\n"
        "storage_bytes_per_user = 1048576\nstorage_inodes_per_user = 100\n",
        "a.toml");
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_EQ(config->limits.connections, 4u);
    EXPECT_EQ(config->limits.calls, 9u);
    EXPECT_EQ(config->limits.registrations, 1u);
    EXPECT_EQ(config->limits.distributions, 3u);
    EXPECT_EQ(config->limits.container_sessions, 5u);
    EXPECT_EQ(config->limits.storage_bytes, 1048576u);
    EXPECT_EQ(config->limits.storage_inodes, 100u);
    auto zero = parse_service_config("[limits]\nconnections_per_user = 0\n", "a.toml");
    ASSERT_FALSE(zero.ok());
    EXPECT_NE(
        zero.error().message.find("'limits.connections_per_user' must be a whole number"), std::string::npos);
    EXPECT_FALSE(parse_service_config("[limits]\nconnections = 4\n", "a.toml").ok());
    auto stop = parse_service_config(
        "[limits]\nvm_stop_timeout_s = 2\nstorage_bytes_per_user = \"1G\"\n", "a.toml");
    ASSERT_TRUE(stop.ok()) << stop.error().message;
    EXPECT_EQ(stop->vm_limits.stop_timeout_s, 2u);
    EXPECT_EQ(stop->limits.storage_bytes, 1ULL << 30);
    EXPECT_EQ(ServiceConfig {}.vm_limits.stop_timeout_s, 10u);
    EXPECT_FALSE(parse_service_config("[limits]\ncalls_per_user = \"9\"\n", "a.toml").ok());
}

TEST(Config, RejectsUnknownKeysAndBadTypes)
{
    auto typo = parse_service_config("[vm]\nidle_timeout = 5\n", "a.toml");
    ASSERT_FALSE(typo.ok());
    EXPECT_NE(typo.error().message.find("unknown key 'vm.idle_timeout'"), std::string::npos);
    EXPECT_FALSE(parse_service_config("[vm]\nhost_network = 3\n", "a.toml").ok());
    EXPECT_FALSE(parse_service_config("[vm]\ninit = \"relative\"\n", "a.toml").ok());
    EXPECT_FALSE(parse_service_config("[vm\n", "a.toml").ok());
}

TEST(Config, PolicyFiltersUserOverrides)
{
    auto config = parse_service_config("[policy]\nallow_user_host_network = false\n", "a.toml");
    ASSERT_TRUE(config.ok());
    auto overrides = parse_user_overrides("[vm]\nhost_network = true\nidle_timeout_s = 5\n", "u.toml");
    ASSERT_TRUE(overrides.ok());
    auto settings = apply_policy(config.value(), overrides.value());
    ASSERT_TRUE(settings.ok());
    EXPECT_EQ(settings->network, NetworkMode::nat);
    EXPECT_EQ(settings->custom_config_flags, 0u);
    EXPECT_EQ(settings->idle_timeout_s, 5u);

    auto consenting = parse_service_config("[policy]\nallow_user_host_network = true\n", "a.toml");
    ASSERT_TRUE(consenting.ok());
    auto open = apply_policy(consenting.value(), overrides.value());
    ASSERT_TRUE(open.ok());
    EXPECT_EQ(open->network, NetworkMode::host);
    EXPECT_EQ(open->custom_config_flags, static_cast<uint32_t>(BH_VM_CONFIG_HOST_NETWORK));
}

TEST(Config, NetworkModesAndTheirPolicy)
{
    auto none = parse_user_overrides("[vm]\nnetwork = \"none\"\n", "u.toml");
    ASSERT_TRUE(none.ok()) << none.error().message;
    EXPECT_EQ(apply_policy(ServiceConfig {}, none.value())->network, NetworkMode::none);
    auto host = parse_user_overrides("[vm]\nnetwork = \"host\"\n", "u.toml");
    ASSERT_TRUE(host.ok());
    EXPECT_EQ(apply_policy(ServiceConfig {}, host.value())->network, NetworkMode::nat);

    // The admin's list is the whole list; allow_user_host_network = true adds host to it.
    auto only_none = parse_service_config(
        "[vm]\nnetwork = \"none\"\n[policy]\nallow_user_network = [\"none\"]\n", "a.toml");
    ASSERT_TRUE(only_none.ok()) << only_none.error().message;
    EXPECT_EQ(only_none->defaults.network, NetworkMode::none);
    auto nat = parse_user_overrides("[vm]\nnetwork = \"nat\"\n", "u.toml");
    EXPECT_EQ(apply_policy(only_none.value(), nat.value())->network, NetworkMode::none);
    auto with_host = parse_service_config("[policy]\nallow_user_host_network = true\n", "a.toml");
    EXPECT_EQ(with_host->policy.allow_network,
        (std::vector { NetworkMode::none, NetworkMode::nat, NetworkMode::host }));
    EXPECT_EQ(apply_policy(with_host.value(), host.value())->network, NetworkMode::host);

    auto bad = parse_service_config("[vm]\nnetwork = \"bridge\"\n", "a.toml");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("'vm.network' must be \"none\", \"nat\" or \"host\", not 'bridge'"),
        std::string::npos);
    auto contradiction = parse_user_overrides("[vm]\nnetwork = \"nat\"\nhost_network = true\n", "u.toml");
    ASSERT_FALSE(contradiction.ok());
    EXPECT_NE(contradiction.error().message.find("contradicts"), std::string::npos);
    EXPECT_FALSE(parse_service_config("[policy]\nallow_user_network = \"nat\"\n", "a.toml").ok());
    EXPECT_FALSE(parse_service_config("[policy]\nallow_user_network = [\"nat\", 3]\n", "a.toml").ok());
    EXPECT_EQ(parse_user_overrides("[vm]\nhost_network = false\n", "u.toml")->network, NetworkMode::none);
}

TEST(Config, VmLimitsDefaultToFourThousandPidsAndUnsetMemory)
{
    auto config = parse_service_config("", "test.toml");
    ASSERT_TRUE(config.ok());
    EXPECT_EQ(config->vm_limits.pids_max, 4096u);
    EXPECT_FALSE(config->vm_limits.memory_max.has_value());
}

TEST(Config, VmLimitsTakeBytesOrSuffixedSizes)
{
    auto parsed = [](const std::string& memory) {
        auto config
            = parse_service_config("[limits]\nvm_pids_max = 64\nvm_memory_max = " + memory + "\n", "a.toml");
        EXPECT_TRUE(config.ok()) << memory << ": " << (config.ok() ? "" : config.error().message);
        EXPECT_EQ(config.ok() ? config->vm_limits.pids_max : 0, 64u);
        return config.ok() ? config->vm_limits.memory_max.value_or(UINT64_MAX) : UINT64_MAX;
    };
    EXPECT_EQ(parsed("1048576"), 1048576u);
    EXPECT_EQ(parsed("\"1048576\""), 1048576u);
    EXPECT_EQ(parsed("\"512K\""), 512u << 10);
    EXPECT_EQ(parsed("\"512M\""), 512u << 20);
    EXPECT_EQ(parsed("\"4G\""), 4ull << 30);
    EXPECT_EQ(parsed("\"2t\""), 2ull << 40);
    EXPECT_EQ(parsed("0"), 0u);
}

TEST(Config, RejectsBadVmLimits)
{
    for (const char* text : { "[limits]\nvm_pids_max = -1\n", "[limits]\nvm_pids_max = 5000000\n",
             "[limits]\nvm_pids_max = \"64\"\n", "[limits]\nvm_memory_max = -5\n",
             "[limits]\nvm_memory_max = \"4X\"\n", "[limits]\nvm_memory_max = \"G\"\n",
             "[limits]\nvm_memory_max = \"4 G\"\n", "[limits]\nvm_memory_max = \"99999999999T\"\n",
             "[limits]\nvm_memory_max = 1.5\n", "[limits]\nvm_pid_max = 64\n" }) {
        auto config = parse_service_config(text, "a.toml");
        EXPECT_FALSE(config.ok()) << text;
        if (!config.ok()) {
            EXPECT_NE(config.error().message.find("limits.vm_"), std::string::npos) << config.error().message;
        }
    }
}

TEST(Config, UsersCannotSetVmLimits)
{
    auto overrides = parse_user_overrides("[limits]\nvm_pids_max = 100000\n", "u.toml");
    ASSERT_FALSE(overrides.ok());
    EXPECT_NE(overrides.error().message.find("unknown key 'limits'"), std::string::npos);
    EXPECT_FALSE(parse_user_overrides("[vm]\nvm_pids_max = 100000\n", "u.toml").ok());
}

TEST(PluginConfig, DefaultsNameToTheFileStemAndIsolationToProcess)
{
    auto config = parse_plugin_config("path = \"/opt/p/x.so\"\n", "10-share", "plugins.d/10-share.toml");
    EXPECT_FALSE(config.error);
    EXPECT_EQ(config.name, "10-share");
    EXPECT_EQ(config.path, "/opt/p/x.so");
    EXPECT_EQ(config.isolation, Isolation::process);

    auto named = parse_plugin_config(
        "path = \"/opt/p/x.so\"\nname = \"share\"\nisolation = \"none\"\n", "10-share", "f.toml");
    EXPECT_FALSE(named.error);
    EXPECT_EQ(named.name, "share");
    EXPECT_EQ(named.isolation, Isolation::none);
}

TEST(PluginConfig, KeepsTheReasonOfAnUnusableFile)
{
    auto relative = parse_plugin_config("path = \"x.so\"\n", "p", "f.toml");
    ASSERT_TRUE(relative.error);
    EXPECT_EQ(relative.name, "p");
    EXPECT_NE(relative.error->message.find("'path' must be the absolute path"), std::string::npos);
    EXPECT_TRUE(parse_plugin_config("name = \"p\"\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nisolation = \"thread\"\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\npth = 1\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nname = \"\"\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = /x.so\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nhook_timeout_s = 0\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nhook_timeout_s = \"5\"\n", "p", "f.toml").error);
}

TEST(PluginConfig, HookTimeoutDefaultsToAMinute)
{
    EXPECT_EQ(parse_plugin_config("path = \"/x.so\"\n", "p", "f.toml").hook_timeout_s, 60u);
    auto quick = parse_plugin_config("path = \"/x.so\"\nhook_timeout_s = 3\n", "p", "f.toml");
    EXPECT_FALSE(quick.error);
    EXPECT_EQ(quick.hook_timeout_s, 3u);
}

} // namespace bh::service
