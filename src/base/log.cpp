// Logging: one write() per line, or the installed sink; a level below which lines are dropped.
#include "base/log.h"

#include <atomic>
#include <string>
#include <unistd.h>

namespace bh {

namespace {

    // Process-wide by nature (every thread logs); written once at start-up, read everywhere.
    std::atomic<LogLevel> g_minimum { LogLevel::Info };
    std::atomic<LogSink> g_sink { nullptr };

} // namespace

void log_to_stderr(LogLevel level, std::string_view message)
{
    // The "<N>" prefix is the syslog priority, which journald reads from a service's stderr.
    static constexpr const char* prefixes[] = { "<7>debug: ", "<6>", "<4>warning: ", "<3>error: " };
    std::string line = prefixes[static_cast<int>(level)];
    line.append(message);
    line.push_back('\n');
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

void log(LogLevel level, std::string_view message, const LogContext& context)
{
    if (level < g_minimum.load(std::memory_order_relaxed))
        return;
    if (LogSink sink = g_sink.load(std::memory_order_acquire))
        sink(level, message, context);
    else
        log_to_stderr(level, message);
}

void set_log_level(LogLevel minimum)
{
    g_minimum.store(minimum, std::memory_order_relaxed);
}

void set_log_sink(LogSink sink)
{
    g_sink.store(sink, std::memory_order_release);
}

} // namespace bh
