// spawn_process on real programs, with fd plans that collide with its own pipes.
#include "base/spawn.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh {

namespace {

    // The numbers the next pipe2 would get: the lowest free ones, which spawn_process's own
    // error pipe gets unless it moves it.
    std::pair<int, int> next_pipe_numbers()
    {
        int probe[2];
        EXPECT_EQ(pipe2(probe, O_CLOEXEC), 0);
        close(probe[0]);
        close(probe[1]);
        return { probe[0], probe[1] };
    }

    SpawnPlan plan_with_target(const std::string& path, int source, int target)
    {
        SpawnPlan plan;
        plan.path = path;
        plan.argv = { path };
        plan.fds = { { source, target } };
        return plan;
    }

} // namespace

// A plan putting an fd at the number the error pipe's write end would have: placing it must not
// close that pipe, or a failed exec looks like a successful one.
TEST(Spawn, ExecFailureIsReportedWhenThePlanTargetsThePipesNumber)
{
    Fd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(null);
    auto [read_end, write_end] = next_pipe_numbers();
    for (int target : { read_end, write_end }) {
        auto child = spawn_process(plan_with_target("/nonexistent/program", null.get(), target));
        ASSERT_FALSE(child) << "a missing program was reported as started (fd " << target << ")";
        EXPECT_EQ(child.error().code, -ENOENT);
        EXPECT_NE(child.error().message.find("/nonexistent/program"), std::string::npos);
    }
}

TEST(Spawn, ProgramGetsThePlannedFdWhenItCollidesWithThePipes)
{
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    Fd ours(fds[0]), theirs(fds[1]);
    auto [read_end, write_end] = next_pipe_numbers();
    std::string script = "echo placed >&" + std::to_string(write_end);
    SpawnPlan plan = plan_with_target("/bin/sh", theirs.get(), write_end);
    plan.argv = { "sh", "-c", script };
    auto child = spawn_process(plan);
    ASSERT_TRUE(child) << child.error().message;
    theirs.reset();
    char buffer[16] = {};
    ssize_t n = read(ours.get(), buffer, sizeof(buffer) - 1);
    EXPECT_EQ(std::string(buffer, n > 0 ? n : 0), "placed\n");
    int status = child.value().wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

} // namespace bh
