// bulkheadd's log sink under systemd: structured journald entries instead of stderr lines.
#pragma once

#include "base/log.h"

namespace bh::service {

// True when stderr is the journal stream systemd connected (JOURNAL_STREAM names stderr's device
// and inode): then install journal_log_sink. Any other stderr (a terminal, a file, a pipe that
// inherited JOURNAL_STREAM from a parent) keeps plain lines.
bool stderr_is_journal();

// Sends one entry with MESSAGE=, PRIORITY=, SYSLOG_IDENTIFIER=bulkheadd and the context's fields
// (PLUGIN=, PLUGIN_PID=, SESSION_UID=, DISTRIBUTION=) through sd_journal_sendv; falls back to a
// stderr line if the journal refuses it. Thread-safe.
void journal_log_sink(LogLevel level, std::string_view message, const LogContext& context);

} // namespace bh::service
