// What the service checks before a plugin is loaded (StrictModes-like ownership, the admin's
// policy), and what it hands open_verified to check (Integrity).
#pragma once

#include "config/config.h"
#include "service/plugin-verify.h"

namespace bh::service {

// `path` must not be a symlink, and it and every directory above it (resolved) must be owned by
// root and not writable by group or others; a root-owned sticky directory such as /tmp is
// accepted. Otherwise BH_E_PLUGIN_UNTRUSTED naming the path, its owner and its mode.
Status check_secure_path(const std::string& path);

// Ownership of the plugin, its signature and its configuration file; the admin's
// require_verified; the signature file and the trusted keys of <config-dir>/trusted-keys/*.pem.
Result<Integrity> check_plugin_trust(
    const PluginConfig& config, const std::string& config_dir, bool require_verified);

} // namespace bh::service
