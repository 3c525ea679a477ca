// Cgroup file-system helpers: where the hierarchies are, our place in them, writing, killing, removing.
#include "service/cgroup-fs.h"

#include "base/fd.h"
#include "base/log.h"

#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace bh::service {

namespace {

    struct Mount {
        std::string root; // the part of the hierarchy it shows, usually "/"
        std::string point;
    };

    // The first mount in `mountinfo` (/proc/self/mountinfo) of file-system type `type` whose
    // super options include `option` (empty: any).
    Mount find_mount(const std::string& mountinfo, const std::string& type, const std::string& option)
    {
        std::istringstream in(mountinfo);
        std::string line;
        while (std::getline(in, line)) {
            auto dash = line.find(" - ");
            if (dash == std::string::npos)
                continue;
            std::istringstream tail(line.substr(dash + 3)), head(line.substr(0, dash));
            std::string fs_type, source, options, id, parent, devices;
            Mount mount;
            tail >> fs_type >> source >> options;
            head >> id >> parent >> devices >> mount.root >> mount.point;
            if (fs_type == type
                && (option.empty() || ("," + options + ",").find("," + option + ",") != std::string::npos))
                return mount;
        }
        return {};
    }

    // The path in the hierarchy whose controller list in `proc_cgroup` (/proc/PID/cgroup)
    // includes `controller` ("" for the cgroup2 line, "0::").
    std::string path_in_hierarchy(const std::string& proc_cgroup, const std::string& controller)
    {
        std::istringstream in(proc_cgroup);
        std::string line;
        while (std::getline(in, line)) {
            auto first = line.find(':'), second = line.find(':', first + 1);
            if (first == std::string::npos || second == std::string::npos)
                continue;
            std::string list = "," + line.substr(first + 1, second - first - 1) + ",";
            if (controller.empty() ? list == ",," : list.find("," + controller + ",") != std::string::npos)
                return line.substr(second + 1);
        }
        return "";
    }

    std::string join(const Mount& mount, const std::string& path)
    {
        if (mount.point.empty())
            return "";
        std::string relative = path.rfind(mount.root, 0) == 0 ? path.substr(mount.root.size()) : path;
        if (!relative.empty() && relative.front() != '/')
            relative = "/" + relative;
        return mount.point + (relative == "/" ? "" : relative);
    }

    std::string read_file(const std::string& path)
    {
        std::ifstream in(path);
        std::stringstream text;
        text << in.rdbuf();
        return text.str();
    }

    std::string dir_of(const std::string& pid, const std::string& controller)
    {
        return cgroup_dir_in(
            read_file("/proc/self/mountinfo"), read_file("/proc/" + pid + "/cgroup"), controller);
    }

    // SIGKILLs what is in `dir`. On v1 there is no cgroup.kill: each listed pid gets SIGKILL (a
    // pid could be reused between reading and killing, but what we kill here is normally the
    // leftovers of a PID namespace already ended, so the list is empty).
    void kill_all(const std::string& dir)
    {
        if (write_cgroup_file(dir, "cgroup.kill", "1"))
            return;
        std::istringstream procs(read_cgroup_file(dir, "cgroup.procs"));
        pid_t pid;
        while (procs >> pid)
            if (pid > 0)
                ::kill(pid, SIGKILL);
    }

    // The cgroups right below `dir`.
    std::vector<std::string> child_dirs(const std::string& dir)
    {
        std::vector<std::string> children;
        if (DIR* listing = opendir(dir.c_str())) {
            while (dirent* entry = readdir(listing)) {
                std::string name = entry->d_name;
                if (entry->d_type == DT_DIR && name != "." && name != "..")
                    children.push_back(dir + "/" + name);
            }
            closedir(listing);
        }
        return children;
    }

    // Gives `dir` and the cgroups below it back to root, top-down: a delegate (whose own host
    // processes may write there too, not only the VM's root) can then make no cgroup below it
    // while it is being removed. The depth bound keeps the recursion finite.
    void take_back(const std::string& dir, int depth = 0)
    {
        struct stat st;
        if (depth >= 8 || ::lstat(dir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
            return;
        if (st.st_uid != 0) {
            (void)::chown(dir.c_str(), 0, static_cast<gid_t>(-1));
            for (const char* name : delegated_cgroup_files)
                (void)::chown((dir + "/" + name).c_str(), 0, static_cast<gid_t>(-1));
        }
        for (const std::string& child : child_dirs(dir))
            take_back(child, depth + 1);
    }

    // Removes the cgroups below `dir` (a delegated VM cgroup has some), deepest first, then
    // `dir`; fails as rmdir does where one is still busy. A delegate may nest only two deep
    // (VmCgroups::delegate); the depth bound keeps the recursion finite whatever is found.
    int remove_tree(const std::string& dir, int depth = 0)
    {
        if (depth < 8)
            for (const std::string& child : child_dirs(dir))
                (void)remove_tree(child, depth + 1);
        return rmdir(dir.c_str());
    }

} // namespace

std::string cgroup_dir_in(
    const std::string& mountinfo, const std::string& proc_cgroup, const std::string& controller)
{
    std::string path = path_in_hierarchy(proc_cgroup, controller);
    Mount mount = find_mount(mountinfo, controller.empty() ? "cgroup2" : "cgroup", controller);
    return path.empty() ? "" : join(mount, path);
}

std::string without_service_leaf(std::string dir)
{
    std::string leaf = std::string("/") + service_leaf_name;
    if (dir.size() > leaf.size() && dir.ends_with(leaf))
        dir.resize(dir.size() - leaf.size());
    return dir;
}

std::string cgroup2_base()
{
    return without_service_leaf(dir_of("self", ""));
}

std::string cgroup1_own_dir(const std::string& controller)
{
    return dir_of("self", controller);
}

std::string cgroup2_dir_of(pid_t pid)
{
    return dir_of(std::to_string(pid), "");
}

std::string enable_v2_controllers(const std::string& base, const std::string& controllers)
{
    std::istringstream words(controllers);
    std::string controller, problems;
    while (words >> controller) {
        Status enabled = write_cgroup_file(base, "cgroup.subtree_control", "+" + controller);
        if (!enabled && enabled.error().code == -EBUSY) {
            // We (or others) live in `base`: move the service into a leaf of its own and retry.
            std::string leaf = base + "/" + service_leaf_name;
            if ((mkdir(leaf.c_str(), 0755) == 0 || errno == EEXIST)
                && write_cgroup_file(leaf, "cgroup.procs", std::to_string(getpid())))
                enabled = write_cgroup_file(base, "cgroup.subtree_control", "+" + controller);
        }
        if (!enabled)
            problems += (problems.empty() ? "" : "; ") + enabled.error().message;
    }
    return problems;
}

Status write_cgroup_file(const std::string& dir, const std::string& name, const std::string& text)
{
    std::string path = dir + "/" + name;
    Fd file(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!file || ::write(file.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        return Error::from_errno(errno, "cannot write '" + text + "' to " + path);
    return {};
}

std::string read_cgroup_file(const std::string& dir, const std::string& name)
{
    return read_file(dir + "/" + name);
}

Status kill_and_remove_cgroup(const std::string& dir)
{
    take_back(dir);
    // Killing is asynchronous: the processes leave the cgroup a moment later (bounded wait).
    for (int attempt = 0; attempt < 100; ++attempt) {
        kill_all(dir); // cgroup.kill reaches the cgroups below too
        if (remove_tree(dir) == 0 || errno == ENOENT)
            return {};
        if (errno != EBUSY)
            break;
        usleep(10 * 1000);
    }
    return Error::from_errno(errno, "cannot remove the cgroup " + dir);
}

void remove_stale_cgroups(const std::string& parent, const std::string& prefix)
{
    DIR* dir = parent.empty() ? nullptr : opendir(parent.c_str());
    if (!dir)
        return;
    while (dirent* entry = readdir(dir)) {
        std::string name = entry->d_name;
        if (name.rfind(prefix, 0) != 0)
            continue;
        pid_t owner = atoi(name.c_str() + prefix.size());
        // A live service's stay. A dead one's are killed and removed, waiting (bounded) for what
        // is still leaving them: a VM's processes die with its PID namespace when the service is
        // killed, but a moment later (its network helper, say, seen still in a v1 memory cgroup).
        if (owner > 0 && ::kill(owner, 0) < 0 && errno == ESRCH) {
            if (Status removed = kill_and_remove_cgroup(parent + "/" + name); !removed)
                log_warning(removed.error().message);
        }
    }
    closedir(dir);
}

} // namespace bh::service
