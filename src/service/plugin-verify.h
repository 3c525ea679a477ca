// Verifying a plugin's file in the service, so that the bytes checked are the bytes loaded.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <string>
#include <vector>

namespace bh::service {

// What a plugin's configuration requires of its file; empty fields check nothing.
struct Integrity {
    std::string sha256; // 64 hex digits, either case
    std::string signature; // 64 raw bytes of a detached Ed25519 signature over the whole file
    std::vector<std::string> trusted_keys; // PEM public keys the signature may verify against
};

// Opens `path` (O_NOFOLLOW: a symlink is refused), checks that the file is a regular file owned by
// root and not writable by group or others, copies it into a memfd, seals the memfd against any
// change, verifies `integrity` on the very bytes it copied, and returns the memfd: what a host
// (or an in-process runtime) then loads with host::dlopen_memfd. Replacing the file at any moment
// cannot get other bytes loaded. Failed checks are BH_E_PLUGIN_UNTRUSTED, with the check named.
// Blocks on reading and hashing the file (a plugin is at most 512 MiB; typically well under 1 ms).
Result<Fd> open_verified(const std::string& path, const Integrity& integrity);

} // namespace bh::service
