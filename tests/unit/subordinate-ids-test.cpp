// Tests for reading /etc/subuid and /etc/subgid (service/subordinate-ids.h), on files of the test's own.
#include "service/subordinate-ids.h"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <unistd.h>

namespace bh::service {
namespace {

    class SubordinateIdsTest : public ::testing::Test {
    protected:
        void SetUp() override
        {
            char pattern[] = "/tmp/bh-subids-XXXXXX";
            ASSERT_NE(mkdtemp(pattern), nullptr);
            m_dir = pattern;
        }
        void TearDown() override
        {
            ::unlink(uids().c_str());
            ::unlink(gids().c_str());
            ::rmdir(m_dir.c_str());
        }
        std::string uids() const { return m_dir + "/subuid"; }
        std::string gids() const { return m_dir + "/subgid"; }
        void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
        Result<std::optional<SubordinateIds>> lookup(const std::string& name = "alice", uid_t uid = 1000)
        {
            return subordinate_ids_of(name, uid, 1000, uids(), gids());
        }

        std::string m_dir;
    };

    TEST_F(SubordinateIdsTest, FirstRangeOfTheUserByNameOrUid)
    {
        write(uids(), "bob:100000:65536\nbroken line\nalice:x:1\nalice:165536:65536\nalice:300000:10\n");
        write(gids(), "1000:200000:1000\n");
        auto ids = lookup();
        ASSERT_TRUE(ids.ok()) << ids.error().message;
        ASSERT_TRUE(ids->has_value());
        EXPECT_EQ((*ids)->uid_start, 165536u);
        EXPECT_EQ((*ids)->uid_count, 65536u);
        EXPECT_EQ((*ids)->gid_start, 200000u);
        EXPECT_EQ((*ids)->gid_count, 1000u);
    }

    TEST_F(SubordinateIdsTest, NoRangeInEitherFileMeansNone)
    {
        write(uids(), "alice:165536:65536\n");
        write(gids(), "bob:165536:65536\n");
        auto ids = lookup();
        ASSERT_TRUE(ids.ok());
        EXPECT_FALSE(ids->has_value());
        ::unlink(gids().c_str());
        ids = lookup();
        ASSERT_TRUE(ids.ok());
        EXPECT_FALSE(ids->has_value());
    }

    TEST_F(SubordinateIdsTest, RangesTheServiceWillNotMap)
    {
        write(gids(), "alice:200000:1000\n");
        write(uids(), "alice:0:65536\n");
        EXPECT_EQ(lookup().error().code, -EINVAL);
        write(uids(), "alice:500:1000\n"); // holds uid 1000, alice's own
        auto own = lookup();
        ASSERT_FALSE(own.ok());
        EXPECT_NE(own.error().message.find("line 1"), std::string::npos) << own.error().message;
        EXPECT_NE(own.error().message.find("their own id"), std::string::npos) << own.error().message;
        write(uids(), "alice:4294967000:1000\n");
        EXPECT_EQ(lookup().error().code, -EINVAL);
    }

} // namespace
} // namespace bh::service
