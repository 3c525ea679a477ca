// dlopen of a verified, sealed memfd. No verification here: the service did it (plugin-verify).
#include "host/verified-load.h"

#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>

namespace bh::host {

Status require_sealed(const Fd& memfd, const std::string& path)
{
    constexpr int needed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
    int seals = fcntl(memfd.get(), F_GET_SEALS);
    if (seals < 0)
        return Error::from_errno(errno, "the service sent no sealed memfd for " + path);
    if ((seals & needed) != needed)
        return Error { -EPERM, "the service sent a memfd for " + path + " that can still change" };
    return {};
}

Result<void*> dlopen_memfd(const Fd& memfd, const std::string& path)
{
    // Through the fd, never the name: nothing is looked up by path after the check, so a file
    // swapped in at any moment is never what gets loaded.
    std::string fd_path = "/proc/self/fd/" + std::to_string(memfd.get());
    void* library = dlopen(fd_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library)
        return Error { -ENOEXEC, std::string("cannot load ") + path + ": " + dlerror() };
    // Give the loaded object its real name, for dladdr (plugins find files beside themselves)
    // and debuggers: l_name is the public name field of the link map (<link.h>), and we never
    // dlclose a plugin. Its ELF constructors, which ran inside dlopen, saw the fd path.
    link_map* map = nullptr;
    if (dlinfo(library, RTLD_DI_LINKMAP, &map) == 0 && map)
        map->l_name = strdup(path.c_str());
    return library;
}

} // namespace bh::host
