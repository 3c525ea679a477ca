// Loading a plugin so that the bytes checked are the bytes loaded.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <string>
#include <vector>

namespace bh::host {

// What a plugin's configuration requires of its file; empty fields check nothing.
struct Integrity {
    std::string sha256; // 64 hex digits, either case
    std::string signature; // 64 raw bytes of a detached Ed25519 signature over the whole file
    std::vector<std::string> trusted_keys; // PEM public keys the signature may verify against
};

// Opens `path` (O_NOFOLLOW: a symlink is refused), checks that the file is a regular file owned by
// root and not writable by group or others, copies it into a memfd while hashing it, seals the
// memfd against any change, verifies `integrity` on the very bytes it copied, and returns the
// memfd to be loaded. Replacing the file at any moment cannot get other bytes loaded.
// Failed checks are BH_E_PLUGIN_UNTRUSTED, with the check named.
Result<Fd> open_verified(const std::string& path, const Integrity& integrity);

// dlopen(RTLD_NOW | RTLD_LOCAL) of a sealed memfd from open_verified, through /proc/self/fd/N;
// once loaded, the object carries `path` as its name (what dladdr reports). $ORIGIN in the
// plugin's RUNPATH resolves to /proc/self/fd: use absolute RUNPATHs. Returns the handle, or the
// dlerror text.
Result<void*> dlopen_memfd(const Fd& memfd, const std::string& path);

} // namespace bh::host
