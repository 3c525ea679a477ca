// How far other processes have read a file, for progress displays.
#pragma once

#include <cstdint>
#include <optional>
#include <sys/types.h>

namespace bh {

// The largest offset among the open file descriptions of the file (dev, ino) that other
// processes of `owner` hold, read from their /proc/PID/fdinfo; nullopt when none has it open.
// Only `owner`'s processes are looked at (another user's could hold so many fds, or a file on a
// hung mount, that the walk would stall), and the walk stops after `budget_ms`. Racy by nature
// (processes come and go during the walk): for showing progress only, never trusted otherwise.
std::optional<uint64_t> furthest_reader_offset(dev_t dev, ino_t ino, uid_t owner, unsigned budget_ms = 50);

} // namespace bh
