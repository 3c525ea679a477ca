// Registry persistence with nlohmann-json.
#include "service/registry.h"

#include <algorithm>
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
            { "bytes", record.bytes }, { "inodes", record.inodes } };
    }

    Result<DistroRecord> from_json(const nlohmann::json& j)
    {
        auto uuid = Uuid::parse(j.at("uuid").get<std::string>());
        if (!uuid)
            return Error { -EINVAL, "registry entry with an invalid uuid" };
        return DistroRecord { j.at("name").get<std::string>(), *uuid, j.at("owner").get<uid_t>(),
            j.value("package", ""), j.value("flavor", ""), j.value("version", ""), j.value("bytes", uint64_t { 0 }),
            j.value("inodes", uint64_t { 0 }) };
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
        return {};
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
    std::string path = state_dir + "/registry.json";
    std::ifstream file(path);
    if (!file)
        return registry;
    try {
        auto j = nlohmann::json::parse(file);
        for (const auto& entry : j.at("distributions")) {
            auto record = from_json(entry);
            if (!record)
                return Error { -EINVAL, "cannot load " + path + ": " + record.error().message };
            registry.m_records.push_back(record.value());
        }
        for (const auto& [uid, name] : j.at("defaults").items())
            registry.m_defaults[static_cast<uid_t>(std::stoul(uid))] = name.get<std::string>();
    } catch (const std::exception& e) {
        return Error { -EINVAL, "cannot load " + path + ": " + e.what() };
    }
    return registry;
}

Status Registry::save(
    const std::vector<DistroRecord>& records, const std::map<uid_t, std::string>& defaults) const
{
    nlohmann::json j = { { "version", 1 }, { "distributions", nlohmann::json::array() },
        { "defaults", nlohmann::json::object() } };
    for (const auto& record : records)
        j["distributions"].push_back(to_json(record));
    for (const auto& [uid, name] : defaults)
        j["defaults"][std::to_string(uid)] = name;
    return write_atomically(m_state_dir + "/registry.json", j.dump(2) + "\n");
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
    auto records = m_records;
    records.push_back(std::move(record));
    BH_TRY(save(records, m_defaults));
    m_records = std::move(records);
    return {};
}

Status Registry::remove(uid_t owner, const std::string& name)
{
    auto records = m_records;
    std::erase_if(records, [&](const DistroRecord& r) { return r.owner == owner && r.name == name; });
    auto defaults = m_defaults;
    if (defaults.contains(owner) && defaults[owner] == name)
        defaults.erase(owner);
    BH_TRY(save(records, defaults));
    m_records = std::move(records);
    m_defaults = std::move(defaults);
    return {};
}

Status Registry::set_default(uid_t owner, const std::string& name)
{
    auto defaults = m_defaults;
    defaults[owner] = name;
    BH_TRY(save(m_records, defaults));
    m_defaults = std::move(defaults);
    return {};
}

std::string Registry::directory_of(const Uuid& uuid) const
{
    return distributions_dir() + "/" + uuid.to_string();
}

} // namespace bh::service
