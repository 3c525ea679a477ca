// Registry: the registered distributions of every user, persisted in <state-dir>/registry.json.
#pragma once

#include "base/result.h"
#include "base/uuid.h"

#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace bh::service {

struct DistroRecord {
    std::string name;
    Uuid uuid;
    uid_t owner = 0;
    std::string package;
    std::string flavor;
    std::string version;
    uint64_t bytes = 0; // file content imported (declared sizes); 0 for a record older than this
    uint64_t inodes = 0; // entries imported
    uint64_t seq = 0; // registration order, kept across restarts (set by Registry::add)
    // register --in-place: the folder adopted as the root filesystem (absolute, root's); empty for
    // a tree the service imported below its directory.
    std::string in_place;
};

// Owned by the service's event-loop thread. Every change is written to disk atomically
// (temporary file, fsync, rename, fsync of the folder) before it is visible, so a crash never
// loses a registration nor leaves a half-written file. A change writes only what it changes, so
// its cost does not grow with the number of registrations: each registration is
// <state-dir>/distributions/<uuid>/record.json, beside its rootfs, and each user's default is
// <state-dir>/defaults/<uid>. A registry.json of an older service is converted at load.
class Registry {
public:
    static Result<Registry> load(const std::string& state_dir);

    const DistroRecord* find(uid_t owner, const std::string& name) const;
    const DistroRecord* find(uid_t owner, const Uuid& uuid) const;
    std::vector<const DistroRecord*> of_user(uid_t owner) const;
    std::vector<const DistroRecord*> all() const;
    // The explicit default of `owner`, else their first registration; nullptr when none.
    const DistroRecord* default_of(uid_t owner) const;

    Status add(DistroRecord record);
    Status remove(uid_t owner, const std::string& name);
    Status set_default(uid_t owner, const std::string& name);

    // <state-dir>/distributions/<uuid>: everything of one registration lives below it.
    std::string directory_of(const Uuid& uuid) const;
    std::string rootfs_of(const DistroRecord& record) const
    {
        return record.in_place.empty() ? directory_of(record.uuid) + "/rootfs" : record.in_place;
    }
    std::string distributions_dir() const { return m_state_dir + "/distributions"; }

private:
    explicit Registry(std::string state_dir)
        : m_state_dir(std::move(state_dir))
    {
    }
    Status write_record(const DistroRecord& record) const;
    Status write_default(uid_t owner, const std::string& name) const;
    Status convert_registry_json(const std::string& path);
    std::string defaults_dir() const { return m_state_dir + "/defaults"; }

    std::string m_state_dir;
    std::vector<DistroRecord> m_records; // in registration order
    std::map<uid_t, std::string> m_defaults;
    uint64_t m_next_seq = 1;
};

// Names are 1 to 64 of [A-Za-z0-9._-], not starting with '.' or '-'.
bool is_valid_distro_name(const std::string& name);

} // namespace bh::service
