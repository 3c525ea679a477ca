// A user's subordinate id ranges, from /etc/subuid and /etc/subgid (subuid(5), subgid(5)): what
// useradd allocates and rootless container tools map.
#pragma once

#include "base/result.h"
#include "base/spawn.h"

#include <optional>
#include <string>
#include <sys/types.h>

namespace bh::service {

// The first range of `user_name` (or of `uid` written as a number, which subuid(5) allows too) in
// each file. nullopt when either file has none, or cannot be read: the user then keeps a VM that
// maps only root. A range that holds uid or gid 0, or the user's own id, or that ends past the
// id space, is an admin's mistake the service will not map: an Error says which line.
Result<std::optional<SubordinateIds>> subordinate_ids_of(const std::string& user_name, uid_t uid, gid_t gid,
    const std::string& subuid_path = "/etc/subuid", const std::string& subgid_path = "/etc/subgid");

} // namespace bh::service
