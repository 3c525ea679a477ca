// HostCgroup: find the cgroup2 hierarchy, make a child cgroup per host, kill and remove it.
#include "service/host-cgroup.h"

#include "base/log.h"
#include "service/cgroup-fs.h"

#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr const char* prefix = "bulkhead-plugin-";

} // namespace

Result<HostCgroup> HostCgroup::create(const std::string& label)
{
    std::string base = cgroup2_base();
    if (base.empty())
        return Error { -ENOTSUP, "no cgroup2 hierarchy is mounted; plugins cannot be contained without one" };
    static unsigned counter = 0;
    std::string safe = label.substr(0, 64);
    for (char& c : safe)
        c = isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_';
    HostCgroup cgroup;
    cgroup.m_path
        = base + "/" + prefix + std::to_string(getpid()) + "-" + std::to_string(++counter) + "-" + safe;
    if (mkdir(cgroup.m_path.c_str(), 0700) < 0)
        return Error::from_errno(errno, "cannot create the plugin cgroup " + cgroup.m_path);
    cgroup.m_dir = Fd(open(cgroup.m_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup.m_dir)
        return Error::from_errno(errno, "cannot open " + cgroup.m_path);
    return cgroup;
}

HostCgroup::~HostCgroup()
{
    if (!m_dir)
        return;
    if (Status removed = kill_and_remove_cgroup(m_path); !removed)
        log_warning(removed.error().message + "; the next start of the service will");
}

void HostCgroup::kill() const
{
    if (m_dir)
        (void)write_cgroup_file(m_path, "cgroup.kill", "1");
}

Status HostCgroup::limit_processes(uint64_t count) const
{
    Fd file(openat(m_dir.get(), "pids.max", O_WRONLY | O_CLOEXEC));
    if (!file && errno == ENOENT)
        return Error { -ENOTSUP,
            "max_processes needs the cgroup2 pids controller, which is not enabled for " + m_path
                + " (on a hybrid cgroup v1/v2 system it belongs to v1)" };
    std::string text = std::to_string(count);
    if (!file || write(file.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        return Error::from_errno(errno, "cannot write " + m_path + "/pids.max");
    return {};
}

bool HostCgroup::populated() const
{
    std::ifstream in("/proc/self/fd/" + std::to_string(m_dir.get()) + "/cgroup.events");
    std::string key;
    int value = 0;
    while (in >> key >> value)
        if (key == "populated")
            return value != 0;
    return false;
}

Status HostCgroup::remove()
{
    if (m_path.empty())
        return {};
    if (rmdir(m_path.c_str()) < 0 && errno != ENOENT)
        return Error::from_errno(errno, "cannot remove " + m_path);
    m_path.clear();
    m_dir.reset();
    return {};
}

void remove_stale_host_cgroups()
{
    remove_stale_cgroups(cgroup2_base(), prefix);
}

} // namespace bh::service
