// Plugin trust checks on the service side.
#include "service/plugin-trust.h"

#include <algorithm>
#include <bulkhead/plugin_api.h>
#include <climits>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace bh::service {

namespace {

    Error untrusted(const std::string& why)
    {
        return Error { BH_E_PLUGIN_UNTRUSTED, why };
    }

    std::string describe(const struct stat& st)
    {
        char mode[8];
        snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
        return "owner " + std::to_string(st.st_uid) + ", mode " + mode;
    }

    Status check_one(const std::string& path, const struct stat& st)
    {
        if (st.st_uid != 0)
            return untrusted(path + " is not owned by root (" + describe(st) + ")");
        bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir)
            return untrusted(path + " is writable by group or others (" + describe(st) + ")");
        return {};
    }

    Result<std::string> read_small_file(const std::string& path, size_t limit)
    {
        std::ifstream in(path, std::ios::binary);
        if (!in)
            return Error::from_errno(errno, "cannot read " + path);
        std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (data.size() > limit)
            return untrusted(path + " is larger than " + std::to_string(limit) + " bytes");
        return data;
    }

    // Every *.pem in <config-dir>/trusted-keys, itself held to the same ownership rules.
    Result<std::vector<std::string>> trusted_keys(const std::string& config_dir)
    {
        std::string dir = config_dir + "/trusted-keys";
        std::vector<std::string> keys;
        DIR* stream = opendir(dir.c_str());
        if (!stream)
            return keys;
        std::vector<std::string> files;
        while (dirent* entry = readdir(stream)) {
            std::string name = entry->d_name;
            if (name.size() > 4 && name.ends_with(".pem"))
                files.push_back(dir + "/" + name);
        }
        closedir(stream);
        std::sort(files.begin(), files.end());
        for (const auto& file : files) {
            BH_TRY(check_secure_path(file));
            auto key = read_small_file(file, 16384);
            if (!key)
                return key.take_error();
            keys.push_back(std::move(key.value()));
        }
        return keys;
    }

} // namespace

Status check_secure_path(const std::string& path)
{
    struct stat st { };
    if (lstat(path.c_str(), &st) < 0)
        return Error::from_errno(errno, "cannot check " + path);
    if (S_ISLNK(st.st_mode))
        return untrusted(path + " is a symbolic link; configure the path of the file itself");
    BH_TRY(check_one(path, st));
    std::string parent = path.substr(0, path.find_last_of('/'));
    char resolved[PATH_MAX];
    if (!realpath(parent.empty() ? "/" : parent.c_str(), resolved))
        return Error::from_errno(errno, "cannot resolve " + parent);
    std::string dir = resolved;
    for (;;) {
        if (stat(dir.c_str(), &st) < 0)
            return Error::from_errno(errno, "cannot check " + dir);
        BH_TRY(check_one(dir, st));
        if (dir == "/")
            return {};
        auto slash = dir.find_last_of('/');
        dir = slash == 0 ? "/" : dir.substr(0, slash);
    }
}

Result<Integrity> check_plugin_trust(
    const PluginConfig& config, const std::string& config_dir, bool require_verified)
{
    BH_TRY(check_secure_path(config.file));
    BH_TRY(check_secure_path(config.path));
    if (require_verified && config.sha256.empty() && config.signature.empty())
        return untrusted("plugin '" + config.name
            + "' is neither pinned nor signed (set sha256 or signature), which bulkhead.toml requires");
    Integrity integrity { config.sha256 };
    if (!config.signature.empty()) {
        BH_TRY(check_secure_path(config.signature));
        auto signature = read_small_file(config.signature, 1024);
        if (!signature)
            return signature.take_error();
        integrity.signature = std::move(signature.value());
        auto keys = trusted_keys(config_dir);
        if (!keys)
            return keys.take_error();
        if (keys->empty())
            return untrusted("plugin '" + config.name + "' is signed, but " + config_dir
                + "/trusted-keys holds no key to check the signature with");
        integrity.trusted_keys = std::move(keys.value());
    }
    return integrity;
}

} // namespace bh::service
