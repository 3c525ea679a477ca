// open_own_program: /proc/self/exe's directory, then a relative libexec directory.
#include "base/own-program.h"

#include <cerrno>
#include <climits>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace bh {

Result<Fd> open_own_program(const char* name, const char* installed_reldir)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return Error::from_errno(errno, std::string("cannot read /proc/self/exe to find ") + name);
    std::string dir(self, static_cast<size_t>(n));
    dir.erase(dir.rfind('/'));
    std::string beside = dir + "/" + name;
    std::string installed = dir + "/" + installed_reldir + "/" + name;
    for (const std::string* path : { &beside, &installed }) {
        Fd program(open(path->c_str(), O_PATH | O_CLOEXEC));
        if (program)
            return program;
        if (errno != ENOENT)
            return Error::from_errno(errno, "cannot open " + *path);
    }
    return Error::from_errno(ENOENT, "cannot find " + beside + " nor " + installed);
}

} // namespace bh
