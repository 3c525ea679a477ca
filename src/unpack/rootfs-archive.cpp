// Rootfs archive: walks a directory with libarchive's disk reader and writes it as pax tar.
#include "unpack/rootfs-archive.h"

#include "base/fd.h"

#include <archive.h>
#include <archive_entry.h>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

namespace bh {

namespace {

    struct ReadArchiveFree {
        void operator()(archive* a) const { archive_read_free(a); }
    };
    struct WriteArchiveFree {
        void operator()(archive* a) const { archive_write_free(a); }
    };
    struct EntryFree {
        void operator()(archive_entry* e) const { archive_entry_free(e); }
    };
    struct ResolverFree {
        void operator()(archive_entry_linkresolver* r) const { archive_entry_linkresolver_free(r); }
    };
    using ReadArchive = std::unique_ptr<archive, ReadArchiveFree>;
    using WriteArchive = std::unique_ptr<archive, WriteArchiveFree>;

    // Everything libarchive knows about one failure: its message usually names the path,
    // and the errno text is added when it has one.
    Error archive_failure(archive* a, const std::string& what)
    {
        int err = archive_errno(a);
        const char* text = archive_error_string(a);
        std::string message = what + ": " + (text ? text : "unknown libarchive error");
        if (err > 0 && (!text || !std::strstr(text, std::strerror(err))))
            message += std::string(" (") + std::strerror(err) + ")";
        return Error { err > 0 ? -err : -EIO, std::move(message) };
    }

    // "dir/" and "dir" name the same tree; libarchive joins children as dir + "/" + name.
    std::string without_trailing_slashes(std::string dir)
    {
        while (dir.size() > 1 && dir.back() == '/')
            dir.pop_back();
        return dir;
    }

    // Maps a path the disk reader produced ("<dir>/etc/x") to its name in the tar
    // ("./etc/x"); the top directory itself becomes ".".
    std::optional<std::string> tar_name(std::string_view source, const std::string& dir)
    {
        if (source == dir)
            return ".";
        std::string_view prefix = dir;
        if (dir == "/")
            prefix = "";
        if (!source.starts_with(prefix) || source.substr(prefix.size(), 1) != "/")
            return std::nullopt;
        source.remove_prefix(prefix.size());
        while (source.starts_with('/'))
            source.remove_prefix(1);
        return "./" + std::string(source);
    }

    // Hybrid symlink mode follows only `dir` itself; every symlink inside is stored as one.
    // No user-name lookup: owners stay numeric, since guest and host name users differently.
    Result<ReadArchive> open_disk_reader(const std::string& dir)
    {
        ReadArchive disk(archive_read_disk_new());
        if (!disk)
            return Error { -ENOMEM, "cannot allocate a disk reader" };
        archive_read_disk_set_symlink_hybrid(disk.get());
        archive_read_disk_set_behavior(disk.get(),
            ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL
                | ARCHIVE_READDISK_NO_FFLAGS | ARCHIVE_READDISK_NO_SPARSE);
        if (archive_read_disk_open(disk.get(), dir.c_str()) != ARCHIVE_OK)
            return archive_failure(disk.get(), "cannot read '" + dir + "'");
        return disk;
    }

    int add_filter(archive* tar, TarCompression compression)
    {
        switch (compression) {
        case TarCompression::gzip:
            return archive_write_add_filter_gzip(tar);
        case TarCompression::xz:
            return archive_write_add_filter_xz(tar);
        case TarCompression::zstd:
            return archive_write_add_filter_zstd(tar);
        case TarCompression::none:
            break;
        }
        return archive_write_add_filter_none(tar);
    }

    Result<WriteArchive> open_tar_writer(int out_fd, TarCompression compression)
    {
        WriteArchive tar(archive_write_new());
        if (!tar)
            return Error { -ENOMEM, "cannot allocate a tar writer" };
        // ARCHIVE_WARN from a filter means an external program would do the work: refused.
        if (archive_write_set_format_pax_restricted(tar.get()) != ARCHIVE_OK
            || add_filter(tar.get(), compression) != ARCHIVE_OK
            || archive_write_open_fd(tar.get(), out_fd) != ARCHIVE_OK)
            return archive_failure(tar.get(), "cannot start the tar stream");
        return tar;
    }

    Status copy_file_data(archive* disk, archive* tar, const std::string& source)
    {
        char buffer[64 * 1024];
        for (;;) {
            la_ssize_t n = archive_read_data(disk, buffer, sizeof buffer);
            if (n == 0)
                return {};
            if (n < 0 && archive_errno(disk) > 0)
                return Error::from_errno(archive_errno(disk), "cannot read '" + source + "'");
            if (n < 0)
                return archive_failure(disk, "cannot read '" + source + "'");
            if (archive_write_data(tar, buffer, static_cast<size_t>(n)) != n)
                return archive_failure(tar, "cannot write the tar stream at '" + source + "'");
        }
    }

    // Writes one entry, renamed relative to `dir`. The link resolver turns the second and
    // later names of a multiply-linked file into hardlinks without data.
    Status write_entry(archive* disk, archive* tar, archive_entry_linkresolver* links, archive_entry* entry,
        const std::string& dir)
    {
        std::string source = archive_entry_sourcepath(entry) ? archive_entry_sourcepath(entry) : "";
        auto name = tar_name(source, dir);
        if (!name)
            return Error { -EIO, "cannot archive '" + source + "': it is not below '" + dir + "'" };
        archive_entry_copy_pathname(entry, name->c_str());
        archive_entry* spare = nullptr;
        archive_entry_linkify(links, &entry, &spare);
        // Warnings are fine: pax stores a name it cannot translate to UTF-8 as raw bytes.
        if (archive_write_header(tar, entry) < ARCHIVE_WARN)
            return archive_failure(tar, "cannot write the tar header of '" + source + "'");
        if (archive_entry_filetype(entry) == AE_IFREG && archive_entry_size(entry) > 0)
            BH_TRY(copy_file_data(disk, tar, source));
        return {};
    }

    // Asks the reader to enter directory `source` next. libarchive reports a directory it
    // cannot open without the errno, so it is opened here first to tell the user why.
    Status descend(archive* disk, const char* source)
    {
        Fd probe(open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!probe)
            return Error::from_errno(errno, "cannot read '" + std::string(source) + "'");
        archive_read_disk_descend(disk);
        return {};
    }

    // Any error from the disk reader is fatal: a rootfs with silently missing files would
    // register fine and break later.
    Status write_tree(archive* disk, archive* tar, const std::string& dir)
    {
        std::unique_ptr<archive_entry_linkresolver, ResolverFree> links(archive_entry_linkresolver_new());
        std::unique_ptr<archive_entry, EntryFree> entry(archive_entry_new());
        if (!links || !entry)
            return Error { -ENOMEM, "cannot allocate archive entries" };
        archive_entry_linkresolver_set_strategy(links.get(), archive_format(tar));
        for (;;) {
            archive_entry_clear(entry.get());
            int r = archive_read_next_header2(disk, entry.get());
            if (r == ARCHIVE_EOF)
                return {};
            if (r != ARCHIVE_OK)
                return archive_failure(disk, "cannot read '" + dir + "'");
            BH_TRY(write_entry(disk, tar, links.get(), entry.get(), dir));
            if (archive_entry_filetype(entry.get()) == AE_IFDIR)
                BH_TRY(descend(disk, archive_entry_sourcepath(entry.get())));
        }
    }

} // namespace

Status write_rootfs_tar(const std::string& dir, int out_fd, TarCompression compression)
{
    std::string top = without_trailing_slashes(dir);
    auto disk = open_disk_reader(top);
    if (!disk)
        return disk.take_error();
    auto tar = open_tar_writer(out_fd, compression);
    if (!tar)
        return tar.take_error();
    BH_TRY(write_tree(disk->get(), tar->get(), top));
    if (archive_write_close(tar->get()) != ARCHIVE_OK)
        return archive_failure(tar->get(), "cannot finish the tar stream");
    return {};
}

} // namespace bh
