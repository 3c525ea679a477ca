// subordinate_ids_of: reading /etc/subuid and /etc/subgid.
#include "service/subordinate-ids.h"

#include <charconv>
#include <fstream>
#include <string_view>

namespace bh::service {

namespace {

    struct Range {
        uint32_t start = 0;
        uint32_t count = 0;
    };

    bool parse_number(std::string_view text, uint32_t& value)
    {
        auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
        return err == std::errc() && end == text.data() + text.size() && !text.empty();
    }

    // The first "owner:start:count" line whose owner is `name` or `uid` (subgid(5) too names users);
    // malformed lines are skipped, as shadow-utils skips them.
    Result<std::optional<Range>> find_range(
        const std::string& path, const std::string& name, uint32_t uid, uint32_t own_id, const char* kind)
    {
        std::ifstream file(path);
        if (!file)
            return std::optional<Range>();
        std::string line;
        for (int number = 1; std::getline(file, line); ++number) {
            size_t first = line.find(':'), second = line.find(':', first + 1);
            if (first == std::string::npos || second == std::string::npos)
                continue;
            std::string_view owner = std::string_view(line).substr(0, first);
            uint32_t owner_id = 0;
            if (owner != name && !(parse_number(owner, owner_id) && owner_id == uid))
                continue;
            Range range;
            if (!parse_number(std::string_view(line).substr(first + 1, second - first - 1), range.start)
                || !parse_number(std::string_view(line).substr(second + 1), range.count) || range.count == 0)
                continue;
            uint64_t end = uint64_t { range.start } + range.count; // one past the last id
            if (range.start == 0 || end > UINT32_MAX || (own_id >= range.start && own_id < end))
                return Error { -EINVAL,
                    path + " line " + std::to_string(number) + ": the " + kind + " range of '" + name
                        + "' holds "
                        + (range.start == 0                             ? "0"
                                : own_id >= range.start && own_id < end ? "their own id"
                                                                        : "ids past the last")
                        + "; the service does not map it" };
            return std::optional<Range>(range);
        }
        return std::optional<Range>();
    }

} // namespace

Result<std::optional<SubordinateIds>> subordinate_ids_of(const std::string& user_name, uid_t uid, gid_t gid,
    const std::string& subuid_path, const std::string& subgid_path)
{
    auto uids = find_range(subuid_path, user_name, uid, uid, "uid");
    if (!uids)
        return uids.take_error();
    auto gids = find_range(subgid_path, user_name, uid, gid, "gid");
    if (!gids)
        return gids.take_error();
    if (!*uids || !*gids)
        return std::optional<SubordinateIds>();
    return std::optional<SubordinateIds>(
        SubordinateIds { (*uids)->start, (*uids)->count, (*gids)->start, (*gids)->count });
}

} // namespace bh::service
