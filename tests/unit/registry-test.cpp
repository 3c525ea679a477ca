// Registry on a real state folder: what a change writes, what survives a restart, conversion.
#include "service/registry.h"

#include <fstream>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    class RegistryTest : public ::testing::Test {
    protected:
        void SetUp() override
        {
            char dir[] = "/tmp/bulkhead-registry-test.XXXXXX";
            ASSERT_NE(mkdtemp(dir), nullptr);
            m_dir = dir;
        }
        void TearDown() override { (void)system(("rm -rf '" + m_dir + "'").c_str()); }

        // A registration as the service makes one: its folder first (the import), then the record.
        Status add(Registry& registry, uid_t owner, const std::string& name)
        {
            DistroRecord record { name, Uuid::random(), owner, "pkg-" + name };
            mkdir(registry.directory_of(record.uuid).c_str(), 0700);
            return registry.add(record);
        }

        std::string m_dir;
    };

    ino_t inode_of(const std::string& path)
    {
        struct stat st { };
        return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
    }

} // namespace

TEST_F(RegistryTest, SurvivesARestart)
{
    {
        auto registry = Registry::load(m_dir);
        ASSERT_TRUE(registry) << registry.error().message;
        ASSERT_TRUE(add(*registry, 1000, "a"));
        ASSERT_TRUE(add(*registry, 1000, "b"));
        ASSERT_TRUE(add(*registry, 2000, "c"));
        ASSERT_TRUE(registry->set_default(1000, "b"));
        ASSERT_TRUE(registry->remove(2000, "c"));
    }
    auto registry = Registry::load(m_dir);
    ASSERT_TRUE(registry) << registry.error().message;
    auto mine = registry->of_user(1000);
    ASSERT_EQ(mine.size(), 2u);
    EXPECT_EQ(mine[0]->name, "a"); // registration order is kept
    EXPECT_EQ(mine[1]->name, "b");
    EXPECT_EQ(mine[0]->package, "pkg-a");
    EXPECT_EQ(registry->default_of(1000)->name, "b");
    EXPECT_TRUE(registry->of_user(2000).empty());
}

// The finding of issue 11: with 300 registrations, one set-default rewrote (and fsynced) all of
// them. A change now writes only itself: no other registration's file is touched.
TEST_F(RegistryTest, AChangeWritesOnlyWhatItChanges)
{
    auto registry = Registry::load(m_dir);
    ASSERT_TRUE(registry);
    for (int i = 0; i < 300; ++i)
        ASSERT_TRUE(add(*registry, 1000 + i % 3, "d" + std::to_string(i)));
    std::vector<std::pair<std::string, ino_t>> before;
    for (const DistroRecord* record : registry->all()) {
        std::string path = registry->directory_of(record->uuid) + "/record.json";
        before.emplace_back(path, inode_of(path));
        ASSERT_NE(before.back().second, 0u) << "no record file at " << path;
    }
    ASSERT_TRUE(registry->set_default(1001, "d4"));
    ASSERT_TRUE(add(*registry, 1002, "late"));
    ASSERT_TRUE(registry->remove(1000, "d3"));
    int gone = 0;
    for (const auto& [path, inode] : before) {
        if (inode_of(path) == 0) {
            ++gone; // the removed one's
            continue;
        }
        EXPECT_EQ(inode_of(path), inode) << path << " was rewritten";
    }
    EXPECT_EQ(gone, 1);
    EXPECT_EQ(registry->default_of(1001)->name, "d4");
}

// The one registry.json of an older service becomes per-registration files.
TEST_F(RegistryTest, ConvertsAnOlderRegistryJson)
{
    std::string uuid = Uuid::random().to_string();
    ASSERT_EQ(mkdir((m_dir + "/distributions").c_str(), 0700), 0);
    ASSERT_EQ(mkdir((m_dir + "/distributions/" + uuid).c_str(), 0700), 0);
    std::ofstream(m_dir + "/registry.json")
        << R"({"version": 1, "distributions": [{"name": "old", "uuid": ")" << uuid
        << R"(", "owner": 1000, "package": "p"}], "defaults": {"1000": "old"}})";
    {
        auto registry = Registry::load(m_dir);
        ASSERT_TRUE(registry) << registry.error().message;
        ASSERT_NE(registry->find(1000, "old"), nullptr);
    }
    EXPECT_NE(access((m_dir + "/registry.json").c_str(), F_OK), 0) << "registry.json was kept";
    auto registry = Registry::load(m_dir);
    ASSERT_TRUE(registry) << registry.error().message;
    ASSERT_NE(registry->find(1000, "old"), nullptr);
    EXPECT_EQ(registry->default_of(1000)->name, "old");
    EXPECT_EQ(registry->find(1000, "old")->package, "p");
}

} // namespace bh::service
