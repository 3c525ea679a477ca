// ChildProcess: pidfd-based ownership of a child process.
#include "base/child-process.h"

#include <csignal>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh {

namespace {

    // Converts a waitid() result into a classic wait status (as waitpid returns).
    int to_wait_status(const siginfo_t& info)
    {
        if (info.si_code == CLD_EXITED)
            return (info.si_status & 0xff) << 8;
        return info.si_status & 0x7f;
    }

} // namespace

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept
{
    if (this != &other) {
        kill_and_reap();
        m_pid = std::exchange(other.m_pid, -1);
        m_pidfd = std::move(other.m_pidfd);
    }
    return *this;
}

ChildProcess::~ChildProcess()
{
    kill_and_reap();
}

void ChildProcess::kill_and_reap()
{
    if (!m_pidfd.valid())
        return;
    (void)kill(SIGKILL);
    (void)wait();
}

Status ChildProcess::kill(int signal)
{
    if (syscall(SYS_pidfd_send_signal, m_pidfd.get(), signal, nullptr, 0) < 0 && errno != ESRCH)
        return Error::from_errno(errno, "cannot signal process " + std::to_string(m_pid));
    return {};
}

std::optional<int> ChildProcess::try_wait()
{
    siginfo_t info {};
    if (waitid(P_PIDFD, m_pidfd.get(), &info, WEXITED | WNOHANG) < 0 || info.si_pid == 0)
        return std::nullopt;
    m_pidfd.reset();
    return to_wait_status(info);
}

int ChildProcess::wait()
{
    siginfo_t info {};
    while (waitid(P_PIDFD, m_pidfd.get(), &info, WEXITED) < 0 && errno == EINTR) { }
    m_pidfd.reset();
    return to_wait_status(info);
}

} // namespace bh
