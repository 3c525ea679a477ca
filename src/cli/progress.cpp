#include "cli/progress.h"
#include "base/file-readers.h"

#include <cstdio>
#include <unistd.h>

namespace bh::cli {

std::string human_size(uint64_t bytes)
{
    const char* units[] = { "B", "kB", "MB", "GB", "TB" };
    double value = static_cast<double>(bytes);
    int unit = 0;
    while (value >= 1000 && unit < 4) {
        value /= 1000;
        ++unit;
    }
    char text[32];
    std::snprintf(text, sizeof(text), unit == 0 ? "%.0f%s" : "%.3g%s", value, units[unit]);
    return text;
}

Progress::Progress(kj::Timer& timer, std::string what, const struct stat* archive)
    : m_timer(timer)
    , m_what(std::move(what))
    , m_start(timer.now())
    , m_sampled(m_start)
{
    if (!::isatty(STDERR_FILENO))
        return;
    if (archive) {
        m_has_archive = true;
        m_dev = archive->st_dev;
        m_ino = archive->st_ino;
        m_size = static_cast<uint64_t>(archive->st_size);
    }
    draw();
    m_ticking = tick().eagerlyEvaluate(nullptr);
}

Progress::~Progress()
{
    m_ticking = nullptr;
    if (m_shown)
        (void)!::write(STDERR_FILENO, "\r\033[K", 4);
}

kj::Promise<void> Progress::tick()
{
    return m_timer.afterDelay(200 * kj::MILLISECONDS).then([this]() {
        draw();
        return tick();
    });
}

void Progress::draw()
{
    kj::TimePoint now = m_timer.now();
    uint64_t seconds = (now - m_start) / kj::SECONDS;
    std::string line = "\r\033[K" + m_what;
    if (m_has_archive) {
        // A reader at offset 0 tells nothing (the service's helper holds the file as its stdin).
        if (auto read = furthest_reader_offset(m_dev, m_ino); read && *read > 0) {
            uint64_t now_read = std::min(*read, m_size);
            if (now_read < m_read) { // the tools read it again from the start (import checks it first)
                ++m_pass;
                m_sampled = now;
                m_sampled_read = now_read;
            }
            m_read = now_read;
        }
        uint64_t ms = (now - m_sampled) / kj::MILLISECONDS;
        if (ms >= 1000) { // a rate over a second at least, smoothed
            uint64_t moved = m_read > m_sampled_read ? m_read - m_sampled_read : 0;
            uint64_t rate = moved * 1000 / ms;
            m_rate = m_rate == 0 ? rate : (m_rate + rate) / 2;
            m_sampled = now;
            m_sampled_read = m_read;
        }
        if (m_pass > 1)
            line += " (pass " + std::to_string(m_pass) + ")";
        line += ": " + human_size(m_read) + " of " + human_size(m_size);
        if (m_rate > 0)
            line += ", " + human_size(m_rate) + "/s";
    }
    line += " (" + std::to_string(seconds) + " s)";
    m_shown = ::write(STDERR_FILENO, line.data(), line.size()) > 0 || m_shown;
}

} // namespace bh::cli
