// Minimal leveled logging: to stderr by default, or to a sink the program installs (bulkheadd's
// journald writer).
#pragma once

#include <optional>
#include <string_view>
#include <sys/types.h>

namespace bh {

enum class LogLevel { Debug, Info, Warning, Error };

// What a line is about, where known. A structured sink (journald) records each set member as a
// field: PLUGIN=, PLUGIN_PID=, SESSION_UID=, DISTRIBUTION=; stderr shows the message only (the
// message text already names what it is about).
struct LogContext {
    std::string_view plugin;
    pid_t plugin_pid = 0;
    std::optional<uid_t> session_uid;
    std::string_view distribution;
};

// Receives every line at or above the level; called on the logging thread, so it must be
// thread-safe itself.
using LogSink = void (*)(LogLevel level, std::string_view message, const LogContext& context);

// Writes one line "<level>: <message>" to stderr with a single write() (lines from several
// threads never interleave), or hands it to the sink. Safe from any thread.
void log(LogLevel level, std::string_view message, const LogContext& context = {});

// Lines below `minimum` are dropped (default: Info). Set once at start-up, before threads.
void set_log_level(LogLevel minimum);
// Replaces stderr by `sink` (nullptr: back to stderr). Set once at start-up, before threads.
void set_log_sink(LogSink sink);
// The stderr writer, for a sink that falls back to it.
void log_to_stderr(LogLevel level, std::string_view message);

inline void log_info(std::string_view message, const LogContext& context = {})
{
    log(LogLevel::Info, message, context);
}
inline void log_warning(std::string_view message, const LogContext& context = {})
{
    log(LogLevel::Warning, message, context);
}
inline void log_error(std::string_view message, const LogContext& context = {})
{
    log(LogLevel::Error, message, context);
}

} // namespace bh
