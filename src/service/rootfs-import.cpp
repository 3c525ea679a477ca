// Rootfs import: validates and extracts untrusted distribution tars, reads os-release safely.
#include "service/rootfs-import.h"

#include "base/fd.h"

#include <archive.h>
#include <archive_entry.h>
#include <array>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <linux/openat2.h>
#include <memory>
#include <poll.h>
#include <string_view>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace bh {

namespace {

    constexpr size_t max_os_release_bytes = 64 * 1024;
    constexpr const char* import_failed = "cannot register from tar: ";

    struct ReadArchiveFree {
        void operator()(archive* a) const { archive_read_free(a); }
    };
    struct WriteArchiveFree {
        void operator()(archive* a) const { archive_write_free(a); }
    };
    using ReadArchive = std::unique_ptr<archive, ReadArchiveFree>;
    using WriteArchive = std::unique_ptr<archive, WriteArchiveFree>;

    // Quotes an untrusted name for an error message: control characters are escaped so a
    // hostile archive cannot send terminal escapes to the user, and long names are cut.
    std::string quoted(std::string_view name)
    {
        constexpr size_t max_shown = 200;
        std::string out = "'";
        for (unsigned char c : name.substr(0, max_shown)) {
            if (c >= 0x20 && c != 0x7f) {
                out += static_cast<char>(c);
                continue;
            }
            char escaped[5];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
            out += escaped;
        }
        if (name.size() > max_shown)
            out += "...";
        return out + "'";
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

    // Splits "/a/b/c/" into "/a/b" and "c"; a bare name's parent is ".".
    std::pair<std::string, std::string> split_parent(std::string path)
    {
        while (path.size() > 1 && path.back() == '/')
            path.pop_back();
        size_t slash = path.rfind('/');
        if (slash == std::string::npos)
            return { ".", path };
        return { slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1) };
    }

    bool is_plain_name(std::string_view name)
    {
        return !name.empty() && name != "." && name != "..";
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

    // ---- Walking trees without following symlinks ----

    // One directory on the walk's current path: its identity, to check '..' on the way
    // back up, and the subdirectories still to visit.
    struct Level {
        std::string name;
        dev_t dev = 0;
        ino_t ino = 0;
        std::vector<std::string> subdirs;
    };

    bool is_dir_at(int dirfd, const char* name)
    {
        struct stat st;
        return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }

    struct DirClose {
        void operator()(DIR* dir) const { closedir(dir); }
    };

    // Reads directory `fd` into `level` (subdirectories) and `others` (everything else,
    // symlinks included). Returns 0 or an errno.
    int list_dir(int fd, Level& level, std::vector<std::string>& others)
    {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return errno;
        level.dev = st.st_dev;
        level.ino = st.st_ino;
        // fdopendir takes over its fd, and the walk still needs `fd` afterwards.
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        std::unique_ptr<DIR, DirClose> dir(copy >= 0 ? fdopendir(copy) : nullptr);
        if (!dir) {
            int err = errno;
            if (copy >= 0)
                close(copy);
            return err;
        }
        errno = 0;
        while (dirent* entry = readdir(dir.get())) {
            std::string_view name = entry->d_name;
            if (name == "." || name == "..")
                continue;
            bool subdir
                = entry->d_type == DT_DIR || (entry->d_type == DT_UNKNOWN && is_dir_at(fd, entry->d_name));
            (subdir ? level.subdirs : others).emplace_back(name);
        }
        return errno;
    }

    // An iterative post-order walk: `visit(parent_fd, name, is_dir)` runs on every
    // non-directory, and on every directory after its contents. It never follows a symlink
    // and holds at most three fds however deep the tree is (a hostile archive can nest
    // 2,000 levels, more than the fd limit): it climbs back up through '..', checked
    // against the remembered device and inode, instead of keeping every ancestor open.
    class TreeWalk {
    public:
        // Returns 0 or an errno.
        using Visit = std::function<int(int parent_fd, const char* name, bool is_dir)>;

        // `shown_top` is the tree's path for messages; `verb` says what `visit` does.
        TreeWalk(std::string shown_top, const char* verb, Visit visit)
            : m_top(std::move(shown_top))
            , m_verb(verb)
            , m_visit(std::move(visit))
        {
        }

        // Walks the directory `name` in `parent_fd`, ending with `name` itself.
        Status run(int parent_fd, const std::string& name)
        {
            BH_TRY(enter(parent_fd, name));
            while (!m_levels.empty()) {
                auto& pending = m_levels.back().subdirs;
                if (pending.empty()) {
                    BH_TRY(leave(parent_fd));
                    continue;
                }
                std::string next = std::move(pending.back());
                pending.pop_back();
                BH_TRY(enter(m_dir.get(), std::move(next)));
            }
            return {};
        }

    private:
        // Opens and lists directory `name` in `parent_fd`, visits its non-directories and
        // makes it the current directory.
        Status enter(int parent_fd, std::string name)
        {
            Fd dir(openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!dir)
                return failure(errno, name);
            Level level;
            level.name = std::move(name);
            std::vector<std::string> others;
            if (int err = list_dir(dir.get(), level, others))
                return failure(err, level.name);
            m_dir = std::move(dir);
            m_levels.push_back(std::move(level));
            for (const auto& other : others) {
                if (int err = m_visit(m_dir.get(), other.c_str(), false))
                    return failure(err, other);
            }
            return {};
        }

        // Visits the finished current directory from its parent, which becomes current.
        Status leave(int top_parent_fd)
        {
            Level done = std::move(m_levels.back());
            m_levels.pop_back();
            if (!m_levels.empty())
                BH_TRY(climb());
            int parent_fd = m_levels.empty() ? top_parent_fd : m_dir.get();
            if (int err = m_visit(parent_fd, done.name.c_str(), true))
                return failure(err, done.name);
            return {};
        }

        // Makes the parent of the current directory current, failing if it is no longer
        // the directory we came from (the tree was moved under us).
        Status climb()
        {
            Fd up(openat(m_dir.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            struct stat st;
            if (!up || fstat(up.get(), &st) != 0)
                return failure(errno, "..");
            const Level& parent = m_levels.back();
            if (st.st_dev != parent.dev || st.st_ino != parent.ino)
                return Error { -ESTALE,
                    "cannot " + std::string(m_verb) + " " + quoted(m_top)
                        + ": a directory in it was moved during the walk" };
            m_dir = std::move(up);
            return {};
        }

        Error failure(int err, std::string_view name) const
        {
            std::string path = m_top;
            for (size_t i = 1; i < m_levels.size(); ++i)
                path += "/" + m_levels[i].name;
            if (!m_levels.empty())
                path += "/" + std::string(name);
            return Error::from_errno(err, "cannot " + std::string(m_verb) + " " + quoted(path));
        }

        std::string m_top;
        const char* m_verb;
        Visit m_visit;
        Fd m_dir;
        std::vector<Level> m_levels;
    };

    // Opens directory `parent`, for the *at() calls on a path's last component.
    Result<Fd> open_parent(const std::string& parent)
    {
        Fd dir(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir)
            return Error::from_errno(errno, "cannot open " + quoted(parent));
        return dir;
    }

    Status chown_tree(const std::string& root, uid_t uid, gid_t gid)
    {
        auto [parent, base] = split_parent(root);
        auto dir = open_parent(parent);
        if (!dir)
            return dir.take_error();
        auto lchown = [uid, gid](int parent_fd, const char* name, bool) {
            return fchownat(parent_fd, name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
        };
        return TreeWalk(root, "change the owner of", lchown).run(dir->get(), base);
    }

    // A TreeWalk visitor; something already gone counts as removed.
    int remove_entry(int parent_fd, const char* name, bool is_dir)
    {
        if (unlinkat(parent_fd, name, is_dir ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
            return 0;
        return errno;
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

    // Only directories, regular files, symlinks and FIFOs belong in a rootfs; device nodes
    // would give the VM raw access to host hardware.
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
        case AE_IFCHR:
            return bad_entry(name, "is a character device node, which a rootfs tar may not contain");
        case AE_IFBLK:
            return bad_entry(name, "is a block device node, which a rootfs tar may not contain");
        default:
            return bad_entry(name, "has an unsupported file type (socket or unknown)");
        }
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
        archive_entry_copy_pathname(entry, placed->c_str());
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

    // The sender's stream, read so that waiting for it can be cancelled. A pipe or FIFO gets an
    // open file description of its own (reopened through /proc), made non-blocking without
    // touching the sender's; a socket is read with MSG_DONTWAIT; anything else (a regular file)
    // is read as it is.
    class CancellableSource {
    public:
        CancellableSource(int fd, int cancel_fd)
            : m_fd(fd)
            , m_cancel_fd(cancel_fd)
        {
            struct stat st;
            if (cancel_fd < 0 || fstat(fd, &st) != 0)
                return;
            if (S_ISFIFO(st.st_mode)) {
                std::string self = "/proc/self/fd/" + std::to_string(fd);
                m_reopened = Fd(open(self.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
                if (m_reopened)
                    m_fd = m_reopened.get();
                m_waits = static_cast<bool>(m_reopened);
            } else if (S_ISSOCK(st.st_mode)) {
                m_socket = m_waits = true;
            }
        }

        static la_ssize_t read(archive* a, void* self, const void** buffer)
        {
            auto* source = static_cast<CancellableSource*>(self);
            *buffer = source->m_buffer;
            for (;;) {
                ssize_t n = source->m_socket
                    ? recv(source->m_fd, source->m_buffer, sizeof source->m_buffer, MSG_DONTWAIT)
                    : ::read(source->m_fd, source->m_buffer, sizeof source->m_buffer);
                if (n >= 0)
                    return n;
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN || !source->m_waits) {
                    archive_set_error(a, errno, "%s", strerror(errno));
                    return -1;
                }
                pollfd fds[2] = { { source->m_fd, POLLIN, 0 }, { source->m_cancel_fd, POLLIN, 0 } };
                if (poll(fds, 2, -1) < 0 && errno != EINTR) {
                    archive_set_error(a, errno, "%s", strerror(errno));
                    return -1;
                }
                if (fds[1].revents) {
                    archive_set_error(a, ECANCELED, "the registration was cancelled");
                    return -1;
                }
            }
        }

        bool cancelled() const
        {
            pollfd p { m_cancel_fd, POLLIN, 0 };
            return m_cancel_fd >= 0 && poll(&p, 1, 0) > 0;
        }

    private:
        int m_fd;
        int m_cancel_fd;
        Fd m_reopened;
        bool m_socket = false;
        bool m_waits = false; // EAGAIN means: wait in poll(), with the cancel fd
        char m_buffer[64 * 1024];
    };

    // Only the tar family is parsed: other formats are more parser surface for hostile
    // input, and a rootfs must come as a tar.
    Result<ReadArchive> open_tar_reader(CancellableSource& source)
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
        if (archive_read_open(in.get(), &source, nullptr, &CancellableSource::read, nullptr) == ARCHIVE_OK)
            return in;
        if (archive_errno(in.get()) == ECANCELED)
            return archive_failure(in.get(), "cannot read the tar stream");
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
            if (statvfs(root.c_str(), &fs) != 0)
                return Error::from_errno(errno, "cannot read the free space of " + quoted(root));
            uint64_t free = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
            if (free < limits.keep_free_bytes || size > free - limits.keep_free_bytes)
                return Error { -ENOSPC,
                    "the state filesystem would keep less than "
                        + std::to_string(limits.keep_free_bytes >> 20) + " MiB free" };
        }
        return {};
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
            BH_TRY(within_limits(limits, used, size, root));
            BH_TRY(check_entry(entry, name, root));
            if (archive_entry_pathname(entry) == root)
                root_times = entry_times(entry);
            BH_TRY(write_entry(in, out, entry, name));
            used.entries += 1;
            used.bytes += size;
        }
    }

    Status extract(int tar_fd, const std::string& root, const ImportOwner& owner, const ImportLimits& limits,
        ImportUsage& used)
    {
        CancellableSource source(tar_fd, limits.cancel_fd);
        auto in = open_tar_reader(source);
        if (!in)
            return in.take_error();
        WriteArchive out = open_disk_writer(!owner.remap);
        if (!out)
            return Error { -ENOMEM, "cannot allocate a disk writer" };
        std::optional<std::array<timespec, 2>> root_times;
        Status extracted = extract_entries(in->get(), out.get(), root, limits, used, root_times);
        if (!extracted && source.cancelled())
            return Error { -ECANCELED, "the registration was cancelled (its client went away)" };
        BH_TRY(std::move(extracted));
        // Closing applies the deferred directory modes and times.
        if (archive_write_close(out.get()) != ARCHIVE_OK)
            return archive_failure(out.get(), "cannot set directory modes and times");
        if (root_times && utimensat(AT_FDCWD, root.c_str(), root_times->data(), AT_SYMLINK_NOFOLLOW) != 0)
            return Error::from_errno(errno, "cannot set the times of " + quoted(root));
        if (owner.remap)
            BH_TRY(chown_tree(root, owner.uid, owner.gid));
        return {};
    }

    // Creates the target directory and returns its path with the parent canonicalized:
    // libarchive's symlink check inspects every component of the paths it is given, so a
    // symlink in the service's own prefix (say /var/run) must be resolved first.
    Result<std::string> create_target(const std::string& target_dir)
    {
        auto [parent, base] = split_parent(target_dir);
        if (!is_plain_name(base))
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

    // ---- os-release ----

    // Opens `path` as if `root_dirfd` were "/": symlinks, absolute ones included, and '..'
    // cannot leave the root. O_NONBLOCK keeps a FIFO planted there from blocking the open.
    Fd open_in_root(int root_dirfd, const char* path)
    {
        struct open_how how { };
        how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        return Fd(static_cast<int>(syscall(SYS_openat2, root_dirfd, path, &how, sizeof how)));
    }

    // Reads up to `cap` bytes of a regular file (a device or FIFO could block or never
    // end). When the cap cuts the file, the cut last line is dropped.
    std::optional<std::string> read_capped(int fd, size_t cap)
    {
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
            return std::nullopt;
        std::string data(cap, '\0');
        size_t used = 0;
        while (used < cap) {
            ssize_t n = read(fd, data.data() + used, cap - used);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return std::nullopt;
            if (n == 0)
                break;
            used += static_cast<size_t>(n);
        }
        data.resize(used == cap ? data.rfind('\n') + 1 : used);
        return data;
    }

    // Appends the body of a "..." string starting at s[i]; there a backslash escapes only
    // $ ` " and \, as in the shell. Returns false if the quote is not closed.
    bool take_double_quoted(std::string_view s, size_t& i, std::string& out)
    {
        while (i < s.size()) {
            char c = s[i++];
            if (c == '"')
                return true;
            if (c == '\\' && i < s.size() && std::string_view("$`\"\\").find(s[i]) != std::string_view::npos)
                c = s[i++];
            out += c;
        }
        return false;
    }

    // Unquotes a shell word as os-release(5) allows: "...", '...', backslash escapes and
    // concatenations of them. Unquoted whitespace ends the word (a comment may follow).
    std::optional<std::string> shell_unquote(std::string_view s)
    {
        std::string out;
        size_t i = 0;
        while (i < s.size() && s[i] != ' ' && s[i] != '\t') {
            char c = s[i++];
            if (c == '"') {
                if (!take_double_quoted(s, i, out))
                    return std::nullopt;
            } else if (c == '\'') {
                size_t end = s.find('\'', i);
                if (end == std::string_view::npos)
                    return std::nullopt;
                out += s.substr(i, end - i);
                i = end + 1;
            } else if (c == '\\' && i < s.size()) {
                out += s[i++];
            } else {
                out += c;
            }
        }
        return out;
    }

    // Applies one "KEY=value" line; as in the shell, a later assignment wins.
    void parse_os_release_line(std::string_view line, OsRelease& result)
    {
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
            line.remove_prefix(1);
        size_t eq = line.find('=');
        if (line.empty() || line.front() == '#' || eq == std::string_view::npos)
            return;
        std::string_view key = line.substr(0, eq);
        std::optional<std::string>* field = nullptr;
        if (key == "ID")
            field = &result.id;
        else if (key == "VERSION_ID")
            field = &result.version_id;
        if (!field)
            return;
        auto value = shell_unquote(line.substr(eq + 1));
        if (value)
            *field = value->empty() ? std::nullopt : std::move(value);
    }

} // namespace

Status import_rootfs_tar(int tar_fd, const std::string& target_dir, const ImportOwner& owner,
    const ImportLimits& limits, ImportUsage* usage)
{
    auto root = create_target(target_dir);
    if (!root)
        return Error { root.error().code, import_failed + root.error().message };
    ImportUsage used;
    Status status = extract(tar_fd, *root, owner, limits, used);
    if (status.ok()) {
        if (usage)
            *usage = used;
        return status;
    }
    Error error = status.take_error();
    error.message = import_failed + error.message;
    // The extraction error is what the caller needs; a failed cleanup is added to it.
    if (Status removed = remove_tree(*root); !removed.ok())
        error.message += " (and removing the partial tree failed: " + removed.error().message + ")";
    return error;
}

OsRelease read_os_release(int root_dirfd)
{
    // os-release(5): etc/os-release wins; usr/lib/os-release is the vendor fallback.
    Fd file = open_in_root(root_dirfd, "etc/os-release");
    if (!file)
        file = open_in_root(root_dirfd, "usr/lib/os-release");
    OsRelease result;
    auto data = file ? read_capped(file.get(), max_os_release_bytes) : std::nullopt;
    if (!data)
        return result;
    std::string_view rest = *data;
    while (!rest.empty()) {
        size_t newline = rest.find('\n');
        parse_os_release_line(rest.substr(0, newline), result);
        rest = newline == std::string_view::npos ? "" : rest.substr(newline + 1);
    }
    return result;
}

Status remove_tree(const std::string& path)
{
    auto [parent, base] = split_parent(path);
    if (!is_plain_name(base))
        return Error { -EINVAL, "refusing to remove " + quoted(path) + ": not a removable path" };
    Fd dir(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat st;
    if (dir && fstatat(dir.get(), base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode))
            return TreeWalk(path, "remove", remove_entry).run(dir.get(), base);
        if (unlinkat(dir.get(), base.c_str(), 0) == 0)
            return {};
    }
    if (errno == ENOENT)
        return {};
    return Error::from_errno(errno, "cannot remove " + quoted(path));
}

} // namespace bh
