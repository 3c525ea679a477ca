// Tests for rootfs import (hostile tars, ownership, os-release) and the CLI's tar writer.
#include "unpack/rootfs-import.h"
#include "unpack/rootfs-tree.h"

#include "base/fd.h"
#include "unpack/rootfs-archive.h"

#include <algorithm>
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <grp.h>
#include <gtest/gtest.h>
#include <map>
#include <random>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh {
namespace {

    namespace fs = std::filesystem;

    constexpr time_t test_mtime = 1'600'000'000;

    // A substring check with a readable failure, without depending on gmock.
    testing::AssertionResult contains(const std::string& text, const std::string& part)
    {
        if (text.find(part) != std::string::npos)
            return testing::AssertionSuccess();
        return testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
    }

    Fd make_memfd()
    {
        Fd fd(memfd_create("rootfs-test", MFD_CLOEXEC));
        EXPECT_TRUE(fd.valid()) << std::strerror(errno);
        return fd;
    }

    void rewind(const Fd& fd)
    {
        ASSERT_EQ(lseek(fd.get(), 0, SEEK_SET), 0);
    }

    // Builds a tar in a memfd with libarchive's writer, one entry at a time.
    class TarBuilder {
    public:
        explicit TarBuilder(bool gzip = false)
            : m_fd(make_memfd())
            , m_tar(archive_write_new())
        {
            archive_write_set_format_pax_restricted(m_tar);
            if (gzip)
                archive_write_add_filter_gzip(m_tar);
            EXPECT_EQ(archive_write_open_fd(m_tar, m_fd.get()), ARCHIVE_OK);
        }
        ~TarBuilder()
        {
            if (m_tar)
                archive_write_free(m_tar);
        }

        using Extra = std::function<void(archive_entry*)>;
        TarBuilder& add(const std::string& name, mode_t type, mode_t perm, const std::string& data = "",
            const Extra& extra = {})
        {
            archive_entry* entry = archive_entry_new();
            archive_entry_set_pathname(entry, name.c_str());
            archive_entry_set_filetype(entry, type);
            archive_entry_set_perm(entry, perm);
            archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
            archive_entry_set_mtime(entry, test_mtime, 0);
            if (extra)
                extra(entry);
            EXPECT_EQ(archive_write_header(m_tar, entry), ARCHIVE_OK) << archive_error_string(m_tar);
            if (!data.empty()) {
                EXPECT_EQ(archive_write_data(m_tar, data.data(), data.size()),
                    static_cast<la_ssize_t>(data.size()));
            }
            archive_entry_free(entry);
            return *this;
        }
        TarBuilder& dir(const std::string& name, mode_t perm = 0755) { return add(name, AE_IFDIR, perm); }
        TarBuilder& file(const std::string& name, const std::string& data, mode_t perm = 0644)
        {
            return add(name, AE_IFREG, perm, data);
        }
        TarBuilder& owned_file(const std::string& name, uid_t uid, gid_t gid)
        {
            return add(name, AE_IFREG, 0644, "owned", [=](archive_entry* e) {
                archive_entry_set_uid(e, uid);
                archive_entry_set_gid(e, gid);
            });
        }
        TarBuilder& symlink(const std::string& name, const std::string& target)
        {
            return add(name, AE_IFLNK, 0777, "",
                [&](archive_entry* e) { archive_entry_set_symlink(e, target.c_str()); });
        }
        TarBuilder& hardlink(const std::string& name, const std::string& target)
        {
            return add(name, AE_IFREG, 0644, "",
                [&](archive_entry* e) { archive_entry_set_hardlink(e, target.c_str()); });
        }
        TarBuilder& device(const std::string& name, mode_t type)
        {
            return add(
                name, type, 0600, "", [](archive_entry* e) { archive_entry_set_rdev(e, makedev(1, 3)); });
        }

        // Ends the archive and returns the memfd, positioned at its start.
        Fd finish()
        {
            EXPECT_EQ(archive_write_close(m_tar), ARCHIVE_OK);
            archive_write_free(std::exchange(m_tar, nullptr));
            rewind(m_fd);
            return std::move(m_fd);
        }

    private:
        Fd m_fd;
        archive* m_tar;
    };

    bool exists(const std::string& path)
    {
        struct stat st;
        return lstat(path.c_str(), &st) == 0;
    }

    struct stat lstat_of(const std::string& path)
    {
        struct stat st { };
        EXPECT_EQ(lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
        return st;
    }

    std::string read_file(const std::string& path)
    {
        Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        std::string data;
        char buffer[4096];
        ssize_t n;
        while (fd && (n = read(fd.get(), buffer, sizeof buffer)) > 0)
            data.append(buffer, static_cast<size_t>(n));
        return data;
    }

    void write_file(const std::string& path, const std::string& data, mode_t mode = 0644)
    {
        Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
        ASSERT_TRUE(fd.valid()) << path << ": " << std::strerror(errno);
        ASSERT_EQ(write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
        ASSERT_EQ(fchmod(fd.get(), mode), 0);
    }

    std::string link_target(const std::string& path)
    {
        std::error_code ec;
        return fs::read_symlink(path, ec).string();
    }

    // Each test gets a private directory; the trees it makes live below it.
    class RootfsTest : public testing::Test {
    protected:
        void SetUp() override
        {
            char pattern[] = "/tmp/bh-rootfs-test-XXXXXX";
            ASSERT_NE(mkdtemp(pattern), nullptr);
            m_base = pattern;
            m_target = m_base + "/root";
        }
        void TearDown() override
        {
            std::error_code ec;
            fs::remove_all(m_base, ec);
        }

        Status import(const Fd& tar, ImportOwners owners = ImportOwners::archive)
        {
            return import_rootfs_tar(tar.get(), m_target, owners);
        }

        void expect_rejected(Fd tar, const std::string& entry, const std::string& reason)
        {
            Status status = import(tar);
            ASSERT_FALSE(status.ok()) << "entry " << entry << " was accepted";
            EXPECT_EQ(status.error().code, -EINVAL) << status.error().message;
            EXPECT_TRUE(contains(status.error().message, "'" + entry + "'"));
            EXPECT_TRUE(contains(status.error().message, reason));
            EXPECT_FALSE(exists(m_target)) << "a partial tree was left behind";
        }

        std::string m_base;
        std::string m_target;
    };

    // ---- import_rootfs_tar: good archives ----

    TEST_F(RootfsTest, ExtractsAGoodTree)
    {
        Fd tar = TarBuilder()
                     .dir("./", 0750)
                     .dir("./etc/")
                     .file("./etc/os-release", "ID=debian\n")
                     .file("./usr/bin/tool", "#!/bin/sh\n", 0755)
                     .file("./usr/bin/su", "suid", 04755)
                     .dir("./home/user", 0700)
                     .symlink("./etc/alias", "os-release")
                     .symlink("./etc/up", "../usr/bin/tool")
                     .symlink("./etc/mtab", "/proc/self/mounts")
                     .hardlink("./usr/bin/tool2", "./usr/bin/tool")
                     .owned_file("var/owned", 1234, 2345)
                     .add("./run/fifo", AE_IFIFO, 0600)
                     .finish();
        Status status = import(tar);
        ASSERT_TRUE(status.ok()) << status.error().message;

        EXPECT_EQ(lstat_of(m_target).st_mode & 07777, 0750u);
        EXPECT_EQ(lstat_of(m_target).st_mtime, test_mtime);
        EXPECT_EQ(read_file(m_target + "/etc/os-release"), "ID=debian\n");
        EXPECT_EQ(lstat_of(m_target + "/etc/os-release").st_mode & 07777, 0644u);
        EXPECT_EQ(lstat_of(m_target + "/etc/os-release").st_mtime, test_mtime);
        EXPECT_EQ(lstat_of(m_target + "/usr/bin/tool").st_mode & 07777, 0755u);
        EXPECT_EQ(lstat_of(m_target + "/usr/bin/su").st_mode & 07777, 04755u);
        EXPECT_EQ(lstat_of(m_target + "/home/user").st_mode, S_IFDIR | 0700u);
        EXPECT_EQ(link_target(m_target + "/etc/alias"), "os-release");
        EXPECT_EQ(link_target(m_target + "/etc/up"), "../usr/bin/tool");
        EXPECT_EQ(link_target(m_target + "/etc/mtab"), "/proc/self/mounts");
        EXPECT_EQ(lstat_of(m_target + "/usr/bin/tool2").st_ino, lstat_of(m_target + "/usr/bin/tool").st_ino);
        EXPECT_TRUE(S_ISFIFO(lstat_of(m_target + "/run/fifo").st_mode));
        if (geteuid() == 0) {
            EXPECT_EQ(lstat_of(m_target + "/var/owned").st_uid, 1234u);
            EXPECT_EQ(lstat_of(m_target + "/var/owned").st_gid, 2345u);
        }
    }

    TEST_F(RootfsTest, ExtractsGzipCompressedTar)
    {
        Fd tar = TarBuilder(true).file("etc/os-release", "ID=alpine\n").finish();
        Status status = import(tar);
        ASSERT_TRUE(status.ok()) << status.error().message;
        EXPECT_EQ(read_file(m_target + "/etc/os-release"), "ID=alpine\n");
    }

    TEST_F(RootfsTest, EmptyTarGivesEmptyRoot)
    {
        Fd tar = TarBuilder().finish();
        Status status = import(tar);
        ASSERT_TRUE(status.ok()) << status.error().message;
        EXPECT_TRUE(fs::is_empty(m_target));
    }

    // Behind a subordinate range only ids up to its end exist: an owner beyond is refused whole.
    TEST_F(RootfsTest, RejectsOwnersBeyondTheMappedIds)
    {
        ImportLimits limits;
        limits.max_owner_uid = 65536;
        limits.max_owner_gid = 65536;
        Fd inside = TarBuilder().owned_file("srv/mine", 65536, 65536).finish();
        if (geteuid() == 0) {
            Status status = import_rootfs_tar(inside.get(), m_target, ImportOwners::archive, limits);
            ASSERT_TRUE(status.ok()) << status.error().message;
            ASSERT_TRUE(remove_tree(m_target).ok());
        }
        Fd beyond = TarBuilder().owned_file("srv/far", 65537, 0).finish();
        Status status = import_rootfs_tar(beyond.get(), m_target, ImportOwners::archive, limits);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EINVAL);
        EXPECT_TRUE(contains(status.error().message, "'srv/far' is owned by uid 65537"))
            << status.error().message;
        EXPECT_FALSE(exists(m_target));
    }

    // bulkhead-unpack imports a user's archive as root of a user namespace that maps only that
    // user: there the importer's own ids own every entry, whatever the archive says. Here a child
    // with uid 4321 stands in for it.
    TEST_F(RootfsTest, ImporterOwnsEveryEntry)
    {
        if (geteuid() != 0)
            GTEST_SKIP() << "needs root to switch ids";
        ASSERT_EQ(chown(m_base.c_str(), 4321, 4322), 0);
        Fd tar = TarBuilder()
                     .owned_file("a/b/owned", 1234, 2345)
                     .file("a/plain", "x")
                     .symlink("a/link", "/etc/passwd")
                     .finish();
        pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            if (setgroups(0, nullptr) != 0 || setgid(4322) != 0 || setuid(4321) != 0)
                _exit(2);
            _exit(import(tar, ImportOwners::importer).ok() ? 0 : 1);
        }
        int status = 0;
        ASSERT_EQ(waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
        for (auto path : { "", "/a", "/a/b", "/a/b/owned", "/a/plain", "/a/link" }) {
            struct stat st = lstat_of(m_target + path);
            EXPECT_EQ(st.st_uid, 4321u) << path;
            EXPECT_EQ(st.st_gid, 4322u) << path;
        }
    }

    // extract_rootfs_tar fills a directory that exists (bulkhead-unpack's chroot) and leaves what
    // it wrote on failure: removing it is the caller's.
    TEST_F(RootfsTest, ExtractIntoAnExistingRoot)
    {
        ASSERT_EQ(mkdir(m_target.c_str(), 0700), 0);
        ImportUsage usage;
        Fd tar = TarBuilder().file("etc/os-release", "ID=x\n").file("bin/sh", "sh", 0755).finish();
        Status status = extract_rootfs_tar(tar.get(), m_target + "/", ImportOwners::archive, {}, &usage);
        ASSERT_TRUE(status.ok()) << status.error().message;
        EXPECT_EQ(read_file(m_target + "/bin/sh"), "sh");
        EXPECT_EQ(usage.bytes, 7u);
        Fd bad = TarBuilder().file("first", "1").file("../escape", "2").finish();
        status = extract_rootfs_tar(bad.get(), m_target, ImportOwners::archive);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EINVAL);
        EXPECT_EQ(read_file(m_target + "/first"), "1");
        EXPECT_FALSE(contains(status.error().message, "cannot register from tar"));
        EXPECT_EQ(extract_rootfs_tar(tar.get(), "relative", ImportOwners::archive).error().code, -EINVAL);
    }

    // The service measures what an import wrote itself: every entry, a file's content once
    // however many links it has, and never what a symlink points to.
    TEST_F(RootfsTest, MeasureTreeCountsWhatIsThere)
    {
        ASSERT_EQ(mkdir(m_target.c_str(), 0755), 0);
        write_file(m_target + "/one", "12345", 0644);
        ASSERT_EQ(mkdir((m_target + "/dir").c_str(), 0755), 0);
        write_file(m_target + "/dir/two", "123", 0644);
        ASSERT_EQ(link((m_target + "/dir/two").c_str(), (m_target + "/dir/again").c_str()), 0);
        ASSERT_EQ(symlink("/etc/passwd", (m_target + "/link").c_str()), 0);
        auto usage = measure_tree(m_target);
        ASSERT_TRUE(usage.ok()) << usage.error().message;
        EXPECT_EQ(usage->bytes, 8u);
        EXPECT_EQ(usage->entries, 5u); // one, dir, dir/two, dir/again, link
        EXPECT_EQ(measure_tree(m_base + "/missing").error().code, -ENOENT);
    }

    // ---- import_rootfs_tar: hostile or broken archives ----

    TEST_F(RootfsTest, RejectsAbsoluteEntry)
    {
        expect_rejected(
            TarBuilder().file("ok", "x").file("/etc/evil", "x").finish(), "/etc/evil", "absolute path");
    }

    TEST_F(RootfsTest, RejectsDotDotEntry)
    {
        expect_rejected(
            TarBuilder().file("ok", "x").file("etc/../../x", "x").finish(), "etc/../../x", "'..' component");
    }

    TEST_F(RootfsTest, RejectsDotDotEvenWhenItStaysInside)
    {
        expect_rejected(TarBuilder().file("a/../b", "x").finish(), "a/../b", "'..' component");
    }

    TEST_F(RootfsTest, RejectsDotDotHardlinkTarget)
    {
        expect_rejected(
            TarBuilder().file("ok", "x").hardlink("h", "../../etc/shadow").finish(), "h", "'..' component");
    }

    TEST_F(RootfsTest, RejectsAbsoluteHardlinkTarget)
    {
        expect_rejected(
            TarBuilder().file("ok", "x").hardlink("h", "/etc/shadow").finish(), "h", "absolute path");
    }

    TEST_F(RootfsTest, RejectsSymlinkClimbingAboveRoot)
    {
        expect_rejected(
            TarBuilder().dir("a").symlink("a/l", "../../etc").finish(), "a/l", "climbs above the root");
    }

    TEST_F(RootfsTest, RejectsTopLevelSymlinkToParent)
    {
        expect_rejected(TarBuilder().symlink("./l", "..").finish(), "./l", "climbs above the root");
    }

    // Device nodes are skipped and counted (tars of real systems carry /dev/console); nothing
    // of them reaches the disk, and the rest of the archive is imported.
    TEST_F(RootfsTest, SkipsDeviceNodes)
    {
        Fd tar = TarBuilder()
                     .dir("dev")
                     .device("dev/mem", AE_IFCHR)
                     .device("dev/sda", AE_IFBLK)
                     .file("etc/hostname", "box")
                     .finish();
        ImportUsage usage;
        Status status = import_rootfs_tar(tar.get(), m_target, ImportOwners::archive, {}, &usage);
        ASSERT_TRUE(status.ok()) << status.error().message;
        EXPECT_EQ(usage.skipped_devices, 2u);
        EXPECT_FALSE(exists(m_target + "/dev/mem"));
        EXPECT_FALSE(exists(m_target + "/dev/sda"));
        EXPECT_EQ(read_file(m_target + "/etc/hostname"), "box");
    }

    // A skipped device's name is checked like any other's.
    TEST_F(RootfsTest, RejectsDeviceOutsideTheRoot)
    {
        expect_rejected(TarBuilder().device("../dev/mem", AE_IFCHR).finish(), "../dev/mem", "'..' component");
        expect_rejected(TarBuilder().device("/dev/sda", AE_IFBLK).finish(), "/dev/sda", "absolute path");
    }

    TEST_F(RootfsTest, RejectsOverlongName)
    {
        std::string name(PATH_MAX + 10, 'n');
        for (size_t i = 200; i < name.size(); i += 200)
            name[i] = '/';
        expect_rejected(
            TarBuilder().file(name, "x").finish(), name.substr(0, 200) + "...", "longer than PATH_MAX");
    }

    TEST_F(RootfsTest, RejectsNonDirectoryRoot)
    {
        expect_rejected(TarBuilder().symlink(".", "/etc").finish(), ".", "replace the root");
    }

    TEST_F(RootfsTest, NamesAreQuotedSafely)
    {
        Status status = import(TarBuilder().file("/\x1b[31mred", "x").finish());
        ASSERT_FALSE(status.ok());
        EXPECT_TRUE(contains(status.error().message, "'/\\x1b[31mred'"));
    }

    TEST_F(RootfsTest, CannotWriteThroughAnAbsoluteSymlink)
    {
        std::string outside = m_base + "/outside";
        ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
        Status status = import(TarBuilder().symlink("l", outside).file("l/pwned", "x").finish());
        ASSERT_FALSE(status.ok());
        EXPECT_TRUE(contains(status.error().message, "'l/pwned'"));
        EXPECT_FALSE(exists(outside + "/pwned"));
        EXPECT_FALSE(exists(m_target));
    }

    TEST_F(RootfsTest, CannotHardlinkThroughAnAbsoluteSymlink)
    {
        std::string outside = m_base + "/outside";
        ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
        write_file(outside + "/secret", "host secret", 0600);
        Status status = import(TarBuilder().symlink("l", outside).hardlink("h", "l/secret").finish());
        ASSERT_FALSE(status.ok());
        EXPECT_TRUE(contains(status.error().message, "'h'"));
        EXPECT_EQ(lstat_of(outside + "/secret").st_nlink, 1u);
        EXPECT_FALSE(exists(m_target));
    }

    // A directory replaced by a symlink must not get the directory's deferred mode and
    // time applied through the symlink when extraction finishes.
    TEST_F(RootfsTest, DeferredDirectoryModeDoesNotFollowReplacingSymlink)
    {
        std::string outside = m_base + "/outside";
        ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
        Fd tar = TarBuilder().dir("a", 0777).symlink("a", outside).finish();
        Status status = import(tar);
        (void)status;
        EXPECT_EQ(lstat_of(outside).st_mode & 07777, 0700u);
        EXPECT_NE(lstat_of(outside).st_mtime, test_mtime);
    }

    TEST_F(RootfsTest, DirectoryEntryOverSymlinkDoesNotFollowIt)
    {
        std::string outside = m_base + "/outside";
        ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
        Fd tar = TarBuilder().symlink("l", outside).dir("l", 0777).file("l/x", "x").finish();
        Status status = import(tar);
        (void)status;
        EXPECT_EQ(lstat_of(outside).st_mode & 07777, 0700u);
        EXPECT_FALSE(exists(outside + "/x"));
    }

    // link() does not follow a symlink: at worst the new name is another symlink.
    TEST_F(RootfsTest, HardlinkToAnAbsoluteSymlinkDoesNotLinkTheHostFile)
    {
        std::string host_file = m_base + "/host-file";
        write_file(host_file, "host", 0600);
        Status status = import(TarBuilder().symlink("l", host_file).hardlink("h", "l").finish());
        EXPECT_EQ(lstat_of(host_file).st_nlink, 1u);
        if (status.ok()) {
            EXPECT_TRUE(S_ISLNK(lstat_of(m_target + "/h").st_mode));
        }
    }

    TEST_F(RootfsTest, RejectsRandomBytes)
    {
        Fd fd = make_memfd();
        std::mt19937 random(42);
        std::string bytes(8192, '\0');
        for (auto& byte : bytes)
            byte = static_cast<char>(random());
        ASSERT_EQ(write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
        rewind(fd);
        Status status = import(fd);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EINVAL);
        EXPECT_TRUE(contains(status.error().message, "not a tar archive"));
        EXPECT_FALSE(exists(m_target));
    }

    TEST_F(RootfsTest, RejectsEmptyInput)
    {
        Fd fd = make_memfd();
        Status status = import(fd);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EINVAL);
        EXPECT_TRUE(contains(status.error().message, "not a tar archive"));
        EXPECT_FALSE(exists(m_target));
    }

    TEST_F(RootfsTest, RejectsTruncatedTar)
    {
        Fd tar = TarBuilder().file("big", std::string(100'000, 'x')).finish();
        ASSERT_EQ(ftruncate(tar.get(), 5000), 0);
        Status status = import(tar);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EINVAL) << status.error().message;
        EXPECT_FALSE(exists(m_target));
    }

    TEST_F(RootfsTest, ExistingTargetIsAnErrorAndIsKept)
    {
        ASSERT_EQ(mkdir(m_target.c_str(), 0700), 0);
        write_file(m_target + "/keep", "mine");
        Status status = import(TarBuilder().file("x", "x").finish());
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EEXIST);
        EXPECT_EQ(read_file(m_target + "/keep"), "mine");
    }

    TEST_F(RootfsTest, BadFdIsAnIoError)
    {
        Status status = import_rootfs_tar(-1, m_target, ImportOwners::archive);
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -EBADF) << status.error().message;
        EXPECT_FALSE(exists(m_target));
    }

    size_t open_fd_count()
    {
        std::error_code ec;
        auto entries = fs::directory_iterator("/proc/self/fd", ec);
        return static_cast<size_t>(std::distance(entries, fs::directory_iterator {}));
    }

    TEST_F(RootfsTest, LeaksNoFds)
    {
        size_t before = open_fd_count();
        {
            Fd tar = TarBuilder().file("a/b", "x").finish();
            ASSERT_TRUE(import(tar, ImportOwners::importer).ok());
            Fd root(open(m_target.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            (void)read_os_release(root.get());
            ASSERT_TRUE(remove_tree(m_target).ok());
            ASSERT_FALSE(import(TarBuilder().file("ok", "x").file("/abs", "x").finish()).ok());
        }
        EXPECT_EQ(open_fd_count(), before);
    }

    // ---- read_os_release ----

    class OsReleaseTest : public RootfsTest {
    protected:
        void SetUp() override
        {
            RootfsTest::SetUp();
            for (auto dir : { "", "/etc", "/usr", "/usr/lib" })
                ASSERT_EQ(mkdir((m_target + dir).c_str(), 0755), 0);
        }
        OsRelease read()
        {
            // The service hands over an O_PATH fd.
            Fd root(open(m_target.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            EXPECT_TRUE(root.valid());
            return read_os_release(root.get());
        }
    };

    TEST_F(OsReleaseTest, ParsesQuotedValues)
    {
        write_file(m_target + "/etc/os-release",
            "# a comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='x'\n");
        OsRelease release = read();
        EXPECT_EQ(release.id, "debian");
        EXPECT_EQ(release.version_id, "12");
    }

    TEST_F(OsReleaseTest, HandlesShellQuotingRules)
    {
        write_file(m_target + "/etc/os-release",
            "ID='single \"q\"'\n  VERSION_ID=\"a\\\"b\\\\c\\$d\\x\"'e'f # trailing comment\n");
        OsRelease release = read();
        EXPECT_EQ(release.id, "single \"q\"");
        EXPECT_EQ(release.version_id, "a\"b\\c$d\\xef");
    }

    TEST_F(OsReleaseTest, LaterAssignmentWinsAndBrokenQuotesAreIgnored)
    {
        write_file(m_target + "/etc/os-release", "ID=first\nID=second\nVERSION_ID=\"unterminated\n");
        OsRelease release = read();
        EXPECT_EQ(release.id, "second");
        EXPECT_EQ(release.version_id, std::nullopt);
    }

    TEST_F(OsReleaseTest, MissingFileOrKeysLeaveFieldsEmpty)
    {
        EXPECT_EQ(read().id, std::nullopt);
        write_file(m_target + "/etc/os-release", "NAME=x\nID=\n");
        OsRelease release = read();
        EXPECT_EQ(release.id, std::nullopt);
        EXPECT_EQ(release.version_id, std::nullopt);
    }

    TEST_F(OsReleaseTest, FallsBackToUsrLib)
    {
        write_file(m_target + "/usr/lib/os-release", "ID=arch\n");
        EXPECT_EQ(read().id, "arch");
    }

    TEST_F(OsReleaseTest, AbsoluteSymlinkResolvesInsideTheRoot)
    {
        write_file(m_target + "/usr/lib/os-release", "ID=fedora\nVERSION_ID=40\n");
        ASSERT_EQ(symlink("/usr/lib/os-release", (m_target + "/etc/os-release").c_str()), 0);
        OsRelease release = read();
        EXPECT_EQ(release.id, "fedora");
        EXPECT_EQ(release.version_id, "40");
    }

    TEST_F(OsReleaseTest, SymlinksNeverReachHostFiles)
    {
        std::string host_file = m_base + "/host-os-release";
        write_file(host_file, "ID=host\n");
        ASSERT_EQ(symlink(host_file.c_str(), (m_target + "/etc/os-release").c_str()), 0);
        EXPECT_EQ(read().id, std::nullopt);
        ASSERT_EQ(unlink((m_target + "/etc/os-release").c_str()), 0);
        ASSERT_EQ(symlink("../../../../../../../../../../../../../../../../../..",
                      (m_target + "/usr/lib/up").c_str()),
            0);
        ASSERT_EQ(symlink(("/usr/lib/up" + host_file).c_str(), (m_target + "/etc/os-release").c_str()), 0);
        EXPECT_EQ(read().id, std::nullopt);
    }

    TEST_F(OsReleaseTest, FifoDoesNotHang)
    {
        ASSERT_EQ(mkfifo((m_target + "/etc/os-release").c_str(), 0644), 0);
        EXPECT_EQ(read().id, std::nullopt);
    }

    TEST_F(OsReleaseTest, ReadsAtMost64KiB)
    {
        std::string padding = "# " + std::string(1000, 'p') + "\n";
        std::string data = "ID=capped\n";
        while (data.size() < 64 * 1024)
            data += padding;
        write_file(m_target + "/etc/os-release", data + "VERSION_ID=too-far\n");
        OsRelease release = read();
        EXPECT_EQ(release.id, "capped");
        EXPECT_EQ(release.version_id, std::nullopt);
    }

    // ---- remove_tree ----

    TEST_F(RootfsTest, RemoveTreeDoesNotFollowSymlinks)
    {
        std::string outside = m_base + "/outside";
        ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
        write_file(outside + "/precious", "keep");
        ASSERT_EQ(mkdir(m_target.c_str(), 0755), 0);
        ASSERT_EQ(mkdir((m_target + "/sub").c_str(), 0), 0);
        ASSERT_EQ(symlink(outside.c_str(), (m_target + "/sub/link").c_str()), 0);
        ASSERT_EQ(symlink(outside.c_str(), (m_target + "/link").c_str()), 0);

        Status status = remove_tree(m_target);
        ASSERT_TRUE(status.ok()) << status.error().message;
        EXPECT_FALSE(exists(m_target));
        EXPECT_EQ(read_file(outside + "/precious"), "keep");

        // A symlink given as the path itself is removed, not its target.
        ASSERT_EQ(symlink(outside.c_str(), m_target.c_str()), 0);
        ASSERT_TRUE(remove_tree(m_target).ok());
        EXPECT_FALSE(exists(m_target));
        EXPECT_EQ(read_file(outside + "/precious"), "keep");
    }

    TEST_F(RootfsTest, RemoveTreeOfMissingPathSucceeds)
    {
        EXPECT_TRUE(remove_tree(m_base + "/missing").ok());
        EXPECT_TRUE(remove_tree(m_base + "/missing/deeper").ok());
        EXPECT_FALSE(remove_tree("/").ok());
    }

    // Deeper than the fd limit: the walk must not keep one fd per level.
    TEST_F(RootfsTest, RemoveTreeHandlesTreesDeeperThanTheFdLimit)
    {
        pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            struct rlimit limit = { 32, 32 };
            setrlimit(RLIMIT_NOFILE, &limit);
            Fd dir(open(m_base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            for (int i = 0; i < 2100 && dir; ++i) {
                const char* name = i == 0 ? "root" : "d";
                if (mkdirat(dir.get(), name, 0755) != 0)
                    _exit(2);
                dir.reset(openat(dir.get(), name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            }
            if (!dir || mkdirat(dir.get(), "leaf", 0755) != 0)
                _exit(3);
            dir.reset();
            Status status = remove_tree(m_target);
            if (!status.ok())
                fprintf(stderr, "%s\n", status.error().message.c_str());
            _exit(status.ok() && !exists(m_target) ? 0 : 1);
        }
        int wstatus = 0;
        ASSERT_EQ(waitpid(child, &wstatus, 0), child);
        EXPECT_TRUE(WIFEXITED(wstatus));
        EXPECT_EQ(WEXITSTATUS(wstatus), 0);
    }

    // ---- write_rootfs_tar ----

    // Describes a tree as path -> "type/mode uid gid size mtime content", hardlinks as
    // "link to <first name>", so two trees compare with one EXPECT_EQ.
    std::map<std::string, std::string> describe_tree(const std::string& top)
    {
        std::map<std::string, std::string> tree;
        std::map<ino_t, std::string> first_name;
        std::vector<std::string> paths { top };
        for (const auto& entry : fs::recursive_directory_iterator(top))
            paths.push_back(entry.path().string());
        for (const auto& path : paths) {
            struct stat st = lstat_of(path);
            std::string name = path == top ? "." : path.substr(top.size() + 1);
            std::string& text = tree[name];
            if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && first_name.contains(st.st_ino)) {
                text = "link to " + first_name[st.st_ino];
                continue;
            }
            first_name.emplace(st.st_ino, name);
            text = std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":"
                + std::to_string(st.st_gid);
            if (!S_ISLNK(st.st_mode))
                text += " mtime " + std::to_string(st.st_mtime);
            if (S_ISREG(st.st_mode))
                text += " size " + std::to_string(st.st_size) + " data hash "
                    + std::to_string(std::hash<std::string> {}(read_file(path)));
            if (S_ISLNK(st.st_mode))
                text += " -> " + link_target(path);
        }
        return tree;
    }

    void set_mtime(const std::string& path)
    {
        struct timespec times[2] = { { test_mtime, 0 }, { test_mtime, 0 } };
        ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
    }

    void build_sample_tree(const std::string& top)
    {
        for (auto dir : { "", "/etc", "/usr", "/usr/lib", "/usr/bin", "/tmp", "/private", "/deep", "/deep/a",
                 "/deep/a/b" })
            ASSERT_EQ(mkdir((top + dir).c_str(), 0755), 0);
        ASSERT_EQ(chmod((top + "/tmp").c_str(), 01777), 0);
        ASSERT_EQ(chmod((top + "/private").c_str(), 0700), 0);
        write_file(top + "/usr/lib/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        write_file(top + "/etc/hostname", "vm\n", 0600);
        write_file(top + "/usr/bin/tool", std::string(200'000, 't'), 0755);
        write_file(top + "/usr/bin/su", "suid", 04755);
        write_file(top + "/private/secret", "s", 0400);
        write_file(top + "/deep/a/b/empty", "");
        write_file(top + "/etc/F\xc5\x91tan\xc3\xbas\xc3\xadtv\xc3\xa1ny.crt", "utf-8 name");
        write_file(top + "/etc/latin1-\xe9", "not utf-8");
        ASSERT_EQ(link((top + "/usr/bin/tool").c_str(), (top + "/usr/bin/tool-link").c_str()), 0);
        ASSERT_EQ(symlink("/usr/lib/os-release", (top + "/etc/os-release").c_str()), 0);
        ASSERT_EQ(symlink("../lib/os-release", (top + "/usr/bin/rel").c_str()), 0);
        ASSERT_EQ(symlink("nowhere", (top + "/dangling").c_str()), 0);
        ASSERT_EQ(mkfifo((top + "/tmp/fifo").c_str(), 0620), 0);
        if (geteuid() == 0) {
            ASSERT_EQ(lchown((top + "/private").c_str(), 1234, 2345), 0);
            ASSERT_EQ(lchown((top + "/private/secret").c_str(), 1234, 2345), 0);
            ASSERT_EQ(lchown((top + "/dangling").c_str(), 1234, 2345), 0);
        }
        // Children first, so setting a file's time does not change its directory's.
        std::vector<std::string> paths { top };
        for (const auto& entry : fs::recursive_directory_iterator(top))
            paths.push_back(entry.path().string());
        for (auto it = paths.rbegin(); it != paths.rend(); ++it)
            set_mtime(*it);
    }

    TEST_F(RootfsTest, WrittenTarRoundTripsThroughImport)
    {
        std::string source = m_base + "/source";
        build_sample_tree(source);
        Fd tar = make_memfd();
        Status written = write_rootfs_tar(source + "/", tar.get());
        ASSERT_TRUE(written.ok()) << written.error().message;
        rewind(tar);
        Status imported = import(tar);
        ASSERT_TRUE(imported.ok()) << imported.error().message;
        EXPECT_EQ(describe_tree(m_target), describe_tree(source));
    }

    TEST_F(RootfsTest, WrittenTarUsesRelativeNames)
    {
        std::string source = m_base + "/source";
        ASSERT_EQ(mkdir(source.c_str(), 0755), 0);
        ASSERT_EQ(mkdir((source + "/etc").c_str(), 0755), 0);
        write_file(source + "/etc/os-release", "ID=x\n");
        Fd tar = make_memfd();
        ASSERT_TRUE(write_rootfs_tar(source, tar.get()).ok());
        rewind(tar);
        archive* reader = archive_read_new();
        archive_read_support_format_tar(reader);
        ASSERT_EQ(archive_read_open_fd(reader, tar.get(), 4096), ARCHIVE_OK);
        std::vector<std::string> names;
        archive_entry* entry;
        while (archive_read_next_header(reader, &entry) == ARCHIVE_OK)
            names.emplace_back(archive_entry_pathname(entry));
        archive_read_free(reader);
        std::sort(names.begin(), names.end());
        EXPECT_EQ(names, (std::vector<std::string> { "./", "./etc/", "./etc/os-release" }));
    }

    TEST_F(RootfsTest, WriteOfMissingDirectoryFails)
    {
        Fd tar = make_memfd();
        Status status = write_rootfs_tar(m_base + "/missing", tar.get());
        ASSERT_FALSE(status.ok());
        EXPECT_EQ(status.error().code, -ENOENT) << status.error().message;
        EXPECT_TRUE(contains(status.error().message, m_base + "/missing"));
    }

    // Runs write_rootfs_tar on `top` as uid/gid 65534 in a child; returns its error.
    std::string write_as_nobody(const std::string& top)
    {
        int pipe_fds[2];
        EXPECT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
        Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
        pid_t child = fork();
        if (child == 0) {
            if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
                _exit(2);
            Fd out(open("/dev/null", O_WRONLY | O_CLOEXEC));
            Status status = write_rootfs_tar(top, out.get());
            std::string text
                = status.ok() ? "ok" : std::to_string(status.error().code) + " " + status.error().message;
            _exit(write(write_end.get(), text.data(), text.size()) < 0 ? 3 : 0);
        }
        write_end.reset();
        std::string result;
        char buffer[4096];
        ssize_t n;
        while ((n = read(read_end.get(), buffer, sizeof buffer)) > 0)
            result.append(buffer, static_cast<size_t>(n));
        int wstatus = 0;
        EXPECT_EQ(waitpid(child, &wstatus, 0), child);
        EXPECT_EQ(WEXITSTATUS(wstatus), 0);
        return result;
    }

    class UnreadableTest : public RootfsTest {
    protected:
        void SetUp() override
        {
            if (geteuid() != 0)
                GTEST_SKIP() << "needs root to switch to uid 65534";
            RootfsTest::SetUp();
            ASSERT_EQ(chmod(m_base.c_str(), 0755), 0);
            m_source = m_base + "/source";
            ASSERT_EQ(mkdir(m_source.c_str(), 0755), 0);
            write_file(m_source + "/readable", "x");
        }
        std::string m_source;
    };

    TEST_F(UnreadableTest, UnreadableDirectoryFailsWithItsPath)
    {
        ASSERT_EQ(mkdir((m_source + "/locked").c_str(), 0), 0);
        std::string error = write_as_nobody(m_source);
        EXPECT_TRUE(contains(error, "-13 "));
        EXPECT_TRUE(contains(error, "'" + m_source + "/locked'"));
        EXPECT_TRUE(contains(error, "Permission denied"));
    }

    TEST_F(UnreadableTest, UnreadableTopDirectoryFailsWithItsPath)
    {
        ASSERT_EQ(chmod(m_source.c_str(), 0), 0);
        std::string error = write_as_nobody(m_source);
        EXPECT_TRUE(contains(error, "-13 "));
        EXPECT_TRUE(contains(error, "'" + m_source + "'"));
        EXPECT_TRUE(contains(error, "Permission denied"));
    }

    TEST_F(UnreadableTest, UnreadableFileFailsWithItsPath)
    {
        write_file(m_source + "/locked-file", "x", 0);
        std::string error = write_as_nobody(m_source);
        EXPECT_TRUE(contains(error, "-13 "));
        EXPECT_TRUE(contains(error, "'" + m_source + "/locked-file'"));
        EXPECT_TRUE(contains(error, "Permission denied"));
    }

} // namespace
} // namespace bh
