// dlopen of a verified, sealed memfd. No verification here: the service did it (plugin-verify).
#include "plugin/verified-load.h"

#include "base/mutex.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <forward_list>
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

namespace {

    // What a loaded plugin leaves behind for as long as the process lives (we never dlclose):
    //  - its memfd, open: the loader remembers every object under the name it was opened by,
    //    /proc/self/fd/N, and returns that object again for a later dlopen of the same name.
    //    Were N closed and reused by the next plugin's memfd, dlopen would hand back the first
    //    plugin instead of loading the second (in-process, several plugins share one loader);
    //  - its real name, which the loader's link map points at.
    // Reachable from a global, so that leak checkers see both owned.
    struct Kept {
        Fd memfd;
        std::string name;
    };

    const char* keep(Fd memfd, const std::string& path)
    {
        static Mutex mutex;
        static auto* kept BH_PT_GUARDED_BY(mutex) = new std::forward_list<Kept>; // never destroyed: see above
        MutexLock lock(mutex);
        kept->push_front(Kept { std::move(memfd), path });
        return kept->front().name.c_str();
    }

} // namespace

Result<void*> dlopen_memfd(Fd memfd, const std::string& path)
{
    // Through the fd, never the name: nothing is looked up by path after the check, so a file
    // swapped in at any moment is never what gets loaded.
    std::string fd_path = "/proc/self/fd/" + std::to_string(memfd.get());
    void* library = dlopen(fd_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library)
        return Error { -ENOEXEC, std::string("cannot load ") + path + ": " + dlerror() };
    const char* name = keep(std::move(memfd), path);
    // Give the loaded object its real name, for dladdr (plugins find files beside themselves)
    // and debuggers: l_name is the public name field of the link map (<link.h>). Its ELF
    // constructors, which ran inside dlopen, saw the fd path.
    link_map* map = nullptr;
    if (dlinfo(library, RTLD_DI_LINKMAP, &map) == 0 && map)
        map->l_name = const_cast<char*>(name);
    return library;
}

} // namespace bh::host
