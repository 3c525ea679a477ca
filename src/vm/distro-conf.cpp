// /etc/bulkhead.conf of a distribution, parsed with toml++.
#include "vm/distro-conf.h"

#include "base/fd.h"

#include <cerrno>
#include <fcntl.h>
#include <sstream>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

namespace bh::vm {

namespace {

    constexpr size_t max_conf_bytes = 64u << 10;

    Error conf_error(const std::string& origin, const std::string& why)
    {
        return Error { -EINVAL, "invalid " + origin + ": " + why };
    }

    // [name] with its one key `key`, a string, into `out`; any other key, or another type, is an
    // error.
    Status read_table(const toml::table& table, const std::string& name, const char* key, std::string& out,
        const std::string& origin)
    {
        for (const auto& [other, value] : table) {
            if (other.str() != key)
                return conf_error(origin, "unknown key '" + name + "." + std::string(other.str()) + "'");
        }
        const toml::node* node = table.get(key);
        if (!node)
            return {};
        auto text = node->value_exact<std::string>();
        if (!text || text->find('\0') != std::string::npos)
            return conf_error(origin, "'" + name + "." + key + "' must be a string");
        out = *text;
        return {};
    }

} // namespace

Result<DistroConf> parse_distro_conf(const std::string& text, const std::string& origin)
{
    toml::table root;
    try {
        root = toml::parse(text, origin);
    } catch (const toml::parse_error& e) {
        std::ostringstream where;
        where << e.source().begin;
        return conf_error(origin, std::string(e.description()) + " at " + where.str());
    }
    DistroConf conf;
    for (const auto& [key, value] : root) {
        std::string name(key.str());
        if (name != "user" && name != "boot")
            return conf_error(origin, "unknown table '" + name + "'");
        const toml::table* table = value.as_table();
        if (!table)
            return conf_error(origin, "'" + name + "' must be a table");
        BH_TRY(name == "user" ? read_table(*table, name, "default", conf.default_user, origin)
                              : read_table(*table, name, "command", conf.boot_command, origin));
    }
    if (conf.default_user.size() > 256)
        return conf_error(origin, "'user.default' is longer than 256 characters");
    return conf;
}

Result<DistroConf> read_distro_conf(const char* path)
{
    Fd file(::open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!file) {
        if (errno == ENOENT)
            return DistroConf {};
        return Error::from_errno(errno, std::string("cannot open ") + path);
    }
    struct stat st;
    if (::fstat(file.get(), &st) < 0 || !S_ISREG(st.st_mode)
        || static_cast<size_t>(st.st_size) > max_conf_bytes)
        return Error { -EINVAL, std::string(path) + " is not a regular file of at most 64 KiB" };
    std::string text(static_cast<size_t>(st.st_size), '\0');
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::read(file.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return Error::from_errno(errno, std::string("cannot read ") + path);
        if (n == 0)
            break;
        done += static_cast<size_t>(n);
    }
    text.resize(done);
    return parse_distro_conf(text, path);
}

} // namespace bh::vm
