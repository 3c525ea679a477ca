// Rootfs import: safely unpacks an untrusted distribution tar into a fresh directory.
// The engine of bulkhead-unpack (src/unpack/main.cpp), which the service runs for every
// registration; the service itself never parses an archive.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <string>

namespace bh {

// Who owns the imported entries. `archive`: the archive's numeric owners, restored as they are
// (root's distributions, whose VMs use the host's ids). `importer`: the process that imports
// (its fsuid and fsgid) owns every entry. bulkhead-unpack runs as root of a user namespace that
// maps only the distribution's owner, so there every file is the owner's without a pass of its
// own, and setuid bits stay: they mean the VM's root, which is that same user.
enum class ImportOwners { archive, importer };

// What one import may take. The archive's sender is a user: its bytes, its entries and its pace
// are theirs to choose (the pace is bounded by its caller: the service kills the unpacking
// process when the registration is cancelled).
struct ImportLimits {
    uint64_t max_bytes = UINT64_MAX; // file content, by the sizes the entries declare
    uint64_t max_entries = 1'000'000; // files, directories and links
    // The import stops before the target's filesystem would have less than this free for
    // unprivileged writers (statvfs f_bavail): root writes, which the filesystem's reserve for
    // root would otherwise not stop.
    uint64_t keep_free_bytes = 0;
    // With ImportOwners::archive: an entry owned by a higher uid or gid is refused (-EINVAL); the
    // ids of a user namespace that maps a user's subordinate range end there.
    uint32_t max_owner_uid = UINT32_MAX;
    uint32_t max_owner_gid = UINT32_MAX;
};

// What an import wrote, by the same measures as ImportLimits, and the device nodes it skipped.
struct ImportUsage {
    uint64_t bytes = 0;
    uint64_t entries = 0;
    uint64_t skipped_devices = 0;
};

// Extracts a tar stream (plain or gzip/bzip2/xz/lzma/lzip/zstd/lz4/compress) read from `tar_fd`
// into `target_dir`, which must not exist yet (its parent must); it is created with mode 0755.
// The archive is untrusted: every entry is validated before it is written, and an absolute
// path, a '..' component, an absolute or escaping hardlink target, a relative symlink that
// climbs above the root or an over-long name rejects the whole archive. Device nodes are not
// written (the distribution gets its own /dev) but counted in `usage`; their names are checked.
// Absolute symlink targets are allowed: they resolve inside the distribution's own root at run
// time. Going over `limits` rejects it too (-EDQUOT for bytes and entries, -ENOSPC for the
// filesystem's free space). `usage`, when given, is filled on success.
// On any failure `target_dir` is removed completely (unless it existed before: -EEXIST) and
// the Error, "cannot register from tar: ...", names the entry and the reason: -EINVAL for bad
// or hostile content (including "not a tar archive"), -errno for I/O failures.
// Never changes the working directory, so it is safe on any thread; it blocks.
Status import_rootfs_tar(int tar_fd, const std::string& target_dir, ImportOwners owners,
    const ImportLimits& limits = {}, ImportUsage* usage = nullptr);

// The same extraction into the existing, empty directory `root` (an absolute path; "/" in a
// process chrooted into the target, as bulkhead-unpack is). On failure what was written stays,
// for the caller to remove, and the Error carries no "cannot register from tar: " prefix.
Status extract_rootfs_tar(int tar_fd, const std::string& root, ImportOwners owners,
    const ImportLimits& limits = {}, ImportUsage* usage = nullptr);

} // namespace bh
