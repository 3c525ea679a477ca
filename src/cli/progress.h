// Progress of long work (image load, import, pull, push; register, export, install), shown on a terminal.
#pragma once

#include "base/fd.h"

#include <cstdint>
#include <functional>
#include <kj/async-io.h>
#include <optional>
#include <string>

namespace bh::cli {

// "2.14MB": bytes in decimal units, three significant digits.
std::string human_size(uint64_t bytes);

// Where a file being read or written by others stands, for Progress.
struct Position {
    // How many bytes are done, or nullopt when that cannot be told now.
    std::function<std::optional<uint64_t>()> done;
    uint64_t total = 0; // 0: unknown (an export's compressed size)
    // What the work is doing now, shown after the time (install: mmdebstrap's last "I:" line);
    // empty shows nothing. Cut to the terminal's width.
    std::function<std::string()> note;
};
// A file the CLI opened and passed to the service, which hands it to tools that open it again
// (the VM's skopeo, umoci): how far the furthest of them has read it (furthest_reader_offset).
// Only processes of `owner` (whose tools the service runs) are looked at.
Position reopened_file(int fd, uid_t owner);
// A file the CLI passed as it is: the open file description, and so its offset, is shared with
// whoever reads or writes it for the service (bulkhead-unpack, an export's writer); `fd` is
// duplicated. A pipe or terminal has no offset: then only the time is shown.
Position shared_file(int fd, bool size_is_total);

// One line on stderr, redrawn every 200 ms while the work runs, and cleared when done; nothing at
// all when stderr is not a terminal. It shows the bytes done (of the total, when known) and the
// rate, if `position` tells them (bytes going back mean a tool started reading again: a new
// pass), and the time spent. Thread affinity: the CLI's event loop, whose timer drives it while
// the CLI waits for the reply.
class Progress {
public:
    Progress(kj::Timer& timer, std::string what, Position position = {});
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

private:
    kj::Promise<void> tick();
    void draw();

    kj::Timer& m_timer;
    std::string m_what;
    Position m_position;
    bool m_shown = false;
    kj::TimePoint m_start;
    uint64_t m_done = 0; // in this pass
    unsigned m_pass = 1; // a new one each time the bytes done go back
    uint64_t m_rate = 0; // bytes per second, smoothed
    kj::TimePoint m_sampled;
    uint64_t m_sampled_done = 0;
    kj::Promise<void> m_ticking = nullptr;
};

} // namespace bh::cli
