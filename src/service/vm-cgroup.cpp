// VmCgroups: choosing v2 or v1 for each limit, making, joining and removing a VM's cgroups.
#include "service/vm-cgroup.h"

#include "base/log.h"
#include "service/cgroup-fs.h"

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace bh::service {

namespace {

    constexpr const char* prefix = "bulkhead-vm-";
    // The smallest v1 memory limit whose VM's processes are born in it (VmCgroup::spawn).
    constexpr uint64_t min_memory_born_in = 16ULL << 20;

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
        m_v1_born_in = std::exchange(other.m_v1_born_in, {});
    }
    return *this;
}

Result<ChildProcess> VmCgroup::spawn(SpawnPlan plan) const
{
    plan.cgroup_fd = clone_fd();
    size_t entered = 0; // the first `entered` of m_v1_born_in; the rest by pid, below
    while (entered < m_v1_born_in.size() && write_cgroup_file(m_v1_born_in[entered], "tasks", "0"))
        ++entered;
    auto child = spawn_process(plan);
    for (size_t i = 0; i < entered; ++i) {
        std::string own = m_v1_born_in[i].substr(0, m_v1_born_in[i].rfind('/'));
        Status back = write_cgroup_file(own, "tasks", "0");
        if (!back) {
            // Left in the VM's cgroup, this thread would be killed with it: stop here instead.
            log_error("cannot move the service's thread back into " + own + ": " + back.error().message);
            std::abort();
        }
    }
    if (!child)
        return child.take_error();
    std::string text = std::to_string(child->pid());
    // By pid: what is not to be entered, and what could not be.
    for (const std::string& dir : m_v1) {
        if (std::find(m_v1_born_in.begin(), m_v1_born_in.end(), dir) == m_v1_born_in.end())
            BH_TRY(write_cgroup_file(dir, "cgroup.procs", text));
    }
    for (size_t i = entered; i < m_v1_born_in.size(); ++i)
        BH_TRY(write_cgroup_file(m_v1_born_in[i], "cgroup.procs", text));
    // Kernels before 5.7 cannot clone into a cgroup (spawn_process then clones outside it).
    if (!m_v2.empty() && cgroup2_dir_of(child->pid()) != m_v2)
        BH_TRY(write_cgroup_file(m_v2, "cgroup.procs", text));
    return child;
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
    for (const char* name : { "pids", "memory", "cpu" })
        remove_stale_cgroups(cgroup1_own_dir(name), prefix);
}

Status VmCgroups::check(const VmCgroupRequest& request)
{
    Controller& memory = m_controllers[1];
    if (request.memory_max > 0) {
        if (std::string problem = locate(memory); !problem.empty())
            return Error { -EOPNOTSUPP, "cannot limit the VM's memory: " + problem };
        if (memory.limit > 0 && request.memory_max > memory.limit)
            return Error { -EINVAL,
                "cannot give the VM " + std::to_string(request.memory_max >> 20)
                    + " MB of memory: every VM is " + "limited to " + std::to_string(memory.limit >> 20)
                    + " MB ([limits] vm_memory_max)" };
    }
    if (request.cpu_millis > 0)
        if (std::string problem = locate(m_cpu); !problem.empty())
            return Error { -EOPNOTSUPP, "cannot limit the VM's CPUs: " + problem };
    return {};
}

// cpu.max (v2) or cpu.cfs_quota_us (v1): `cpu_millis` thousandths of a CPU every 100 ms.
Status VmCgroups::apply_cpu(VmCgroup& cgroup, const std::string& name, uint32_t cpu_millis)
{
    constexpr uint64_t period_us = 100000;
    uint64_t quota_us = std::max<uint64_t>(1000, period_us * cpu_millis / 1000);
    if (m_cpu.v2)
        return write_cgroup_file(
            cgroup.m_v2, "cpu.max", std::to_string(quota_us) + " " + std::to_string(period_us));
    std::string dir = m_cpu.v1_parent + "/" + name;
    BH_TRY(make_directory(dir));
    cgroup.m_v1.push_back(dir);
    BH_TRY(write_cgroup_file(dir, "cpu.cfs_period_us", std::to_string(period_us)));
    return write_cgroup_file(dir, "cpu.cfs_quota_us", std::to_string(quota_us));
}

// Decides where the admin's limit of `controller` goes and says so; logs (once, here) a limit that
// cannot be enforced.
std::string VmCgroups::place(Controller& controller)
{
    if (controller.limit == 0)
        return "not limited";
    std::string problem = locate(controller);
    if (problem.empty())
        return controller.v2 ? "cgroup v2" : "cgroup v1";
    log_warning("VMs run without a " + std::string(controller.name) + " limit: " + problem);
    return "unavailable: " + problem;
}

std::string VmCgroups::locate(Controller& controller)
{
    if (controller.problem)
        return *controller.problem;
    std::string name = controller.name;
    std::string why
        = "the " + name + " controller is neither available in the cgroup2 hierarchy nor a cgroup v1 one";
    if (!m_v2_base.empty() && lists(read_cgroup_file(m_v2_base, "cgroup.controllers"), name)) {
        std::string problem = enable_v2_controllers(m_v2_base, name);
        controller.v2 = problem.empty();
        if (controller.v2)
            return *(controller.problem = "");
        why = problem;
    }
    std::string v1 = cgroup1_own_dir(name);
    if (!v1.empty() && writable(v1)) {
        controller.v1_parent = v1;
        return *(controller.problem = "");
    }
    if (!v1.empty())
        why = v1 + " is not writable";
    return *(controller.problem = why);
}

Status VmCgroups::apply(const Controller& controller, uint64_t limit, const std::string& dir, bool v2) const
{
    return write_cgroup_file(dir, limit_file(controller.name, v2), std::to_string(limit));
}

Status VmCgroups::delegate(VmCgroup& cgroup, uid_t uid)
{
    // Bounds first, in files that stay root's: then the directory and the three files a delegate
    // writes (cgroup v2's "Delegation Containment") become the VM root's.
    BH_TRY(write_cgroup_file(cgroup.m_v2, "cgroup.max.descendants", std::to_string(max_delegated_cgroups)));
    BH_TRY(write_cgroup_file(cgroup.m_v2, "cgroup.max.depth", "2"));
    auto give = [&](const char* name) -> Status {
        if (::fchownat(cgroup.m_v2_fd.get(), name, uid, static_cast<gid_t>(-1), AT_SYMLINK_NOFOLLOW) < 0)
            return Error::from_errno(
                errno, "cannot delegate " + cgroup.m_v2 + "/" + name + " to uid " + std::to_string(uid));
        return {};
    };
    BH_TRY(give("."));
    for (const char* name : delegated_cgroup_files)
        BH_TRY(give(name));
    return {};
}

Result<VmCgroup> VmCgroups::create(uint32_t session_id, const VmCgroupRequest& request)
{
    BH_TRY(check(request));
    std::string name = prefix + std::to_string(getpid()) + "-" + std::to_string(session_id) + "-"
        + std::to_string(++m_serial);
    VmCgroup cgroup; // removes what was made if a step below fails
    if (!m_v2_base.empty()) {
        BH_TRY(make_directory(m_v2_base + "/" + name));
        cgroup.m_v2 = m_v2_base + "/" + name;
        cgroup.m_v2_fd = Fd(::open(cgroup.m_v2.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!cgroup.m_v2_fd)
            return Error::from_errno(errno, "cannot open " + cgroup.m_v2);
        if (request.delegate_to)
            BH_TRY(delegate(cgroup, *request.delegate_to));
    }
    for (const Controller& controller : m_controllers) {
        uint64_t limit = controller.limit;
        if (controller.name == std::string("memory") && request.memory_max > 0)
            limit = request.memory_max;
        if (limit == 0) // not limited (a controller located only for another VM's request)
            continue;
        if (controller.v2) {
            BH_TRY(apply(controller, limit, cgroup.m_v2, true));
        } else if (!controller.v1_parent.empty()) {
            std::string dir = controller.v1_parent + "/" + name;
            BH_TRY(make_directory(dir));
            cgroup.m_v1.push_back(dir);
            BH_TRY(apply(controller, limit, dir, false));
            if (controller.name == std::string("pids") || limit >= min_memory_born_in)
                cgroup.m_v1_born_in.push_back(dir);
        }
    }
    if (request.cpu_millis > 0)
        BH_TRY(apply_cpu(cgroup, name, request.cpu_millis));
    return cgroup;
}

} // namespace bh::service
