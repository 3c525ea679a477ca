// Progress of a long request (image load, import, pull, push), shown on a terminal.
#pragma once

#include <cstdint>
#include <kj/async-io.h>
#include <string>
#include <sys/stat.h>

namespace bh::cli {

// "2.14MB": bytes in decimal units, three significant digits.
std::string human_size(uint64_t bytes);

// One line on stderr, redrawn every 200 ms while the request runs, and cleared when done; nothing
// at all when stderr is not a terminal. With an archive (a file the CLI opened and passed to the
// service), it shows how far the service's tools have read it (furthest_reader_offset), of its
// size, and the rate (a tool reading it again from the start begins a new pass); otherwise only
// the time spent. Thread affinity: the CLI's event loop, whose
// timer drives it while the CLI waits for the reply.
class Progress {
public:
    Progress(kj::Timer& timer, std::string what, const struct stat* archive = nullptr);
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

private:
    kj::Promise<void> tick();
    void draw();

    kj::Timer& m_timer;
    std::string m_what;
    bool m_shown = false;
    bool m_has_archive = false;
    dev_t m_dev = 0;
    ino_t m_ino = 0;
    uint64_t m_size = 0;
    kj::TimePoint m_start;
    uint64_t m_read = 0; // the furthest offset seen in this pass
    unsigned m_pass = 1; // a new one each time the offset goes back
    uint64_t m_rate = 0; // bytes per second, smoothed
    kj::TimePoint m_sampled;
    uint64_t m_sampled_read = 0;
    kj::Promise<void> m_ticking = nullptr;
};

} // namespace bh::cli
