// VmCgroups: choosing v2 or v1 for each limit, making, joining and removing a VM's cgroups.
#include "service/vm-cgroup.h"

#include "base/log.h"
#include "service/cgroup-fs.h"

#include <fcntl.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace bh::service {

namespace {

    constexpr const char* prefix = "bulkhead-vm-";

    // The default memory cap: half the host's RAM, so that one VM cannot take all of it.
    uint64_t half_of_ram()
    {
        long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
        return pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * page_size / 2 : 0;
    }

    bool lists(const std::string& words, const std::string& word)
    {
        std::istringstream in(words);
        std::string each;
        while (in >> each)
            if (each == word)
                return true;
        return false;
    }

    const char* limit_file(const std::string& controller, bool v2)
    {
        if (controller == "pids")
            return "pids.max";
        return v2 ? "memory.max" : "memory.limit_in_bytes";
    }

    bool writable(const std::string& dir)
    {
        return access(dir.c_str(), W_OK) == 0;
    }

    Status make_directory(const std::string& path)
    {
        if (mkdir(path.c_str(), 0755) < 0)
            return Error::from_errno(errno, "cannot create the VM cgroup " + path);
        return {};
    }

} // namespace

VmCgroup& VmCgroup::operator=(VmCgroup&& other) noexcept
{
    if (this != &other) {
        remove();
        m_v2 = std::exchange(other.m_v2, {});
        m_v2_fd = std::move(other.m_v2_fd);
        m_v1 = std::exchange(other.m_v1, {});
    }
    return *this;
}

Status VmCgroup::adopt(pid_t pid) const
{
    std::string text = std::to_string(pid);
    for (const auto& dir : m_v1)
        BH_TRY(write_cgroup_file(dir, "cgroup.procs", text));
    // Kernels before 5.7 cannot clone into a cgroup (spawn_process then clones outside it).
    if (!m_v2.empty() && cgroup2_dir_of(pid) != m_v2)
        BH_TRY(write_cgroup_file(m_v2, "cgroup.procs", text));
    return {};
}

void VmCgroup::remove()
{
    // The v2 directory first: cgroup.kill there reaches every process of the VM at once.
    std::vector<std::string> dirs = m_v1;
    if (!m_v2.empty())
        dirs.insert(dirs.begin(), m_v2);
    for (const auto& dir : dirs)
        if (Status removed = kill_and_remove_cgroup(dir); !removed)
            log_warning(removed.error().message + "; the next start of the service will");
    m_v2.clear();
    m_v2_fd.reset();
    m_v1.clear();
}

VmCgroups::VmCgroups(const VmLimits& limits)
    : m_v2_base(cgroup2_base())
    , m_controllers { { "pids", limits.pids_max }, { "memory", limits.memory_max.value_or(half_of_ram()) } }
{
    // A read-only cgroup file system (a container's, say) is as good as none: VMs start without.
    if (!m_v2_base.empty() && !writable(m_v2_base)) {
        log_warning("VMs get no cgroup2 directory: " + m_v2_base + " is not writable");
        m_v2_base.clear();
    }
    m_view.pids_max = m_controllers[0].limit;
    m_view.memory_max = m_controllers[1].limit;
    m_view.pids = place(m_controllers[0]);
    m_view.memory = place(m_controllers[1]);
    remove_stale_cgroups(m_v2_base, prefix);
    for (const auto& controller : m_controllers)
        remove_stale_cgroups(cgroup1_own_dir(controller.name), prefix);
}

// Decides where `controller`'s limit goes and says so; logs (once, here) a limit that cannot be
// enforced.
std::string VmCgroups::place(Controller& controller)
{
    std::string name = controller.name;
    if (controller.limit == 0)
        return "not limited";
    std::string why
        = "the " + name + " controller is neither available in the cgroup2 hierarchy nor a cgroup v1 one";
    if (!m_v2_base.empty() && lists(read_cgroup_file(m_v2_base, "cgroup.controllers"), name)) {
        std::string problem = enable_v2_controllers(m_v2_base, name);
        controller.v2 = problem.empty();
        if (controller.v2)
            return "cgroup v2";
        why = problem;
    }
    std::string v1 = cgroup1_own_dir(name);
    if (!v1.empty() && writable(v1)) {
        controller.v1_parent = v1;
        return "cgroup v1";
    }
    if (!v1.empty())
        why = v1 + " is not writable";
    log_warning("VMs run without a " + name + " limit: " + why);
    return "unavailable: " + why;
}

Status VmCgroups::apply(const Controller& controller, const std::string& dir, bool v2) const
{
    return write_cgroup_file(dir, limit_file(controller.name, v2), std::to_string(controller.limit));
}

Result<VmCgroup> VmCgroups::create(uint32_t session_id)
{
    std::string name = prefix + std::to_string(getpid()) + "-" + std::to_string(session_id) + "-"
        + std::to_string(++m_serial);
    VmCgroup cgroup; // removes what was made if a step below fails
    if (!m_v2_base.empty()) {
        BH_TRY(make_directory(m_v2_base + "/" + name));
        cgroup.m_v2 = m_v2_base + "/" + name;
        cgroup.m_v2_fd = Fd(::open(cgroup.m_v2.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!cgroup.m_v2_fd)
            return Error::from_errno(errno, "cannot open " + cgroup.m_v2);
    }
    for (const auto& controller : m_controllers) {
        if (controller.v2) {
            BH_TRY(apply(controller, cgroup.m_v2, true));
        } else if (!controller.v1_parent.empty()) {
            std::string dir = controller.v1_parent + "/" + name;
            BH_TRY(make_directory(dir));
            cgroup.m_v1.push_back(dir);
            BH_TRY(apply(controller, dir, false));
        }
    }
    return cgroup;
}

} // namespace bh::service
