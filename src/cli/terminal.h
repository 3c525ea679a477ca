// The user's terminal relayed to a program's pseudo-terminal (`bulkhead run` with a terminal).
#pragma once

#include "base/fd.h"

#include <optional>
#include <sys/ioctl.h>
#include <termios.h>
#include <thread>

namespace bh::cli {

// Whether `run` gets a pseudo-terminal: forced with -t or -T, else when stdin, stdout and stderr
// are all terminals (a pipeline or a redirection keeps clean bytes: no \r\n, no colours, stderr
// kept apart).
bool wants_terminal(bool force_on, bool force_off);
// The size of the user's terminal, or 24 rows of 80 columns when none of stdout, stdin and
// stderr is one.
winsize terminal_size();

// Owns the user's terminal while the program runs. Thread affinity: made, started and finished
// on the CLI's main thread; its relay thread owns everything else until finish() joins it.
//
// Signals: SIGWINCH, SIGTERM, SIGHUP, SIGINT and SIGQUIT are blocked in every thread from start()
// on (before the relay thread exists, so it inherits the mask; until then they keep their default
// actions) and read through a signalfd by the relay thread: a resize is passed on with TIOCSWINSZ;
// SIGINT and SIGQUIT go to the program's foreground process group with TIOCSIG, as its own
// terminal would send them (Ctrl-C and the like arrive as bytes in raw mode and reach the program
// through its line discipline); SIGTERM and SIGHUP, which a terminal cannot send, are written as
// one byte each to forwarded_signals() for the main thread to send through the service. SIGHUP
// also hangs the terminal up (the master is closed: the kernel sends the session SIGHUP), and so
// does a second SIGTERM, which ends a login shell that ignores SIGTERM; so does a failed write to
// our stdout.
class TerminalRelay {
public:
    TerminalRelay();
    ~TerminalRelay(); // finish()
    TerminalRelay(const TerminalRelay&) = delete;
    TerminalRelay& operator=(const TerminalRelay&) = delete;

    // Puts the user's terminal (stdin, when it is one) in raw mode and relays stdin to `master`
    // and `master` to stdout until finish(). Called once.
    void start(Fd master);
    // The program exited: copies what it wrote and is still in the pseudo-terminal, stops the
    // relay, restores the terminal's settings and the signal mask. Idempotent.
    void finish();
    // The read end of the pipe of signals for the service to forward (one byte: the number).
    int forwarded_signals() const { return m_forward_read.get(); }

private:
    void relay();

    Fd m_master;
    Fd m_signals; // signalfd
    Fd m_stop; // eventfd: finish() asks the relay thread to drain and end
    Fd m_forward_read, m_forward_write;
    std::optional<termios> m_saved; // the user's settings, while raw
    sigset_t m_old_mask;
    bool m_blocked = false; // m_old_mask holds the mask to restore
    std::thread m_thread;
    bool m_finished = false;
};

} // namespace bh::cli
