// Root filesystem trees: walking them without following symlinks, removing and measuring them,
// reading their os-release. No archive parsing: the service links this, bulkhead-unpack the rest.
#include "unpack/rootfs-tree.h"

#include "base/fd.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <linux/openat2.h>
#include <memory>
#include <set>
#include <string_view>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace bh {

std::string quote_untrusted(std::string_view name)
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

namespace {

    constexpr size_t max_os_release_bytes = 64 * 1024;

    std::string quoted(std::string_view name)
    {
        return quote_untrusted(name);
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

    // A TreeWalk visitor; something already gone counts as removed.
    int remove_entry(int parent_fd, const char* name, bool is_dir)
    {
        if (unlinkat(parent_fd, name, is_dir ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
            return 0;
        return errno;
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

Result<TreeUsage> measure_tree(const std::string& path)
{
    auto [parent, base] = split_parent(path);
    auto dir = open_parent(parent);
    if (!dir)
        return dir.take_error();
    TreeUsage usage;
    // A file with several links is counted once, as the import counted it (a hardlink entry
    // declares no content).
    std::set<std::pair<dev_t, ino_t>> linked;
    auto count = [&usage, &linked](int parent_fd, const char* name, bool is_dir) {
        usage.entries += 1;
        struct stat st;
        if (is_dir)
            return 0;
        if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return errno;
        if (S_ISREG(st.st_mode) && (st.st_nlink == 1 || linked.insert({ st.st_dev, st.st_ino }).second))
            usage.bytes += static_cast<uint64_t>(st.st_size);
        return 0;
    };
    BH_TRY(TreeWalk(path, "measure", count).run(dir->get(), base));
    usage.entries -= 1; // the top directory itself
    return usage;
}

} // namespace bh
