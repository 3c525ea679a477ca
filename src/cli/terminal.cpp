// TerminalRelay: raw mode, the relay thread, window size and signals (terminal.h).
#include "cli/terminal.h"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

namespace bh::cli {

namespace {

    sigset_t relayed_signals()
    {
        sigset_t set;
        sigemptyset(&set);
        for (int signal : { SIGWINCH, SIGTERM, SIGHUP, SIGINT, SIGQUIT })
            sigaddset(&set, signal);
        return set;
    }

    // Writes all of `data` to the blocking `fd`; false once it fails.
    bool write_all(int fd, const char* data, size_t size)
    {
        while (size > 0) {
            ssize_t n = ::write(fd, data, size);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return false;
            data += n;
            size -= static_cast<size_t>(n);
        }
        return true;
    }

} // namespace

bool wants_terminal(bool force_on, bool force_off)
{
    if (force_off)
        return false;
    return force_on || (::isatty(0) && ::isatty(1) && ::isatty(2));
}

winsize terminal_size()
{
    winsize size {};
    for (int fd : { 1, 0, 2 })
        if (::ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_row > 0)
            return size;
    return winsize { 24, 80, 0, 0 }; // no terminal here (run -t in a pipeline): the classic size
}

TerminalRelay::TerminalRelay()
{
    m_stop = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int forward[2];
    if (::pipe2(forward, O_CLOEXEC | O_NONBLOCK) == 0) {
        m_forward_read = Fd(forward[0]);
        m_forward_write = Fd(forward[1]);
    }
}

TerminalRelay::~TerminalRelay()
{
    finish();
}

void TerminalRelay::start(Fd master)
{
    if (m_master || m_finished)
        return;
    m_master = std::move(master);
    // Until now (a VM starting, hooks running) the signals kept their default actions: Ctrl-C in
    // the still cooked terminal ends the CLI, and with it the run.
    sigset_t set = relayed_signals();
    pthread_sigmask(SIG_BLOCK, &set, &m_old_mask);
    m_blocked = true;
    m_signals = Fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    ::fcntl(m_master.get(), F_SETFL, ::fcntl(m_master.get(), F_GETFL) | O_NONBLOCK);
    termios settings;
    if (::tcgetattr(0, &settings) == 0) {
        m_saved = settings;
        ::cfmakeraw(&settings);
        ::tcsetattr(0, TCSADRAIN, &settings);
    }
    // The size may have changed since the request was sent.
    winsize size = terminal_size();
    if (size.ws_row > 0)
        ::ioctl(m_master.get(), TIOCSWINSZ, &size);
    m_thread = std::thread([this]() { relay(); });
}

void TerminalRelay::finish()
{
    if (m_finished)
        return;
    m_finished = true;
    if (m_thread.joinable()) {
        uint64_t one = 1;
        (void)!::write(m_stop.get(), &one, sizeof(one));
        m_thread.join();
    }
    if (m_saved)
        ::tcsetattr(0, TCSADRAIN, &*m_saved);
    if (!m_blocked)
        return;
    // Signals that came meanwhile are dropped, not delivered with their default action (which
    // for SIGWINCH is nothing, and for the others would end us before we report the status).
    sigset_t set = relayed_signals();
    timespec now {};
    while (::sigtimedwait(&set, nullptr, &now) > 0) { }
    pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
}

void TerminalRelay::relay()
{
    char buffer[16384];
    std::string to_master; // read from stdin, not yet taken by the pseudo-terminal
    bool input_open = true, output_open = true;
    int terms = 0; // SIGTERMs received: the second hangs up (a login shell ignores SIGTERM)
    // Closing the master hangs the terminal up: the kernel sends its session SIGHUP, as when a
    // user's terminal goes away.
    auto hang_up = [&]() {
        m_master.reset();
        output_open = false;
        to_master.clear();
    };
    for (;;) {
        // An fd with nothing to wait for is left out (-1): a hung-up one would report POLLHUP
        // even without events, and spin.
        short master_events = m_master
            ? static_cast<short>((output_open ? POLLIN : 0) | (to_master.empty() ? 0 : POLLOUT))
            : 0;
        bool reading = input_open && to_master.empty();
        pollfd fds[4] = {
            { master_events ? m_master.get() : -1, master_events, 0 },
            { m_signals.get(), POLLIN, 0 },
            { m_stop.get(), POLLIN, 0 },
            { reading ? 0 : -1, POLLIN, 0 },
        };
        if (::poll(fds, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (fds[2].revents) {
            // The program exited: what it wrote is in the pseudo-terminal already; take it, but
            // not forever (a background process that ignored SIGHUP may keep writing).
            timespec start, now;
            clock_gettime(CLOCK_MONOTONIC, &start);
            while (output_open) {
                ssize_t n = ::read(m_master.get(), buffer, sizeof(buffer));
                if (n <= 0 || !write_all(1, buffer, static_cast<size_t>(n)))
                    break;
                clock_gettime(CLOCK_MONOTONIC, &now);
                if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > 200)
                    break;
            }
            return;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::read(m_master.get(), buffer, sizeof(buffer));
            if (n > 0) {
                if (!write_all(1, buffer, static_cast<size_t>(n)))
                    hang_up(); // our output is gone (run -t | head): so is the program's terminal
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                output_open = false; // EIO: every terminal end closed (the program is gone)
            }
        }
        if (!to_master.empty() && (fds[0].revents & POLLOUT)) {
            ssize_t n = ::write(m_master.get(), to_master.data(), to_master.size());
            if (n > 0)
                to_master.erase(0, static_cast<size_t>(n));
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                to_master.clear();
        }
        if (fds[3].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::read(0, buffer, sizeof(buffer));
            if (n > 0) {
                to_master.assign(buffer, static_cast<size_t>(n));
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                // Input that is not a terminal ended (run -t < file): the program's terminal
                // reads end-of-file too (its VEOF character, in canonical mode).
                input_open = false;
                to_master.assign(1, '\x04');
            }
        }
        if (fds[1].revents) {
            signalfd_siginfo info;
            while (::read(m_signals.get(), &info, sizeof(info)) == sizeof(info)) {
                if (info.ssi_signo == SIGWINCH) {
                    winsize size = terminal_size();
                    if (size.ws_row > 0 && m_master)
                        ::ioctl(m_master.get(), TIOCSWINSZ, &size);
                } else if (info.ssi_signo == SIGINT || info.ssi_signo == SIGQUIT) {
                    if (m_master)
                        ::ioctl(m_master.get(), TIOCSIG, static_cast<int>(info.ssi_signo));
                } else if (info.ssi_signo == SIGTERM && ++terms > 1) {
                    hang_up();
                } else {
                    char number = static_cast<char>(info.ssi_signo);
                    (void)!::write(m_forward_write.get(), &number, 1);
                    if (info.ssi_signo == SIGHUP)
                        hang_up();
                }
            }
        }
    }
}

} // namespace bh::cli
