// parse_distro_conf: what a distribution's /etc/bulkhead.conf may say, and what it may not.
#include "vm/distro-conf.h"

#include <gtest/gtest.h>

namespace bh::vm {
namespace {

    TEST(DistroConf, ReadsTheDefaultUserAndTheBootCommand)
    {
        auto conf
            = parse_distro_conf("[user]\ndefault = \"alice\"\n[boot]\ncommand = \"echo hi > /tmp/x\"\n", "t");
        ASSERT_TRUE(conf.ok()) << conf.error().message;
        EXPECT_EQ(conf->default_user, "alice");
        EXPECT_EQ(conf->boot_command, "echo hi > /tmp/x");
    }

    TEST(DistroConf, AnEmptyFileIsTheDefaults)
    {
        auto conf = parse_distro_conf("# nothing\n", "t");
        ASSERT_TRUE(conf.ok());
        EXPECT_EQ(conf->default_user, "");
        EXPECT_EQ(conf->boot_command, "");
    }

    TEST(DistroConf, RefusesTyposTypesAndBrokenToml)
    {
        struct Case {
            const char* text;
            const char* says;
        } cases[] = {
            { "[user]\ndefualt = \"alice\"\n", "unknown key 'user.defualt'" },
            { "[usr]\ndefault = \"alice\"\n", "unknown table 'usr'" },
            { "user = 5\n", "'user' must be a table" },
            { "[user]\ndefault = 5\n", "'user.default' must be a string" },
            { "[boot]\ncommand = [\"a\"]\n", "'boot.command' must be a string" },
            { "[user\n", "invalid t: " },
        };
        for (const Case& c : cases) {
            auto conf = parse_distro_conf(c.text, "t");
            ASSERT_FALSE(conf.ok()) << c.text;
            EXPECT_NE(conf.error().message.find(c.says), std::string::npos) << conf.error().message;
            EXPECT_EQ(conf.error().code, -EINVAL);
        }
    }

} // namespace
} // namespace bh::vm
