// Unit tests of finding the service's cgroups from mountinfo and /proc/PID/cgroup text, and of
// which stale cgroups are removed (on plain directories).
#include "service/cgroup-fs.h"

#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    // A hybrid host like the test machines: pids and memory in v1, an empty cgroup2 beside them.
    const char* hybrid_mountinfo = R"(31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
)";
    const char* hybrid_cgroup = "9:name=systemd:/\n8:pids:/\n4:memory:/jobs/b0954\n1:cpu,cpuacct:/\n0::/\n";

    // A pure v2 host: the service under systemd, moved into its leaf.
    const char* v2_mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const char* v2_cgroup = "0::/system.slice/bulkhead.service/bulkhead-service\n";

} // namespace

TEST(CgroupFs, FindsEachHierarchyOfAHybridHost)
{
    EXPECT_EQ(cgroup_dir_in(hybrid_mountinfo, hybrid_cgroup, ""), "/sys/fs/cgroup/unified");
    EXPECT_EQ(cgroup_dir_in(hybrid_mountinfo, hybrid_cgroup, "pids"), "/sys/fs/cgroup/pids");
    EXPECT_EQ(cgroup_dir_in(hybrid_mountinfo, hybrid_cgroup, "memory"), "/sys/fs/cgroup/memory/jobs/b0954");
    EXPECT_EQ(cgroup_dir_in(hybrid_mountinfo, hybrid_cgroup, "cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
    EXPECT_EQ(cgroup_dir_in(hybrid_mountinfo, hybrid_cgroup, "freezer"), "");
}

TEST(CgroupFs, FindsTheServiceCgroupOfAPureV2Host)
{
    std::string own = cgroup_dir_in(v2_mountinfo, v2_cgroup, "");
    EXPECT_EQ(own, "/sys/fs/cgroup/system.slice/bulkhead.service/bulkhead-service");
    EXPECT_EQ(without_service_leaf(own), "/sys/fs/cgroup/system.slice/bulkhead.service");
    EXPECT_EQ(cgroup_dir_in(v2_mountinfo, v2_cgroup, "pids"), "");
}

TEST(CgroupFs, MountRootIsTakenOffThePath)
{
    // A container's view: its cgroup2 mount shows only /docker/abc of the hierarchy.
    const char* mountinfo = "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    EXPECT_EQ(cgroup_dir_in(mountinfo, "0::/docker/abc/svc\n", ""), "/sys/fs/cgroup/svc");
    EXPECT_EQ(cgroup_dir_in(mountinfo, "0::/docker/abc\n", ""), "/sys/fs/cgroup");
}

// Only a dead service's cgroups go, with what a delegate made below them; a live service's stay,
// empty or not (one once removed the empty cgroup a parallel service had just made for a VM).
TEST(CgroupFs, OnlyADeadServicesCgroupsAreRemoved)
{
    char base[] = "/tmp/bh-stale-cgroups-XXXXXX";
    ASSERT_NE(::mkdtemp(base), nullptr);
    std::string parent = base;
    std::string live = parent + "/bulkhead-vm-" + std::to_string(::getpid()) + "-1-1";
    // No process has pid 0x3fffff - 1 (pid_max is at most 4194304).
    std::string dead = parent + "/bulkhead-vm-4194302-1-1";
    ASSERT_EQ(::mkdir(live.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dead.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dead + "/made").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dead + "/made/below").c_str(), 0755), 0);
    remove_stale_cgroups(parent, "bulkhead-vm-");
    struct stat st;
    EXPECT_EQ(::stat(live.c_str(), &st), 0) << "a live service's empty cgroup was removed";
    EXPECT_NE(::stat(dead.c_str(), &st), 0) << "a dead service's cgroup stayed";
    ::rmdir(live.c_str());
    ::rmdir(base);
}

TEST(CgroupFs, OnlyTheLeafItselfIsStripped)
{
    EXPECT_EQ(without_service_leaf("/sys/fs/cgroup/bulkhead-service"), "/sys/fs/cgroup");
    EXPECT_EQ(
        without_service_leaf("/sys/fs/cgroup/a/bulkhead-service-2"), "/sys/fs/cgroup/a/bulkhead-service-2");
    EXPECT_EQ(without_service_leaf("/sys/fs/cgroup/a"), "/sys/fs/cgroup/a");
}

} // namespace bh::service
