// check_secure_path on real files in a private temporary directory, and the integrity keys.
#include "service/plugin-trust.h"

#include <bulkhead/plugin_api.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    class SecurePath : public ::testing::Test {
    protected:
        void SetUp() override
        {
            if (geteuid() != 0)
                GTEST_SKIP() << "ownership checks need files owned by root";
            char pattern[] = "/tmp/bh-trust.XXXXXX";
            ASSERT_NE(mkdtemp(pattern), nullptr);
            m_dir = pattern;
            ASSERT_EQ(chmod(m_dir.c_str(), 0755), 0);
            m_file = m_dir + "/plugin.so";
            int fd = open(m_file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            ASSERT_GE(fd, 0);
            close(fd);
            ASSERT_EQ(chmod(m_file.c_str(), 0644), 0);
        }
        void TearDown() override
        {
            if (m_dir.empty())
                return;
            unlink((m_dir + "/link.so").c_str());
            unlink(m_file.c_str());
            rmdir(m_dir.c_str());
        }

        std::string m_dir;
        std::string m_file;
    };

} // namespace

TEST_F(SecurePath, AcceptsRootOwnedFilesBelowStickyTmp)
{
    EXPECT_TRUE(check_secure_path(m_file).ok());
}

TEST_F(SecurePath, RefusesAGroupWritableFile)
{
    ASSERT_EQ(chmod(m_file.c_str(), 0664), 0);
    auto status = check_secure_path(m_file);
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.error().code, BH_E_PLUGIN_UNTRUSTED);
    EXPECT_NE(
        status.error().message.find("writable by group or others (owner 0, mode 0664)"), std::string::npos);
}

TEST_F(SecurePath, RefusesAWritableParentDirectory)
{
    ASSERT_EQ(chmod(m_dir.c_str(), 0777), 0);
    auto status = check_secure_path(m_file);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find(m_dir + " is writable by group or others"), std::string::npos);
}

TEST_F(SecurePath, RefusesASymlink)
{
    ASSERT_EQ(symlink(m_file.c_str(), (m_dir + "/link.so").c_str()), 0);
    auto status = check_secure_path(m_dir + "/link.so");
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("symbolic link"), std::string::npos);
}

TEST_F(SecurePath, RefusesAFileOfAnotherOwner)
{
    ASSERT_EQ(chown(m_file.c_str(), 4242, 4242), 0);
    auto status = check_secure_path(m_file);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("is not owned by root"), std::string::npos);
}

TEST(PluginConfig, ReadsIntegrityAndLimits)
{
    std::string hash(64, 'a');
    auto config = parse_plugin_config("path = \"/x.so\"\nsha256 = \"" + hash
            + "\"\nsignature = \"/x.sig\"\nmemory_limit_mb = 256\nmax_open_files = 64\n",
        "p", "f.toml");
    ASSERT_FALSE(config.error);
    EXPECT_EQ(config.sha256, hash);
    EXPECT_EQ(config.signature, "/x.sig");
    EXPECT_EQ(config.memory_limit_mb, 256u);
    EXPECT_EQ(config.max_open_files, 64u);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nsha256 = \"abc\"\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nsignature = \"x.sig\"\n", "p", "f.toml").error);
    EXPECT_TRUE(parse_plugin_config("path = \"/x.so\"\nmemory_limit_mb = 0\n", "p", "f.toml").error);
    auto limited
        = parse_plugin_config("path = \"/x.so\"\nmax_processes = 32\ncore_dumps = true\n", "p", "f.toml");
    ASSERT_FALSE(limited.error);
    EXPECT_EQ(limited.max_processes, 32u);
    EXPECT_TRUE(limited.core_dumps);
}

TEST(ServiceConfig, RequireVerifiedPlugins)
{
    auto config = parse_service_config("[plugins]\nrequire_verified = true\n", "b.toml");
    ASSERT_TRUE(config.ok());
    EXPECT_TRUE(config->require_verified_plugins);
    EXPECT_FALSE(parse_service_config("[plugins]\nrequire = true\n", "b.toml").ok());
}

} // namespace bh::service
