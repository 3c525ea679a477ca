// bulkhead-unpack: extracts one untrusted distribution archive, confined, for bulkheadd.
//
//   bulkhead-unpack [--keep-owners=MAX_UID:MAX_GID] MAX_BYTES MAX_ENTRIES KEEP_FREE_BYTES
//   bulkhead-unpack --pack=none|gzip|xz|zstd      (export: fd 3 is the tree, the tar goes to fd 4)
//   bulkhead-unpack --pack-tree DIR               (the CLI's register --rootfs, as its user: tar on stdout)
//
// fd 0 is the archive (as the user sent it), fd 3 the empty target directory, fd 1 where the
// result goes: "ok <device nodes skipped>\n", or "error <negative errno>\n<message>". The service starts it
// in new PID, network, IPC and UTS namespaces and, for a user's archive, as root of a user namespace that
// maps that user (and their /etc/subuid range, if any: then owners are kept up to its end;
// service/unpack-process.h). Before reading a byte it chroots into the
// target and keeps only the capabilities extraction needs, none of which can undo the chroot:
// a parser bug gets the user's own ids, in an empty tree, and nothing else.
#include "unpack/rootfs-archive.h"
#include "unpack/rootfs-import.h"

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <linux/capability.h>
#include <string>
#include <string_view>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

constexpr int archive_fd = 0;
constexpr int result_fd = 1;
constexpr int target_fd = 3;
constexpr int pack_fd = 4;

void write_all(std::string_view text)
{
    while (!text.empty()) {
        ssize_t n = write(result_fd, text.data(), text.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        text.remove_prefix(static_cast<size_t>(n));
    }
}

[[noreturn]] void fail(int code, const std::string& message)
{
    write_all("error " + std::to_string(code) + "\n" + message);
    _exit(1);
}

[[noreturn]] void fail_errno(const std::string& what)
{
    fail(-errno, "cannot confine the unpacking process: " + what + ": " + std::strerror(errno));
}

bool parse(const char* text, uint64_t& value)
{
    std::string_view view = text;
    auto [end, err] = std::from_chars(view.data(), view.data() + view.size(), value);
    return err == std::errc() && end == view.data() + view.size();
}

// Keeps only `keep` (a mask of CAP_* bits) in every capability set, the bounding set included,
// so no later exec could regain the rest.
void keep_only_capabilities(uint64_t keep)
{
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
        if (!(keep & (uint64_t { 1 } << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            fail_errno("PR_CAPBSET_DROP");
    }
    __user_cap_header_struct header { _LINUX_CAPABILITY_VERSION_3, 0 };
    __user_cap_data_struct data[2] {};
    for (int i = 0; i < 2; ++i) {
        data[i].effective = data[i].permitted = static_cast<uint32_t>(keep >> (32 * i));
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &header, data) != 0)
        fail_errno("capset");
}

// Into the target, for good: the chroot cannot be left without CAP_SYS_CHROOT, which is dropped
// right after, and no fd outside it stays open (the service passes only the archive, the result
// pipe, /dev/null and the target).
void confine(uint64_t keep)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail_errno("PR_SET_NO_NEW_PRIVS");
    // Not dumpable: the user whose ids this process has may not ptrace it or open its /proc files.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail_errno("PR_SET_DUMPABLE");
    if (fchdir(target_fd) != 0 || chroot(".") != 0 || chdir("/") != 0)
        fail_errno("chroot into the target");
    close(target_fd);
    rlimit no_core { 0, 0 };
    rlimit few_files { 64, 64 };
    if (setrlimit(RLIMIT_CORE, &no_core) != 0 || setrlimit(RLIMIT_NOFILE, &few_files) != 0)
        fail_errno("setrlimit");
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    // A decompressor's window is the archive's choice (xz and zstd headers name up to GiBs): 1 GiB
    // of heap covers every real rootfs, and a bigger ask fails this import, not the host's memory.
    // (Sanitizers reserve terabytes of shadow memory, which this limit would refuse.)
    rlimit heap { 1ULL << 30, 1ULL << 30 };
    if (setrlimit(RLIMIT_DATA, &heap) != 0)
        fail_errno("setrlimit");
#endif
    keep_only_capabilities(keep);
}

constexpr uint64_t cap(int which)
{
    return uint64_t { 1 } << which;
}

// Packing (`bulkhead export`): the tree as a tar on fd 4. Reading any file of it takes
// DAC_OVERRIDE only (not DAC_READ_SEARCH, whose open_by_handle_at would lead out of a chroot).
[[noreturn]] void pack(const char* compression_name)
{
    auto compression = bh::parse_compression(compression_name);
    if (!compression)
        fail(-EINVAL, std::string("bulkhead-unpack: unknown compression '") + compression_name + "'");
    confine(cap(CAP_DAC_OVERRIDE));
    bh::Status status = bh::write_rootfs_tar("/", pack_fd, *compression);
    if (!status)
        fail(status.error().code, status.error().message);
    write_all("ok 0\n");
    _exit(0);
}

// Packing for the CLI (`bulkhead register --rootfs DIR`): DIR as an uncompressed tar on stdout,
// read with the rights of the user who ran the CLI (this process is theirs, not the service's);
// a failure is one line on stderr and its errno as the exit status. It lives here so that the CLI does not
// link libarchive, which with libxml2, ICU and five compression libraries was most of every CLI command's
// start-up.
[[noreturn]] void pack_tree(const char* dir)
{
    bh::Status status = bh::write_rootfs_tar(dir, STDOUT_FILENO);
    if (!status) {
        std::string line = status.error().message + "\n";
        (void)!write(STDERR_FILENO, line.data(), line.size());
        int code = -status.error().code; // the exit status is the errno, for the CLI's message
        _exit(code > 0 && code < 256 ? code : EIO);
    }
    _exit(0);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc == 2 && std::string_view(argv[1]).starts_with("--pack="))
        pack(argv[1] + std::string_view("--pack=").size());
    if (argc == 3 && std::string_view(argv[1]) == "--pack-tree")
        pack_tree(argv[2]);
    // --keep-owners=MAX_UID:MAX_GID restores the archive's owners up to those ids.
    int first = 1;
    bh::ImportLimits limits;
    constexpr std::string_view keep_prefix = "--keep-owners=";
    bool keep_owners = argc > 1 && std::string_view(argv[1]).starts_with(keep_prefix);
    if (keep_owners) {
        first = 2;
        std::string_view keep = argv[1] + keep_prefix.size();
        size_t colon = keep.find(':');
        uint64_t uid = 0, gid = 0;
        if (colon == std::string_view::npos || !parse(std::string(keep.substr(0, colon)).c_str(), uid)
            || !parse(std::string(keep.substr(colon + 1)).c_str(), gid) || uid > UINT32_MAX
            || gid > UINT32_MAX)
            fail(-EINVAL, "bulkhead-unpack: --keep-owners needs MAX_UID:MAX_GID");
        limits.max_owner_uid = static_cast<uint32_t>(uid);
        limits.max_owner_gid = static_cast<uint32_t>(gid);
    }
    if (argc - first != 3 || !parse(argv[first], limits.max_bytes)
        || !parse(argv[first + 1], limits.max_entries) || !parse(argv[first + 2], limits.keep_free_bytes))
        fail(-EINVAL,
            "usage: bulkhead-unpack [--keep-owners=MAX_UID:MAX_GID] MAX_BYTES MAX_ENTRIES KEEP_FREE_BYTES");
    // Writing over modes and times of entries (FOWNER, DAC_OVERRIDE) and keeping setuid and
    // setgid bits (FSETID); restoring the archive's owners needs CHOWN too.
    confine(cap(CAP_DAC_OVERRIDE) | cap(CAP_FOWNER) | cap(CAP_FSETID) | (keep_owners ? cap(CAP_CHOWN) : 0));
    bh::ImportUsage usage;
    bh::Status status = bh::extract_rootfs_tar(archive_fd, "/",
        keep_owners ? bh::ImportOwners::archive : bh::ImportOwners::importer, limits, &usage);
    if (!status)
        fail(status.error().code, status.error().message);
    write_all("ok " + std::to_string(usage.skipped_devices) + "\n");
    // _exit: nothing is left to flush, and a sanitizer's exit-time pass (LeakSanitizer) would
    // need the /proc this chroot does not have.
    _exit(0);
}
