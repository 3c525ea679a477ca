// ChildProcess: the one owner of a child process, tracked by pidfd; kills and reaps it unless waited for.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <optional>
#include <sys/types.h>

namespace bh {

// Owns one child process through its pidfd. The destructor SIGKILLs and reaps a child that has
// not been reaped yet, so a forgotten child can never outlive its owner's intent.
// Thread affinity: none; not thread-safe.
class ChildProcess {
public:
    ChildProcess() = default;
    ChildProcess(pid_t pid, Fd pidfd)
        : m_pid(pid)
        , m_pidfd(std::move(pidfd))
    {
    }
    ChildProcess(ChildProcess&&) noexcept = default;
    ChildProcess& operator=(ChildProcess&& other) noexcept;
    ~ChildProcess();

    pid_t pid() const { return m_pid; }
    int pidfd() const { return m_pidfd.get(); }
    bool valid() const { return m_pidfd.valid(); }

    // Sends `signal` through the pidfd; a child that already exited is not an error.
    Status kill(int signal);
    // Reaps the child if it has exited: its wait status, or nullopt while it runs.
    std::optional<int> try_wait();
    // Blocks until the child exits and reaps it: its wait status.
    int wait();
    // Stops owning the child without killing it: returns its pidfd; the caller reaps it.
    [[nodiscard]] Fd detach() { return std::move(m_pidfd); }

private:
    void kill_and_reap();

    pid_t m_pid = -1;
    Fd m_pidfd;
};

} // namespace bh
