// Rootfs import: safely unpacks an untrusted distribution tar into a fresh directory.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>

namespace bh {

// The two os-release(5) fields the service shows and matches on.
struct OsRelease {
    std::optional<std::string> id;
    std::optional<std::string> version_id;
};

// Who owns an imported tree. remap=false keeps the archive's numeric owners (uid/gid unused);
// remap=true lchowns every entry to uid:gid after extraction, for non-root users whose VM maps
// root to their uid. The kernel clears setuid/setgid bits on that chown, which is harmless
// there: inside such a VM every file already belongs to the one mapped user.
struct ImportOwner {
    uid_t uid;
    gid_t gid;
    bool remap;
};

// What one import may take, and how it is stopped. The archive's sender is a user: its bytes,
// its entries and its pace are theirs to choose.
struct ImportLimits {
    uint64_t max_bytes = UINT64_MAX; // file content, by the sizes the entries declare
    uint64_t max_entries = 1'000'000; // files, directories and links
    // The import stops before the target's filesystem would have less than this free for
    // unprivileged writers (statvfs f_bavail): the service writes as root, which the
    // filesystem's reserve for root would otherwise not stop.
    uint64_t keep_free_bytes = 0;
    // When this fd (an eventfd) becomes readable the import stops with -ECANCELED, even while
    // it waits for the sender's next byte. -1: not cancellable.
    int cancel_fd = -1;
};

// What an import wrote, by the same measures as ImportLimits.
struct ImportUsage {
    uint64_t bytes = 0;
    uint64_t entries = 0;
};

// Extracts a tar stream (plain or gzip/bzip2/xz/lzma/lzip/zstd/lz4/compress) read from `tar_fd`
// into `target_dir`, which must not exist yet (its parent must); it is created with mode 0755.
// The archive is untrusted: every entry is validated before it is written, and an absolute
// path, a '..' component, an absolute or escaping hardlink target, a relative symlink that
// climbs above the root, a device node or an over-long name rejects the whole archive.
// Absolute symlink targets are allowed: they resolve inside the distribution's own root at run
// time. Going over `limits` rejects it too (-EDQUOT for bytes and entries, -ENOSPC for the
// filesystem's free space), as does cancellation (-ECANCELED). A pipe or FIFO is read through a
// non-blocking open file description of its own, so a sender that stops sending never blocks the
// import past a cancellation. `usage`, when given, is filled on success.
// On any failure `target_dir` is removed completely (unless it existed before: -EEXIST) and
// the Error, "cannot register from tar: ...", names the entry and the reason: -EINVAL for bad
// or hostile content (including "not a tar archive"), -errno for I/O failures.
// Never changes the working directory, so it is safe on any thread; it blocks.
Status import_rootfs_tar(int tar_fd, const std::string& target_dir, const ImportOwner& owner,
    const ImportLimits& limits = {}, ImportUsage* usage = nullptr);

// Reads ID and VERSION_ID from etc/os-release (fallback usr/lib/os-release) under the root
// directory `root_dirfd`. Paths resolve with RESOLVE_IN_ROOT, so a hostile symlink in the root
// can never make the service read a host file. Reads at most 64 KiB. A missing or unreadable
// file, or missing keys, leave the fields empty; this never fails.
OsRelease read_os_release(int root_dirfd);

// Removes the tree at `path` like `rm -rf`, but never follows a symlink (a symlink is removed,
// not its target) and holds a constant number of fds however deep the tree is.
// A missing path is success.
Status remove_tree(const std::string& path);

} // namespace bh
