// Loading a plugin from the sealed memfd the service verified (service/plugin-verify.h).
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <string>

namespace bh::host {

// Checks that `memfd` is a memfd sealed against writes, growth and shrinking: the service's
// checks hold only for bytes that can no longer change. An error otherwise.
Status require_sealed(const Fd& memfd, const std::string& path);

// dlopen(RTLD_NOW | RTLD_LOCAL) of a sealed memfd through /proc/self/fd/N; once loaded, the
// object carries `path` as its name (what dladdr reports). $ORIGIN in the plugin's RUNPATH
// resolves to /proc/self/fd: use absolute RUNPATHs. Returns the handle, or the dlerror text.
// A loaded plugin's memfd stays open for the life of the process (see keep() for why).
Result<void*> dlopen_memfd(Fd memfd, const std::string& path);

} // namespace bh::host
