// Registry persistence with nlohmann-json.
#include "service/registry.h"

#include <algorithm>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    nlohmann::json to_json(const DistroRecord& record)
    {
        return { { "name", record.name }, { "uuid", record.uuid.to_string() }, { "owner", record.owner },
            { "package", record.package }, { "flavor", record.flavor }, { "version", record.version },
            { "bytes", record.bytes }, { "inodes", record.inodes }, { "seq", record.seq },
            { "in_place", record.in_place } };
    }

    Result<DistroRecord> from_json(const nlohmann::json& j)
    {
        auto uuid = Uuid::parse(j.at("uuid").get<std::string>());
        if (!uuid)
            return Error { -EINVAL, "registry entry with an invalid uuid" };
        return DistroRecord { j.at("name").get<std::string>(), *uuid, j.at("owner").get<uid_t>(),
            j.value("package", ""), j.value("flavor", ""), j.value("version", ""),
            j.value("bytes", uint64_t { 0 }), j.value("inodes", uint64_t { 0 }),
            j.value("seq", uint64_t { 0 }), j.value("in_place", "") };
    }

    // Makes a rename or unlink in the folder of `path` durable.
    Status sync_folder_of(const std::string& path)
    {
        std::string folder = path.substr(0, path.rfind('/'));
        int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || ::fsync(fd) < 0) {
            Error error = Error::from_errno(errno, "cannot sync " + folder);
            if (fd >= 0)
                ::close(fd);
            return error;
        }
        ::close(fd);
        return {};
    }

    Status write_atomically(const std::string& path, const std::string& content)
    {
        std::string tmp = path + ".tmp";
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return Error::from_errno(errno, "cannot write " + tmp);
        bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size())
            && ::fsync(fd) == 0;
        int err = errno;
        ::close(fd);
        if (!ok || ::rename(tmp.c_str(), path.c_str()) < 0) {
            err = ok ? errno : err;
            ::unlink(tmp.c_str());
            return Error::from_errno(err, "cannot write " + path);
        }
        return sync_folder_of(path);
    }

    Status remove_file(const std::string& path)
    {
        if (::unlink(path.c_str()) < 0 && errno != ENOENT)
            return Error::from_errno(errno, "cannot remove " + path);
        return sync_folder_of(path);
    }

    Result<nlohmann::json> read_json(const std::string& path)
    {
        std::ifstream file(path);
        if (!file)
            return Error::from_errno(errno, "cannot read " + path);
        try {
            return nlohmann::json::parse(file);
        } catch (const std::exception& e) {
            return Error { -EINVAL, "cannot load " + path + ": " + e.what() };
        }
    }

    Status make_private_dir(const std::string& path)
    {
        if (::mkdir(path.c_str(), 0700) < 0 && errno != EEXIST)
            return Error::from_errno(errno, "cannot create " + path);
        return {};
    }

} // namespace

bool is_valid_distro_name(const std::string& name)
{
    if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-')
        return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
}

Result<Registry> Registry::load(const std::string& state_dir)
{
    Registry registry(state_dir);
    BH_TRY(make_private_dir(state_dir));
    BH_TRY(make_private_dir(registry.distributions_dir()));
    BH_TRY(make_private_dir(registry.defaults_dir()));
    // A folder without a record.json is an import that never finished: not a registration.
    if (DIR* dir = ::opendir(registry.distributions_dir().c_str())) {
        while (dirent* entry = ::readdir(dir)) {
            std::string path = registry.distributions_dir() + "/" + entry->d_name + "/record.json";
            if (entry->d_name[0] == '.' || ::access(path.c_str(), F_OK) < 0)
                continue;
            auto json = read_json(path);
            Result<DistroRecord> record = json ? from_json(*json) : Result<DistroRecord>(json.take_error());
            if (!record) {
                ::closedir(dir);
                return Error { -EINVAL, "cannot load " + path + ": " + record.error().message };
            }
            registry.m_records.push_back(record.value());
        }
        ::closedir(dir);
    }
    std::sort(registry.m_records.begin(), registry.m_records.end(),
        [](const DistroRecord& a, const DistroRecord& b) { return a.seq < b.seq; });
    for (const auto& record : registry.m_records)
        registry.m_next_seq = std::max(registry.m_next_seq, record.seq + 1);
    if (DIR* dir = ::opendir(registry.defaults_dir().c_str())) {
        while (dirent* entry = ::readdir(dir)) {
            std::string name = entry->d_name;
            if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
                continue;
            std::ifstream file(registry.defaults_dir() + "/" + name);
            std::string distro;
            if (std::getline(file, distro) && is_valid_distro_name(distro))
                registry.m_defaults[static_cast<uid_t>(std::stoul(name))] = distro;
        }
        ::closedir(dir);
    }
    std::string old = state_dir + "/registry.json";
    if (::access(old.c_str(), F_OK) == 0)
        BH_TRY(registry.convert_registry_json(old));
    return registry;
}

// An older service kept everything in one registry.json: each of its registrations still present
// on disk gets its record.json, each default its file, then registry.json goes.
Status Registry::convert_registry_json(const std::string& path)
{
    auto json = read_json(path);
    if (!json)
        return json.take_error();
    try {
        for (const auto& entry : json->at("distributions")) {
            auto record = from_json(entry);
            if (!record)
                return Error { -EINVAL, "cannot load " + path + ": " + record.error().message };
            if (find(record->owner, record->uuid) || ::access(directory_of(record->uuid).c_str(), F_OK) < 0)
                continue;
            record->seq = m_next_seq++;
            BH_TRY(write_record(record.value()));
            m_records.push_back(record.value());
        }
        for (const auto& [uid, name] : json->at("defaults").items()) {
            uid_t owner = static_cast<uid_t>(std::stoul(uid));
            BH_TRY(write_default(owner, name.get<std::string>()));
            m_defaults[owner] = name.get<std::string>();
        }
    } catch (const std::exception& e) {
        return Error { -EINVAL, "cannot load " + path + ": " + e.what() };
    }
    return remove_file(path);
}

Status Registry::write_record(const DistroRecord& record) const
{
    return write_atomically(directory_of(record.uuid) + "/record.json", to_json(record).dump(2) + "\n");
}

Status Registry::write_default(uid_t owner, const std::string& name) const
{
    return write_atomically(defaults_dir() + "/" + std::to_string(owner), name + "\n");
}

const DistroRecord* Registry::find(uid_t owner, const std::string& name) const
{
    for (const auto& record : m_records) {
        if (record.owner == owner && record.name == name)
            return &record;
    }
    return nullptr;
}

const DistroRecord* Registry::find(uid_t owner, const Uuid& uuid) const
{
    for (const auto& record : m_records) {
        if (record.owner == owner && record.uuid == uuid)
            return &record;
    }
    return nullptr;
}

std::vector<const DistroRecord*> Registry::of_user(uid_t owner) const
{
    std::vector<const DistroRecord*> out;
    for (const auto& record : m_records) {
        if (record.owner == owner)
            out.push_back(&record);
    }
    return out;
}

std::vector<const DistroRecord*> Registry::all() const
{
    std::vector<const DistroRecord*> out;
    for (const auto& record : m_records)
        out.push_back(&record);
    return out;
}

const DistroRecord* Registry::default_of(uid_t owner) const
{
    auto it = m_defaults.find(owner);
    if (it != m_defaults.end()) {
        if (const auto* record = find(owner, it->second))
            return record;
    }
    auto mine = of_user(owner);
    return mine.empty() ? nullptr : mine.front();
}

Status Registry::add(DistroRecord record)
{
    record.seq = m_next_seq;
    BH_TRY(write_record(record));
    ++m_next_seq;
    m_records.push_back(std::move(record));
    return {};
}

Status Registry::remove(uid_t owner, const std::string& name)
{
    const DistroRecord* record = find(owner, name);
    if (!record)
        return {};
    // The default first: a crash in between leaves a registration without its default, never a
    // default naming nothing.
    if (m_defaults.contains(owner) && m_defaults[owner] == name) {
        BH_TRY(remove_file(defaults_dir() + "/" + std::to_string(owner)));
        m_defaults.erase(owner);
    }
    BH_TRY(remove_file(directory_of(record->uuid) + "/record.json"));
    std::erase_if(m_records, [&](const DistroRecord& r) { return r.owner == owner && r.name == name; });
    return {};
}

Status Registry::set_default(uid_t owner, const std::string& name)
{
    BH_TRY(write_default(owner, name));
    m_defaults[owner] = name;
    return {};
}

std::string Registry::directory_of(const Uuid& uuid) const
{
    return distributions_dir() + "/" + uuid.to_string();
}

} // namespace bh::service
