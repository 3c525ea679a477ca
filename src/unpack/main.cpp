// bulkhead-unpack: extracts one untrusted distribution archive, confined, for bulkheadd.
//
//   bulkhead-unpack [--keep-owners] MAX_BYTES MAX_ENTRIES KEEP_FREE_BYTES
//
// fd 0 is the archive (as the user sent it), fd 3 the empty target directory, fd 1 where the
// result goes: "ok\n", or "error <negative errno>\n<message>". The service starts it in new PID,
// network, IPC and UTS namespaces and, for a user's archive, as root of a user namespace that
// maps only that user (service/unpack-process.h). Before reading a byte it chroots into the
// target and keeps only the capabilities extraction needs, none of which can undo the chroot:
// a parser bug gets the user's own ids, in an empty tree, and nothing else.
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
void confine(bool keep_owners)
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
    // Writing over modes and times of entries (FOWNER, DAC_OVERRIDE) and keeping setuid and
    // setgid bits (FSETID); restoring the archive's owners needs CHOWN too.
    uint64_t keep = (uint64_t { 1 } << CAP_DAC_OVERRIDE) | (uint64_t { 1 } << CAP_FOWNER)
        | (uint64_t { 1 } << CAP_FSETID);
    if (keep_owners)
        keep |= uint64_t { 1 } << CAP_CHOWN;
    keep_only_capabilities(keep);
}

} // namespace

int main(int argc, char** argv)
{
    int first = 1;
    bool keep_owners = argc > 1 && std::string_view(argv[1]) == "--keep-owners";
    if (keep_owners)
        first = 2;
    bh::ImportLimits limits;
    if (argc - first != 3 || !parse(argv[first], limits.max_bytes)
        || !parse(argv[first + 1], limits.max_entries) || !parse(argv[first + 2], limits.keep_free_bytes))
        fail(-EINVAL, "usage: bulkhead-unpack [--keep-owners] MAX_BYTES MAX_ENTRIES KEEP_FREE_BYTES");
    confine(keep_owners);
    bh::Status status = bh::extract_rootfs_tar(
        archive_fd, "/", keep_owners ? bh::ImportOwners::archive : bh::ImportOwners::importer, limits);
    if (!status)
        fail(status.error().code, status.error().message);
    write_all("ok\n");
    // _exit: nothing is left to flush, and a sanitizer's exit-time pass (LeakSanitizer) would
    // need the /proc this chroot does not have.
    _exit(0);
}
