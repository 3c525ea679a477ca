// How far other processes have read a file, for progress displays.
#pragma once

#include <cstdint>
#include <optional>
#include <sys/types.h>

namespace bh {

// The largest offset among the open file descriptions of the file (dev, ino) that other
// processes hold, read from /proc/PID/fdinfo of every process this one may inspect (the same
// uid, or any as root); nullopt when none has it open. Racy by nature (processes come and go
// during the walk): for showing progress only, never trusted for anything else.
std::optional<uint64_t> furthest_reader_offset(dev_t dev, ino_t ino);

} // namespace bh
