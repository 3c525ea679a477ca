// Rootfs archive: packs a directory tree into a tar stream, in bulkhead-unpack: for the CLI's
// `register --rootfs` (--pack-tree, as the user) and `bulkhead export` (--pack, confined in the
// distribution's root).
#pragma once

#include "base/result.h"

#include <optional>
#include <string>

namespace bh {

// How an exported stream is compressed (libarchive's own filters, in-process).
enum class TarCompression { none, gzip, xz, zstd };

// The compression a file name asks for by its suffix (.gz, .tgz, .xz, .zst); none otherwise.
// Inline, like the two below: the service and the CLI name compressions without linking libarchive.
inline TarCompression compression_for(const std::string& file_name)
{
    if (file_name.ends_with(".gz") || file_name.ends_with(".tgz"))
        return TarCompression::gzip;
    if (file_name.ends_with(".xz"))
        return TarCompression::xz;
    return file_name.ends_with(".zst") ? TarCompression::zstd : TarCompression::none;
}

// "none", "gzip", "xz", "zstd", and back (nullopt for anything else).
inline const char* compression_name(TarCompression compression)
{
    constexpr const char* names[] = { "none", "gzip", "xz", "zstd" };
    return names[static_cast<int>(compression)];
}
inline std::optional<TarCompression> parse_compression(const std::string& name)
{
    for (auto compression :
        { TarCompression::none, TarCompression::gzip, TarCompression::xz, TarCompression::zstd }) {
        if (name == compression_name(compression))
            return compression;
    }
    return std::nullopt;
}

// Writes the tree at `dir` as a pax tar stream (compressed as asked) to `out_fd`, which stays open and
// owned by the caller. Reads with the caller's own rights (the CLI's user; the confined exporter).
// Entry names are relative ("./", "./etc/os-release"); symlinks inside the tree are stored as
// symlinks and never followed (only `dir` itself may be a symlink to the tree). Owners are
// stored as numbers, hardlinks as hardlinks; xattrs, ACLs and file flags are not stored, and
// mounts below `dir` are not entered. An unreadable file or directory fails with an Error
// naming that path and the errno text (code -errno); a write failure on `out_fd` likewise.
Status write_rootfs_tar(
    const std::string& dir, int out_fd, TarCompression compression = TarCompression::none);

} // namespace bh
