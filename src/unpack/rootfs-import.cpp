// Rootfs import: validates and extracts untrusted distribution tars.
#include "unpack/rootfs-import.h"

#include "base/fd.h"
#include "unpack/rootfs-tree.h"

#include <archive.h>
#include <archive_entry.h>
#include <array>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <string_view>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace bh {

namespace {

    constexpr const char* import_failed = "cannot register from tar: ";

    struct ReadArchiveFree {
        void operator()(archive* a) const { archive_read_free(a); }
    };
    struct WriteArchiveFree {
        void operator()(archive* a) const { archive_write_free(a); }
    };
    using ReadArchive = std::unique_ptr<archive, ReadArchiveFree>;
    using WriteArchive = std::unique_ptr<archive, WriteArchiveFree>;

    std::string quoted(std::string_view name)
    {
        return quote_untrusted(name);
    }

    // The path of `root` for system calls: "" stands for "/".
    const char* on_disk(const std::string& root)
    {
        return root.empty() ? "/" : root.c_str();
    }

    Error bad_entry(std::string_view name, const std::string& why)
    {
        return Error { -EINVAL, "entry " + quoted(name) + " " + why };
    }

    // Turns libarchive's last error into ours. libarchive reports bad input with
    // ARCHIVE_ERRNO_FILE_FORMAT (EILSEQ) or ARCHIVE_ERRNO_MISC (-1), which are content
    // problems (-EINVAL); any real errno is an I/O failure and is passed on.
    Error archive_failure(archive* a, const std::string& what)
    {
        int err = archive_errno(a);
        const char* text = archive_error_string(a);
        return Error { err > 0 && err != EILSEQ ? -err : -EINVAL,
            what + ": " + (text ? text : "unknown libarchive error") };
    }

    // The components of a relative path, without empty and "." ones: "./a//b/" is {a, b}.
    std::vector<std::string_view> components(std::string_view path)
    {
        std::vector<std::string_view> parts;
        while (!path.empty()) {
            size_t slash = path.find('/');
            std::string_view part = path.substr(0, slash);
            if (!part.empty() && part != ".")
                parts.push_back(part);
            path = slash == std::string_view::npos ? "" : path.substr(slash + 1);
        }
        return parts;
    }

    // ---- Validating entries ----

    // Returns `path` as an absolute path under `root`, or why it would leave the root.
    // `path` is entry `name`'s own name, or its hardlink target; `role` then describes it
    // ("is a hardlink to 'x', which ") so the message reads as one sentence.
    Result<std::string> place(
        std::string_view name, std::string_view path, const std::string& role, const std::string& root)
    {
        if (path.size() >= PATH_MAX)
            return bad_entry(name, role + "is longer than PATH_MAX");
        if (path.starts_with('/'))
            return bad_entry(name, role + "escapes the root (absolute path)");
        std::string placed = root;
        for (auto part : components(path)) {
            if (part == "..")
                return bad_entry(name, role + "escapes the root ('..' component)");
            placed += '/';
            placed += part;
        }
        // libarchive chdir()s into deep paths that exceed PATH_MAX, which would move every
        // thread of the service; keeping full paths short avoids that code path.
        if (placed.size() >= PATH_MAX)
            return bad_entry(name, role + "is too long once placed under the target directory");
        return placed;
    }

    // Whether relative symlink `target`, resolved lexically from the directory holding
    // entry `name`, climbs above the root. The service never follows symlinks outside
    // RESOLVE_IN_ROOT anyway; this rejects archives that are plainly hostile.
    bool climbs_above_root(std::string_view name, std::string_view target)
    {
        long depth = static_cast<long>(components(name).size()) - 1;
        for (auto part : components(target)) {
            if (part != "..")
                ++depth;
            else if (--depth < 0)
                return true;
        }
        return false;
    }

    Status check_symlink(archive_entry* entry, std::string_view name)
    {
        const char* target = archive_entry_symlink(entry);
        if (!target || !*target)
            return bad_entry(name, "is a symlink with an empty target");
        std::string_view view = target;
        if (view.size() >= PATH_MAX)
            return bad_entry(name, "is a symlink whose target is longer than PATH_MAX");
        if (!view.starts_with('/') && climbs_above_root(name, view))
            return bad_entry(name, "is a symlink to " + quoted(view) + ", which climbs above the root");
        return {};
    }

    // Only directories, regular files, symlinks and FIFOs are written; device nodes never reach
    // here (extract_entries skips them: they would give the VM raw access to host hardware).
    Status check_file_type(archive_entry* entry, std::string_view name, bool is_root)
    {
        mode_t type = archive_entry_filetype(entry);
        if (is_root && type != AE_IFDIR)
            return bad_entry(name, "would replace the root directory with a non-directory");
        switch (type) {
        case AE_IFDIR:
        case AE_IFREG:
        case AE_IFIFO:
            return {};
        case AE_IFLNK:
            return check_symlink(entry, name);
        default:
            return bad_entry(name, "has an unsupported file type (socket or unknown)");
        }
    }

    bool is_device(archive_entry* entry)
    {
        mode_t type = archive_entry_filetype(entry);
        return !archive_entry_hardlink(entry) && (type == AE_IFCHR || type == AE_IFBLK);
    }

    // A device node is skipped, not written: the distribution gets its own /dev, and tars of
    // real systems (mmdebstrap's, exported ones) carry /dev/console, /dev/null and the like. Its
    // name must still stay inside the root, as every other entry's.
    Status check_skipped_device(std::string_view name, const std::string& root)
    {
        if (name.empty())
            return Error { -EINVAL, "an entry has an empty or unreadable name" };
        auto placed = place(name, name, "", root);
        if (!placed)
            return placed.take_error();
        if (*placed == root)
            return bad_entry(name, "would replace the root directory with a device node");
        return {};
    }

    Status place_hardlink(archive_entry* entry, std::string_view name, const std::string& root)
    {
        std::string target = archive_entry_hardlink(entry);
        auto placed = place(name, target, "is a hardlink to " + quoted(target) + ", which ", root);
        if (!placed)
            return placed.take_error();
        if (*placed == root)
            return bad_entry(name, "is a hardlink to the root directory");
        archive_entry_copy_hardlink(entry, placed->c_str());
        // Never write data through a link: its target already holds the content.
        archive_entry_set_size(entry, 0);
        return {};
    }

    // Validates one entry before anything of it is written, and rewrites its paths to
    // absolute paths under `root`, so extraction never depends on the working directory
    // (chdir would move every thread of the service).
    Status check_entry(archive_entry* entry, const std::string& name, const std::string& root)
    {
        if (name.empty())
            return Error { -EINVAL, "an entry has an empty or unreadable name" };
        auto placed = place(name, name, "", root);
        if (!placed)
            return placed.take_error();
        if (archive_entry_hardlink(entry))
            BH_TRY(place_hardlink(entry, name, root));
        else
            BH_TRY(check_file_type(entry, name, *placed == root));
        archive_entry_copy_pathname(entry, on_disk(*placed));
        return {};
    }

    // ---- Extracting ----

    // Registers decompression filter `add` only if libarchive decodes it in-process. Tried
    // on a throwaway reader first: ARCHIVE_WARN means it would fork an external program
    // (lrzip, lzop, ...) on untrusted input, from a multithreaded daemon.
    void add_builtin_filter(archive* in, int (*add)(archive*))
    {
        ReadArchive probe(archive_read_new());
        if (probe && add(probe.get()) == ARCHIVE_OK)
            add(in);
    }

    // Only the tar family is parsed: other formats are more parser surface for hostile
    // input, and a rootfs must come as a tar. A sender that stops sending blocks the read;
    // the service ends such an import by killing the process that reads.
    Result<ReadArchive> open_tar_reader(int tar_fd)
    {
        ReadArchive in(archive_read_new());
        if (!in)
            return Error { -ENOMEM, "cannot allocate a tar reader" };
        archive_read_support_format_tar(in.get());
        for (auto add : { archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                 archive_read_support_filter_xz, archive_read_support_filter_lzma,
                 archive_read_support_filter_lzip, archive_read_support_filter_zstd,
                 archive_read_support_filter_lz4, archive_read_support_filter_compress })
            add_builtin_filter(in.get(), add);
        if (archive_read_open_fd(in.get(), tar_fd, 64 * 1024) == ARCHIVE_OK)
            return in;
        if (archive_errno(in.get()) == EILSEQ)
            return archive_failure(in.get(), "not a tar archive");
        return archive_failure(in.get(), "cannot read the tar stream");
    }

    // No ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS: entries arrive as absolute paths under the
    // root, after check_entry rejected absolute names. No standard user lookup: owners stay
    // numeric, since the host's user names mean nothing for a guest's files.
    WriteArchive open_disk_writer(bool keep_owners)
    {
        WriteArchive out(archive_write_disk_new());
        int flags = ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_PERM
            | ARCHIVE_EXTRACT_TIME;
        if (keep_owners)
            flags |= ARCHIVE_EXTRACT_OWNER;
        if (out)
            archive_write_disk_set_options(out.get(), flags);
        return out;
    }

    Status copy_data(archive* in, archive* out, const std::string& name)
    {
        const void* block;
        size_t size;
        la_int64_t offset;
        for (;;) {
            int r = archive_read_data_block(in, &block, &size, &offset);
            if (r == ARCHIVE_EOF)
                return {};
            if (r != ARCHIVE_OK)
                return archive_failure(in, "cannot read the data of entry " + quoted(name));
            if (archive_write_data_block(out, block, size, offset) != ARCHIVE_OK)
                return archive_failure(out, "cannot write entry " + quoted(name));
        }
    }

    // Warnings count as failures: a rootfs with wrong modes or owners is not usable.
    Status write_entry(archive* in, archive* out, archive_entry* entry, const std::string& name)
    {
        if (archive_write_header(out, entry) != ARCHIVE_OK)
            return archive_failure(out, "cannot create entry " + quoted(name));
        if (archive_entry_size(entry) > 0)
            BH_TRY(copy_data(in, out, name));
        if (archive_write_finish_entry(out) != ARCHIVE_OK)
            return archive_failure(out, "cannot finish entry " + quoted(name));
        return {};
    }

    Error read_failure(archive* in, const std::string& last_name)
    {
        if (last_name.empty())
            return archive_failure(
                in, archive_errno(in) == EILSEQ ? "not a tar archive" : "cannot read the tar stream");
        return archive_failure(in, "cannot read the tar stream after entry " + quoted(last_name));
    }

    // The times an entry asks for; a time it does not carry is left alone.
    std::array<timespec, 2> entry_times(archive_entry* entry)
    {
        std::array<timespec, 2> times { timespec { 0, UTIME_OMIT }, timespec { 0, UTIME_OMIT } };
        if (archive_entry_atime_is_set(entry))
            times[0] = { archive_entry_atime(entry), archive_entry_atime_nsec(entry) };
        if (archive_entry_mtime_is_set(entry))
            times[1] = { archive_entry_mtime(entry), archive_entry_mtime_nsec(entry) };
        return times;
    }

    // Validates and writes the entries one by one, stopping at the first problem so
    // nothing after a hostile entry is written. libarchive defers the times of directories
    // it creates to archive_write_close(), but sets those of the existing root at once,
    // and later entries change them again; the root's times are returned in `root_times`
    // to be set last.
    // Checks one more entry of `size` declared bytes against the limits, before it is written.
    Status within_limits(
        const ImportLimits& limits, const ImportUsage& used, uint64_t size, const std::string& root)
    {
        if (used.entries >= limits.max_entries)
            return Error { -EDQUOT,
                "the archive has more than " + std::to_string(limits.max_entries) + " entries" };
        if (size > limits.max_bytes - std::min(used.bytes, limits.max_bytes))
            return Error { -EDQUOT,
                "the archive holds more than " + std::to_string(limits.max_bytes) + " bytes of files" };
        if (limits.keep_free_bytes > 0 && size > 0) {
            struct statvfs fs;
            if (statvfs(on_disk(root), &fs) != 0)
                return Error::from_errno(errno, "cannot read the free space of " + quoted(on_disk(root)));
            uint64_t free = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
            if (free < limits.keep_free_bytes || size > free - limits.keep_free_bytes)
                return Error { -ENOSPC,
                    "the state filesystem would keep less than "
                        + std::to_string(limits.keep_free_bytes >> 20) + " MiB free" };
        }
        return {};
    }

    // Only ids the importing user namespace maps can be restored (ImportLimits::max_owner_uid).
    Status check_owner(archive_entry* entry, std::string_view name, const ImportLimits& limits)
    {
        la_int64_t uid = archive_entry_uid(entry), gid = archive_entry_gid(entry);
        if (uid <= limits.max_owner_uid && gid <= limits.max_owner_gid)
            return {};
        return bad_entry(name,
            "is owned by uid " + std::to_string(uid) + ", gid " + std::to_string(gid)
                + ", beyond the ids of the distribution's user namespace (uids 0 to "
                + std::to_string(limits.max_owner_uid) + ", gids 0 to " + std::to_string(limits.max_owner_gid)
                + ")");
    }

    Status extract_entries(archive* in, archive* out, const std::string& root, const ImportLimits& limits,
        ImportUsage& used, std::optional<std::array<timespec, 2>>& root_times)
    {
        std::string name;
        for (;;) {
            archive_entry* entry = nullptr;
            int r = archive_read_next_header(in, &entry);
            if (r == ARCHIVE_EOF)
                return {};
            if (r < ARCHIVE_WARN)
                return read_failure(in, name);
            const char* raw = archive_entry_pathname(entry);
            name = raw ? raw : "";
            uint64_t size
                = archive_entry_size(entry) > 0 ? static_cast<uint64_t>(archive_entry_size(entry)) : 0;
            BH_TRY(check_owner(entry, name, limits));
            if (is_device(entry)) {
                BH_TRY(check_skipped_device(name, root));
                used.skipped_devices += 1;
                continue;
            }
            BH_TRY(within_limits(limits, used, size, root));
            BH_TRY(check_entry(entry, name, root));
            if (std::string_view(archive_entry_pathname(entry)) == on_disk(root))
                root_times = entry_times(entry);
            BH_TRY(write_entry(in, out, entry, name));
            used.entries += 1;
            used.bytes += size;
        }
    }

    // `root` is the target's absolute path, "" for "/": entries are placed at root + "/" + name.
    Status extract(int tar_fd, const std::string& root, ImportOwners owners, const ImportLimits& limits,
        ImportUsage& used)
    {
        auto in = open_tar_reader(tar_fd);
        if (!in)
            return in.take_error();
        WriteArchive out = open_disk_writer(owners == ImportOwners::archive);
        if (!out)
            return Error { -ENOMEM, "cannot allocate a disk writer" };
        std::optional<std::array<timespec, 2>> root_times;
        BH_TRY(extract_entries(in->get(), out.get(), root, limits, used, root_times));
        // Closing applies the deferred directory modes and times.
        if (archive_write_close(out.get()) != ARCHIVE_OK)
            return archive_failure(out.get(), "cannot set directory modes and times");
        if (root_times && utimensat(AT_FDCWD, on_disk(root), root_times->data(), AT_SYMLINK_NOFOLLOW) != 0)
            return Error::from_errno(errno, "cannot set the times of " + quoted(on_disk(root)));
        return {};
    }

    // Creates the target directory and returns its path with the parent canonicalized:
    // libarchive's symlink check inspects every component of the paths it is given, so a
    // symlink in the service's own prefix (say /var/run) must be resolved first.
    Result<std::string> create_target(const std::string& target_dir)
    {
        std::string trimmed = target_dir;
        while (trimmed.size() > 1 && trimmed.back() == '/')
            trimmed.pop_back();
        size_t slash = trimmed.rfind('/');
        std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : trimmed.substr(0, slash);
        std::string base = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
        if (base.empty() || base == "." || base == ".." || base == "/")
            return Error { -EINVAL, "invalid target directory " + quoted(target_dir) };
        std::unique_ptr<char, decltype(&std::free)> real(realpath(parent.c_str(), nullptr), &std::free);
        if (!real)
            return Error::from_errno(errno, "cannot resolve " + quoted(parent));
        std::string root = std::string_view(real.get()) == "/" ? "" : real.get();
        root += "/" + base;
        if (mkdir(root.c_str(), 0755) != 0)
            return Error::from_errno(errno, "cannot create " + quoted(target_dir));
        // mkdir() applies the umask, and the mode is part of the contract.
        if (chmod(root.c_str(), 0755) != 0) {
            Error error = Error::from_errno(errno, "cannot set the mode of " + quoted(target_dir));
            rmdir(root.c_str());
            return error;
        }
        return root;
    }

} // namespace

Status extract_rootfs_tar(
    int tar_fd, const std::string& root, ImportOwners owners, const ImportLimits& limits, ImportUsage* usage)
{
    if (!root.starts_with('/'))
        return Error { -EINVAL, "the target " + quoted(root) + " is not an absolute path" };
    std::string placed_root = root;
    while (!placed_root.empty() && placed_root.back() == '/')
        placed_root.pop_back();
    ImportUsage used;
    BH_TRY(extract(tar_fd, placed_root, owners, limits, used));
    if (usage)
        *usage = used;
    return {};
}

Status import_rootfs_tar(int tar_fd, const std::string& target_dir, ImportOwners owners,
    const ImportLimits& limits, ImportUsage* usage)
{
    auto root = create_target(target_dir);
    if (!root)
        return Error { root.error().code, import_failed + root.error().message };
    Status status = extract_rootfs_tar(tar_fd, *root, owners, limits, usage);
    if (status.ok())
        return status;
    Error error = status.take_error();
    error.message = import_failed + error.message;
    // The extraction error is what the caller needs; a failed cleanup is added to it.
    if (Status removed = remove_tree(*root); !removed.ok())
        error.message += " (and removing the partial tree failed: " + removed.error().message + ")";
    return error;
}

} // namespace bh
