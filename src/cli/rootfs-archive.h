// Rootfs archive: packs a directory tree into a tar stream, for registering a distribution.
#pragma once

#include "base/result.h"

#include <string>

namespace bh {

// Writes the tree at `dir` as an uncompressed pax tar stream to `out_fd`, which stays open and
// owned by the caller. Reads with the caller's own rights: this runs in the CLI, as the user.
// Entry names are relative ("./", "./etc/os-release"); symlinks inside the tree are stored as
// symlinks and never followed (only `dir` itself may be a symlink to the tree). Owners are
// stored as numbers, hardlinks as hardlinks; xattrs, ACLs and file flags are not stored, and
// mounts below `dir` are not entered. An unreadable file or directory fails with an Error
// naming that path and the errno text (code -errno); a write failure on `out_fd` likewise.
Status write_rootfs_tar(const std::string& dir, int out_fd);

} // namespace bh
