#include "cli/progress.h"
#include "base/file-readers.h"

#include <cstdio>
#include <fcntl.h>
#include <memory>
#include <sys/ioctl.h>
#include <sys/stat.h>
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

Position reopened_file(int fd, uid_t owner)
{
    struct stat st;
    if (::fstat(fd, &st) < 0)
        return {};
    return { [dev = st.st_dev, ino = st.st_ino, owner]() -> std::optional<uint64_t> {
                // A reader at offset 0 tells nothing (the service's helper holds the file as its
                // stdin all along).
                auto read = furthest_reader_offset(dev, ino, owner);
                return read && *read > 0 ? read : std::nullopt;
            },
        static_cast<uint64_t>(st.st_size) };
}

Position shared_file(int fd, bool size_is_total)
{
    struct stat st;
    auto copy = std::make_shared<Fd>(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!*copy || ::fstat(copy->get(), &st) < 0 || !S_ISREG(st.st_mode))
        return {};
    return { [copy]() -> std::optional<uint64_t> {
                off_t at = ::lseek(copy->get(), 0, SEEK_CUR);
                return at > 0 ? std::optional<uint64_t>(at) : std::nullopt;
            },
        size_is_total ? static_cast<uint64_t>(st.st_size) : 0 };
}

Progress::Progress(kj::Timer& timer, std::string what, Position position)
    : m_timer(timer)
    , m_what(std::move(what))
    , m_position(std::move(position))
    , m_start(timer.now())
    , m_sampled(m_start)
{
    if (!::isatty(STDERR_FILENO))
        return;
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
    if (m_position.done) {
        if (auto done = m_position.done()) {
            uint64_t now_done = m_position.total ? std::min(*done, m_position.total) : *done;
            if (now_done < m_done) { // read again from the start (import checks the tar first)
                ++m_pass;
                m_sampled = now;
                m_sampled_done = now_done;
            }
            m_done = now_done;
        }
        uint64_t ms = (now - m_sampled) / kj::MILLISECONDS;
        if (ms >= 1000) { // a rate over a second at least, smoothed
            uint64_t moved = m_done > m_sampled_done ? m_done - m_sampled_done : 0;
            uint64_t rate = moved * 1000 / ms;
            m_rate = m_rate == 0 ? rate : (m_rate + rate) / 2;
            m_sampled = now;
            m_sampled_done = m_done;
        }
        if (m_pass > 1)
            line += " (pass " + std::to_string(m_pass) + ")";
        line += ": " + human_size(m_done);
        if (m_position.total)
            line += " of " + human_size(m_position.total);
        if (m_rate > 0)
            line += ", " + human_size(m_rate) + "/s";
    }
    line += " (" + std::to_string(seconds) + " s)";
    if (m_position.note) {
        std::string note = m_position.note();
        if (!note.empty())
            line += " " + note;
        // One line, or \r would not go back to its start: cut to the terminal's width.
        winsize size {};
        if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1
            && line.size() > 4u + size.ws_col - 1)
            line.resize(4u + size.ws_col - 1);
    }
    m_shown = ::write(STDERR_FILENO, line.data(), line.size()) > 0 || m_shown;
}

} // namespace bh::cli
