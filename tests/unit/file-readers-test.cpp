// furthest_reader_offset against real processes: children that hold a file open at known offsets.
#include "base/fd.h"
#include "base/file-readers.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// A child that opens `path`, seeks to `offset`, says so on a pipe, and waits to be killed. It
// closes `ours` (the test's own fd, which it inherited: the same open file description).
pid_t reader_at(const std::string& path, off_t offset, int ours, uid_t as = ::geteuid())
{
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(ours);
        if (as != ::geteuid() && ::setresuid(as, as, as) < 0)
            ::_exit(1);
        int fd = ::open(path.c_str(), O_RDONLY);
        if (fd < 0 || ::lseek(fd, offset, SEEK_SET) != offset)
            ::_exit(1);
        (void)!::write(ready[1], "x", 1);
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    char byte;
    bool ok = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    return ok ? pid : -1;
}

void end(pid_t pid)
{
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
}

TEST(FileReaders, FindsTheFurthestOffsetOfOtherProcesses)
{
    char path[] = "/tmp/bh-file-readers-XXXXXX";
    bh::Fd file(::mkstemp(path));
    ASSERT_TRUE(file);
    ASSERT_EQ(::ftruncate(file.get(), 100000), 0);
    ASSERT_EQ(::lseek(file.get(), 99999, SEEK_SET), 99999); // our own fd is not counted
    struct stat st;
    ASSERT_EQ(::fstat(file.get(), &st), 0);

    EXPECT_FALSE(bh::furthest_reader_offset(st.st_dev, st.st_ino, ::geteuid()).has_value());
    pid_t near = reader_at(path, 100, file.get());
    pid_t far = reader_at(path, 4321, file.get());
    ASSERT_GT(near, 0);
    ASSERT_GT(far, 0);
    auto offset = bh::furthest_reader_offset(st.st_dev, st.st_ino, ::geteuid());
    ASSERT_TRUE(offset.has_value());
    EXPECT_EQ(*offset, 4321u);
    end(far);
    EXPECT_EQ(bh::furthest_reader_offset(st.st_dev, st.st_ino, ::geteuid()).value_or(0), 100u);
    end(near);
    EXPECT_FALSE(bh::furthest_reader_offset(st.st_dev, st.st_ino, ::geteuid()).has_value());
    ::unlink(path);
}

// Another user's processes are not looked at: they could hold enough fds to stall the walk.
TEST(FileReaders, LooksOnlyAtTheOwnersProcesses)
{
    if (::geteuid() != 0)
        GTEST_SKIP() << "needs root, to start a reader as another user";
    char path[] = "/tmp/bh-file-readers-XXXXXX";
    bh::Fd file(::mkstemp(path));
    ASSERT_TRUE(file);
    ASSERT_EQ(::fchmod(file.get(), 0644), 0);
    ASSERT_EQ(::ftruncate(file.get(), 10000), 0);
    struct stat st;
    ASSERT_EQ(::fstat(file.get(), &st), 0);
    pid_t other = reader_at(path, 1234, file.get(), 65534);
    ASSERT_GT(other, 0);
    EXPECT_FALSE(bh::furthest_reader_offset(st.st_dev, st.st_ino, 0).has_value());
    EXPECT_EQ(bh::furthest_reader_offset(st.st_dev, st.st_ino, 65534).value_or(0), 1234u);
    end(other);
    ::unlink(path);
}

} // namespace
