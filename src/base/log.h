// Minimal leveled logging to stderr (journald adds time and unit when run as a service).
#pragma once

#include <string_view>

namespace bh {

enum class LogLevel { Debug, Info, Warning, Error };

// Writes one line "<level>: <message>" to stderr with a single write(), so lines from several
// threads never interleave. Safe from any thread.
void log(LogLevel level, std::string_view message);

inline void log_info(std::string_view message)
{
    log(LogLevel::Info, message);
}
inline void log_warning(std::string_view message)
{
    log(LogLevel::Warning, message);
}
inline void log_error(std::string_view message)
{
    log(LogLevel::Error, message);
}

} // namespace bh
