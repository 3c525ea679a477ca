// dlopen_memfd and require_sealed on real shared objects copied into sealed memfds, the way the
// service hands plugins over (service/plugin-verify.cpp).
#include "plugin/verified-load.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

namespace bh::host {

namespace {

    Fd memfd_copy(const char* path, bool sealed)
    {
        Fd file(open(path, O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(file) << path;
        struct stat st { };
        EXPECT_EQ(fstat(file.get(), &st), 0);
        Fd memfd(memfd_create("verified-load-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        EXPECT_TRUE(memfd);
        EXPECT_EQ(sendfile(memfd.get(), file.get(), nullptr, st.st_size), st.st_size);
        if (sealed) {
            EXPECT_EQ(fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
        }
        return memfd;
    }

    int which(void* library)
    {
        auto fn = reinterpret_cast<int (*)()>(dlsym(library, "bh_test_which"));
        return fn ? fn() : -1;
    }

    const char* name_of(void* library)
    {
        Dl_info info {};
        void* symbol = dlsym(library, "bh_test_which");
        return symbol && dladdr(symbol, &info) ? info.dli_fname : "";
    }

} // namespace

// In-process, every plugin shares the one loader, which answers a dlopen of a name it has seen
// with the object it loaded then. The second plugin's memfd must never reuse the first's fd
// number, or the "second" plugin is the first one again.
TEST(VerifiedLoad, EachPluginIsItsOwnObjectThoughMemfdsComeAndGo)
{
    Fd first = memfd_copy(BH_TEST_WHICH_1, true);
    int first_fd = first.get();
    auto one = dlopen_memfd(std::move(first), "/plugins/one.so");
    ASSERT_TRUE(one) << one.error().message;
    Fd second = memfd_copy(BH_TEST_WHICH_2, true);
    EXPECT_NE(second.get(), first_fd) << "the first plugin's memfd was closed after loading";
    auto two = dlopen_memfd(std::move(second), "/plugins/two.so");
    ASSERT_TRUE(two) << two.error().message;
    EXPECT_NE(one.value(), two.value());
    EXPECT_EQ(which(one.value()), 1);
    EXPECT_EQ(which(two.value()), 2);
    EXPECT_STREQ(name_of(one.value()), "/plugins/one.so");
    EXPECT_STREQ(name_of(two.value()), "/plugins/two.so");
}

TEST(VerifiedLoad, RefusesAMemfdThatCanStillChange)
{
    Fd open_memfd = memfd_copy(BH_TEST_WHICH_1, false);
    Status status = require_sealed(open_memfd, "/plugins/one.so");
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().code, -EPERM);
    EXPECT_NE(status.error().message.find("/plugins/one.so"), std::string::npos);

    Fd not_memfd(open(BH_TEST_WHICH_1, O_RDONLY | O_CLOEXEC));
    EXPECT_FALSE(require_sealed(not_memfd, "/plugins/one.so"));
    EXPECT_TRUE(require_sealed(memfd_copy(BH_TEST_WHICH_1, true), "/plugins/one.so"));
}

TEST(VerifiedLoad, ALoadFailureNamesThePlugin)
{
    Fd memfd(memfd_create("not-elf", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_EQ(write(memfd.get(), "not an ELF file", 15), 15);
    auto loaded = dlopen_memfd(std::move(memfd), "/plugins/broken.so");
    ASSERT_FALSE(loaded);
    EXPECT_EQ(loaded.error().code, -ENOEXEC);
    EXPECT_NE(loaded.error().message.find("cannot load /plugins/broken.so"), std::string::npos);
}

} // namespace bh::host
