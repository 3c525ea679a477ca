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
};

// Owned by the service's event-loop thread. Every change is written to disk atomically
// (temporary file, fsync, rename) before it is visible, so a crash never loses a registration
// nor leaves a half-written file.
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
    std::string rootfs_of(const DistroRecord& record) const { return directory_of(record.uuid) + "/rootfs"; }
    std::string distributions_dir() const { return m_state_dir + "/distributions"; }

private:
    explicit Registry(std::string state_dir)
        : m_state_dir(std::move(state_dir))
    {
    }
    Status save(const std::vector<DistroRecord>& records, const std::map<uid_t, std::string>& defaults) const;

    std::string m_state_dir;
    std::vector<DistroRecord> m_records; // in registration order
    std::map<uid_t, std::string> m_defaults;
};

// Names are 1 to 64 of [A-Za-z0-9._-], not starting with '.' or '-'.
bool is_valid_distro_name(const std::string& name);

} // namespace bh::service
