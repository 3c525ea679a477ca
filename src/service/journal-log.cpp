// Structured journald logging for bulkheadd (sd_journal_sendv), chosen when stderr is the journal.
#include "service/journal-log.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <sys/uio.h>
// The location would always be this sink, not the code that logged.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <vector>

namespace bh::service {

bool stderr_is_journal()
{
    const char* stream = std::getenv("JOURNAL_STREAM");
    unsigned long long device = 0, inode = 0;
    struct stat st { };
    if (!stream || std::sscanf(stream, "%llu:%llu", &device, &inode) != 2 || ::fstat(STDERR_FILENO, &st) < 0)
        return false;
    return st.st_dev == device && st.st_ino == inode;
}

void journal_log_sink(LogLevel level, std::string_view message, const LogContext& context)
{
    // Syslog priorities of Debug, Info, Warning, Error.
    static constexpr int priorities[] = { 7, 6, 4, 3 };
    std::vector<std::string> fields;
    fields.reserve(7);
    fields.push_back("MESSAGE=" + std::string(message));
    fields.push_back("PRIORITY=" + std::to_string(priorities[static_cast<int>(level)]));
    fields.push_back("SYSLOG_IDENTIFIER=bulkheadd");
    if (!context.plugin.empty())
        fields.push_back("PLUGIN=" + std::string(context.plugin));
    if (context.plugin_pid > 0)
        fields.push_back("PLUGIN_PID=" + std::to_string(context.plugin_pid));
    if (context.session_uid)
        fields.push_back("SESSION_UID=" + std::to_string(*context.session_uid));
    if (!context.distribution.empty())
        fields.push_back("DISTRIBUTION=" + std::string(context.distribution));
    std::vector<iovec> vector;
    for (auto& field : fields)
        vector.push_back({ field.data(), field.size() });
    if (sd_journal_sendv(vector.data(), static_cast<int>(vector.size())) < 0)
        log_to_stderr(level, message);
}

} // namespace bh::service
