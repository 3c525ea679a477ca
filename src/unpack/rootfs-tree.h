// Root filesystem trees as they lie on disk: read, measured and removed without ever following a
// symlink they hold. Safe on trees a user wrote; parses no archive.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bh {

// The two os-release(5) fields the service shows and matches on.
struct OsRelease {
    std::optional<std::string> id;
    std::optional<std::string> version_id;
};

// Reads ID and VERSION_ID from etc/os-release (fallback usr/lib/os-release) under the root
// directory `root_dirfd`. Paths resolve with RESOLVE_IN_ROOT, so a hostile symlink in the root
// can never make the service read a host file. Reads at most 64 KiB. A missing or unreadable
// file, or missing keys, leave the fields empty; this never fails.
OsRelease read_os_release(int root_dirfd);

// Removes the tree at `path` like `rm -rf`, but never follows a symlink (a symlink is removed,
// not its target) and holds a constant number of fds however deep the tree is.
// A missing path is success.
Status remove_tree(const std::string& path);

// What a tree holds, by the measures of ImportLimits: the content of its regular files (a file
// with several links once) and its entries, the top directory not counted.
struct TreeUsage {
    uint64_t bytes = 0;
    uint64_t entries = 0;
};

// Measures the directory tree at `path` as remove_tree walks it (no symlink followed, a
// constant number of fds). This is how the service learns what an import wrote: it does not
// take the unpacking process's word for it.
Result<TreeUsage> measure_tree(const std::string& path);

// `name`, quoted for an error message: control characters are escaped so a hostile archive
// cannot send terminal escapes to the user, and names over 200 bytes are cut.
std::string quote_untrusted(std::string_view name);

} // namespace bh
