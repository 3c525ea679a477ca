// HostCgroup: find the cgroup2 hierarchy, make a child cgroup per host, kill and remove it.
#include "service/host-cgroup.h"

#include "base/log.h"

#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr const char* prefix = "bulkhead-plugin-";

    // Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
    // systems), from /proc/self/mountinfo.
    std::string cgroup2_mount()
    {
        std::ifstream in("/proc/self/mountinfo");
        std::string line;
        while (std::getline(in, line)) {
            auto dash = line.find(" - ");
            if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0)
                continue;
            std::istringstream fields(line.substr(0, dash));
            std::string id, parent, devices, root, mount_point;
            fields >> id >> parent >> devices >> root >> mount_point;
            return mount_point;
        }
        return "";
    }

    // The service's own cgroup2 directory: the "0::" line of /proc/self/cgroup.
    std::string own_cgroup_dir()
    {
        std::string mount = cgroup2_mount();
        if (mount.empty())
            return "";
        std::ifstream in("/proc/self/cgroup");
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind("0::", 0) == 0)
                return mount + (line.size() > 3 && line[3] == '/' && line.size() > 4 ? line.substr(3) : "");
        }
        return mount;
    }

    bool write_at(int dir, const char* name, const char* text)
    {
        Fd fd(openat(dir, name, O_WRONLY | O_CLOEXEC));
        return fd && write(fd.get(), text, strlen(text)) == static_cast<ssize_t>(strlen(text));
    }

} // namespace

Result<HostCgroup> HostCgroup::create(const std::string& label)
{
    std::string base = own_cgroup_dir();
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
    kill();
    // cgroup.kill is asynchronous: give the killed processes a moment to leave (bounded).
    for (int i = 0; i < 100 && populated(); ++i)
        usleep(10 * 1000);
    if (Status removed = remove(); !removed)
        log_warning("cannot remove " + m_path + " yet; the next start of the service will");
}

void HostCgroup::kill() const
{
    if (m_dir)
        write_at(m_dir.get(), "cgroup.kill", "1");
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
    std::string base = own_cgroup_dir();
    DIR* dir = base.empty() ? nullptr : opendir(base.c_str());
    if (!dir)
        return;
    while (dirent* entry = readdir(dir)) {
        std::string name = entry->d_name;
        if (name.rfind(prefix, 0) != 0)
            continue;
        pid_t owner = atoi(name.c_str() + strlen(prefix));
        if (owner > 0 && ::kill(owner, 0) < 0 && errno == ESRCH)
            (void)rmdir((base + "/" + name).c_str()); // only empty ones go
    }
    closedir(dir);
}

} // namespace bh::service
