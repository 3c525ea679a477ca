// A distribution's own settings: /etc/bulkhead.conf in its root, as /etc/wsl.conf is WSL's.
#pragma once

#include "base/result.h"

#include <string>

namespace bh::vm {

struct DistroConf {
    std::string default_user; // [user] default: whom `run` without -u runs as ("": root)
    std::string boot_command; // [boot] command: run by `sh -c`, as root, when the distribution starts
};

// Parses the file's text; `origin` names it in errors. An unknown table or key, or a value of
// another type, is an error: a typo never silently does nothing.
Result<DistroConf> parse_distro_conf(const std::string& text, const std::string& origin);

// Reads `path` of the calling process's root. Its agent reads a distribution's from inside it,
// pivoted into its root, so no link leads out of that root. No file: the defaults. A file that
// is not a regular one of at most 64 KiB, or does not parse: an error.
Result<DistroConf> read_distro_conf(const char* path = "/etc/bulkhead.conf");

} // namespace bh::vm
