// Building VM and distribution roots with the new mount API (open_tree, mount_setattr, move_mount).
#include "vm/mounts.h"

#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bh::vm {

namespace {

    constexpr const char* device_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };

    Status fail(const std::string& what)
    {
        return Error::from_errno(errno, what);
    }

    Status make_dir(const std::string& path, mode_t mode)
    {
        if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST)
            return fail("cannot create directory " + path);
        return {};
    }

    // Creates every missing directory of an absolute path.
    Status make_dirs(const std::string& path)
    {
        for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1))
            BH_TRY(make_dir(path.substr(0, slash), 0755));
        return make_dir(path, 0755);
    }

    Status set_read_only(int tree)
    {
        mount_attr attr {};
        attr.attr_set = MOUNT_ATTR_RDONLY;
        if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
            return fail("cannot make a mount read-only");
        return {};
    }

    // Clones the host tree at `source` and attaches it at `target`, read-only when asked.
    Status bind(const std::string& source, const std::string& target, bool read_only)
    {
        Fd tree(open_tree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
        if (!tree)
            return fail("cannot clone the mount at " + source);
        if (read_only)
            BH_TRY(set_read_only(tree.get()));
        if (move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return fail("cannot attach " + source + " at " + target);
        return {};
    }

    // Mirrors one top-level host entry (/usr, /bin, ...): a symlink stays a symlink (merged /usr),
    // a directory is bound read-only; a missing one is skipped.
    Status mirror_host_entry(const std::string& root, const std::string& name)
    {
        std::string host = "/" + name;
        struct stat st;
        if (::lstat(host.c_str(), &st) < 0)
            return {};
        if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = ::readlink(host.c_str(), target, sizeof(target) - 1);
            if (n < 0 || ::symlink(std::string(target, n).c_str(), (root + host).c_str()) < 0)
                return fail("cannot mirror the symlink " + host);
            return {};
        }
        if (!S_ISDIR(st.st_mode))
            return {};
        BH_TRY(make_dir(root + host, 0755));
        return bind(host, root + host, true);
    }

    Status mount_fs(const char* type, const std::string& target, unsigned long flags, const char* data)
    {
        if (::mount(type, target.c_str(), type, flags, data) < 0)
            return fail(std::string("cannot mount ") + type + " at " + target);
        return {};
    }

    // A tmpfs /dev with the few device nodes programs expect, bound from the current /dev
    // (creating nodes would need CAP_MKNOD, which a user namespace does not give).
    Status build_dev(const std::string& root)
    {
        std::string dev = root + "/dev";
        BH_TRY(make_dir(dev, 0755));
        BH_TRY(mount_fs("tmpfs", dev, MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"));
        for (const char* node : device_nodes) {
            std::string target = dev + "/" + node;
            Fd placeholder(::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666));
            if (!placeholder)
                return fail("cannot create " + target);
            if (::mount(("/dev/" + std::string(node)).c_str(), target.c_str(), nullptr, MS_BIND, nullptr) < 0)
                return fail("cannot bind /dev/" + std::string(node));
        }
        // Its own devpts instance: the terminals of `run -t` are this namespace's, numbered from 0,
        // invisible to the host's and other VMs' (no gid=: the tty group may not be mapped here).
        // Best effort: where devpts cannot be mounted in a user namespace (a nested container, an
        // LSM), the VM still starts, and `run -t` says it cannot open a pseudo-terminal.
        BH_TRY(make_dir(dev + "/pts", 0755));
        (void)mount_fs("devpts", dev + "/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
        const std::pair<const char*, const char*> links[]
            = { { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" }, { "/proc/self/fd/1", "stdout" },
                  { "/proc/self/fd/2", "stderr" }, { "pts/ptmx", "ptmx" } };
        for (auto [target, name] : links) {
            if (::symlink(target, (dev + "/" + name).c_str()) < 0)
                return fail("cannot create " + dev + "/" + name);
        }
        return {};
    }

    // Makes `root` the root of this mount namespace; the old root is detached, invisible from then on.
    Status pivot_into(const std::string& root)
    {
        if (::chdir(root.c_str()) < 0)
            return fail("cannot enter " + root);
        if (syscall(SYS_pivot_root, ".", ".") < 0)
            return fail("cannot pivot_root into " + root);
        if (::umount2(".", MNT_DETACH) < 0)
            return fail("cannot detach the old root");
        if (::chdir("/") < 0)
            return fail("cannot enter the new root");
        return {};
    }

    // The directory to build a new root on: any existing directory works, since the tmpfs mounted
    // over it exists only in this (private) mount namespace.
    std::string staging_dir()
    {
        for (const char* dir : { "/mnt", "/tmp", "/run", "/media" }) {
            struct stat st;
            if (::lstat(dir, &st) == 0 && S_ISDIR(st.st_mode))
                return dir;
        }
        return "/";
    }

    Status bring_up_loopback()
    {
        Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        ifreq request {};
        std::snprintf(request.ifr_name, IFNAMSIZ, "lo");
        if (!sock || ::ioctl(sock.get(), SIOCGIFFLAGS, &request) < 0)
            return fail("cannot read the loopback interface");
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (::ioctl(sock.get(), SIOCSIFFLAGS, &request) < 0)
            return fail("cannot bring up the loopback interface");
        return {};
    }

    Status make_private()
    {
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
            return fail("cannot make the mount namespace private");
        return {};
    }

    // Nothing made in the VM reaches the namespace it was cloned from; what the service mounts
    // in its staging mount still reaches the VM.
    Status make_slave()
    {
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) < 0)
            return fail("cannot make the mount namespace a slave of the service's");
        return {};
    }

    // A clone of the staging mount at `target`: a clone of a slave is a slave of the same
    // master, so it keeps receiving what the service mounts there after the old root is gone.
    Status keep_staging(const std::string& staging, const std::string& target)
    {
        BH_TRY(make_dirs(target));
        Fd tree(open_tree(AT_FDCWD, staging.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
        if (!tree)
            return fail("cannot clone the staging mount " + staging);
        if (move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return fail("cannot attach the staging mount at " + target);
        return {};
    }

} // namespace

Status build_vm_root(const VmRootConfig& config)
{
    BH_TRY(make_slave());
    std::string root = staging_dir();
    BH_TRY(mount_fs("tmpfs", root, MS_NOSUID | MS_NODEV, "mode=0755,size=16m"));
    for (const char* name : { "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32" })
        BH_TRY(mirror_host_entry(root, name));
    BH_TRY(make_dir(root + "/proc", 0555));
    BH_TRY(mount_fs("proc", root + "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
    BH_TRY(build_dev(root));
    // The VM's own cgroup as its cgroup2 tree (its cgroup namespace's root): container runtimes
    // look there to learn the cgroup layout. Mounted writable, and writable where the service
    // delegated the VM's cgroup to the VM's root (a container session's, VmCgroupRequest): other
    // VMs' cgroup files belong to a uid their user namespace does not map, so their root cannot
    // write them. Best effort: a host without cgroup2, or a VM not in a cgroup2 directory of its
    // own, runs without it.
    BH_TRY(make_dir(root + "/sys", 0555));
    BH_TRY(make_dir(root + "/sys/fs", 0555));
    BH_TRY(make_dir(root + "/sys/fs/cgroup", 0555));
    (void)mount_fs("cgroup2", root + "/sys/fs/cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    BH_TRY(make_dir(root + "/tmp", 01777));
    if (::chmod((root + "/tmp").c_str(), 01777) < 0)
        return fail("cannot set the mode of /tmp");
    if (!config.staging.empty())
        BH_TRY(keep_staging(config.staging, root + staged_mounts));
    BH_TRY(pivot_into(root));
    if (::sethostname(config.hostname.data(), config.hostname.size()) < 0)
        return fail("cannot set the hostname");
    return config.host_network ? Status {} : bring_up_loopback();
}

namespace {

    // Best effort: a distribution whose /etc cannot take the file starts without it.
    void provide_resolv_conf(const std::string& staging, const std::string& root, const std::string& dns)
    {
        std::string ours = staging + "/resolv.conf";
        std::string text
            = std::string("# Made by Bulkhead for this VM (vm.network = \"nat\"): pasta forwards DNS\n"
                          "# queries sent here to the host's resolver. Not stored in the distribution.\n")
            + "nameserver " + dns + "\n";
        Fd file(::open(ours.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!file || ::write(file.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
            return;
        Fd etc(::open((root + "/etc").c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!etc)
            return;
        // The distribution is its user's: a symlink planted here is not followed.
        Fd created(
            ::openat(etc.get(), "resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
        Fd target(::openat(etc.get(), "resolv.conf", O_PATH | O_NOFOLLOW | O_CLOEXEC));
        struct stat st { };
        if (!target || ::fstat(target.get(), &st) < 0 || !S_ISREG(st.st_mode))
            return;
        std::string at = "/proc/self/fd/" + std::to_string(target.get());
        (void)::mount(ours.c_str(), at.c_str(), nullptr, MS_BIND, nullptr);
    }

} // namespace

Status build_distribution_root(Fd root_tree, const std::string& nat_dns)
{
    BH_TRY(make_private());
    std::string staging = staging_dir();
    BH_TRY(mount_fs("tmpfs", staging, MS_NOSUID | MS_NODEV, "mode=0700,size=64k"));
    std::string root = staging + "/root";
    BH_TRY(make_dir(root, 0755));
    if (move_mount(root_tree.get(), "", AT_FDCWD, root.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail("cannot attach the distribution's root");
    BH_TRY(make_dir(root + "/proc", 0555));
    BH_TRY(mount_fs("proc", root + "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
    BH_TRY(build_dev(root));
    BH_TRY(make_dir(root + "/tmp", 01777));
    if (!nat_dns.empty())
        provide_resolv_conf(staging, root, nat_dns);
    return pivot_into(root);
}

Status attach_staged(const std::string& name, const std::string& vm_path, bool read_only)
{
    if (name.empty() || name.size() > 20 || name.find_first_not_of("0123456789") != std::string::npos)
        return Error { -EINVAL, "invalid staged mount name '" + name + "'" };
    std::string staged = std::string(staged_mounts) + "/" + name;
    BH_TRY(make_dirs(vm_path));
    // Read-only already, and locked so, when the service asked for it; set again for a VM that
    // shares the service's user namespace (root's), where nothing is locked.
    if (read_only) {
        Fd tree(::open(staged.c_str(), O_PATH | O_CLOEXEC | O_NOFOLLOW));
        if (!tree)
            return fail("cannot open the staged mount " + staged);
        BH_TRY(set_read_only(tree.get()));
    }
    if (::mount(staged.c_str(), vm_path.c_str(), nullptr, MS_MOVE, nullptr) < 0)
        return fail("cannot mount at " + vm_path);
    return {};
}

Status detach_mount(const std::string& vm_path)
{
    if (vm_path.empty() || vm_path.front() != '/')
        return Error { -EINVAL, "cannot unmount '" + vm_path + "': the path must be absolute" };
    if (::umount2(vm_path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
        return fail("cannot unmount " + vm_path);
    return {};
}

} // namespace bh::vm
