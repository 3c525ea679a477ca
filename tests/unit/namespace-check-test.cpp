// verify_distribution_init on real PID namespaces: the forged pidfds a VM's agent could send.
#include "service/namespace-check.h"

#include "base/spawn.h"

#include <chrono>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace bh::service {

namespace {

    Fd pidfd_of(pid_t pid)
    {
        return Fd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    }

    // A stand-in VM: `unshare` as PID 1 of a new PID namespace (the VM's), whose child `sleep` is
    // PID 1 of a namespace below it (a distribution's), as bulkhead-vminit arranges them.
    struct FakeVm {
        ChildProcess vm_init;
        pid_t distro_init = 0;
    };

    FakeVm start_fake_vm()
    {
        SpawnPlan plan {
            .path = "/usr/bin/unshare",
            .argv = { "unshare", "--pid", "--fork", "--kill-child", "sleep", "30" },
            .namespaces = CLONE_NEWPID,
        };
        auto child = spawn_process(plan);
        EXPECT_TRUE(child) << (child ? "" : child.error().message);
        FakeVm vm { std::move(child.value()) };
        std::string children = "/proc/" + std::to_string(vm.vm_init.pid()) + "/task/"
            + std::to_string(vm.vm_init.pid()) + "/children";
        for (int i = 0; i < 500 && vm.distro_init == 0; ++i) {
            std::ifstream in(children);
            if (!(in >> vm.distro_init))
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_NE(vm.distro_init, 0) << "the fake distribution init did not start";
        return vm;
    }

    class NamespaceCheck : public ::testing::Test {
    protected:
        void SetUp() override
        {
            if (geteuid() != 0)
                GTEST_SKIP() << "needs root (creates PID namespaces)";
            m_vm = start_fake_vm();
            auto ns = open_pid_namespace(m_vm.vm_init.pidfd());
            ASSERT_TRUE(ns) << ns.error().message;
            m_vm_ns = std::move(ns.value());
        }
        void TearDown() override
        {
            if (m_vm.vm_init.pid() > 0)
                (void)m_vm.vm_init.kill(SIGKILL);
        }

        FakeVm m_vm;
        Fd m_vm_ns;
    };

} // namespace

TEST_F(NamespaceCheck, TheDistributionsInitIsAccepted)
{
    Fd pidfd = pidfd_of(m_vm.distro_init);
    ASSERT_TRUE(pidfd);
    auto init = verify_distribution_init(pidfd.get(), m_vm_ns.get());
    ASSERT_TRUE(init) << init.error().message;
    EXPECT_EQ(init->host_pid, m_vm.distro_init);
    EXPECT_EQ(init->pid_in_vm, 2u); // unshare is 1 in the VM's namespace, its child 2
    struct stat ns;
    ASSERT_EQ(stat(("/proc/" + std::to_string(m_vm.distro_init) + "/ns/pid").c_str(), &ns), 0);
    EXPECT_EQ(init->pid_namespace, ns.st_ino);
}

// The attack: a pidfd of a host process (here this test itself, or a root `sleep`), which
// `terminate` would SIGKILL.
TEST_F(NamespaceCheck, AHostProcessIsRefused)
{
    Fd self = pidfd_of(getpid());
    ASSERT_TRUE(self);
    auto init = verify_distribution_init(self.get(), m_vm_ns.get());
    ASSERT_FALSE(init);
    EXPECT_EQ(init.error().code, -EPERM);
}

// The VM's own init lives in the VM's namespace, not below it: not a distribution.
TEST_F(NamespaceCheck, TheVmsOwnInitIsRefused)
{
    auto init = verify_distribution_init(m_vm.vm_init.pidfd(), m_vm_ns.get());
    ASSERT_FALSE(init);
    EXPECT_EQ(init.error().code, -EPERM);
}

// The init of another VM's distribution: below a PID namespace, but not this VM's.
TEST_F(NamespaceCheck, AnotherVmsDistributionIsRefused)
{
    FakeVm other = start_fake_vm();
    Fd pidfd = pidfd_of(other.distro_init);
    ASSERT_TRUE(pidfd);
    auto init = verify_distribution_init(pidfd.get(), m_vm_ns.get());
    (void)other.vm_init.kill(SIGKILL);
    ASSERT_FALSE(init);
    EXPECT_EQ(init.error().code, -EPERM);
}

TEST_F(NamespaceCheck, AnFdThatIsNoPidfdIsRefused)
{
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    Fd read_end(fds[0]), write_end(fds[1]);
    auto init = verify_distribution_init(read_end.get(), m_vm_ns.get());
    ASSERT_FALSE(init);
    EXPECT_EQ(init.error().code, -EBADF);
}

} // namespace bh::service
