// Waiting for a process to exit on a KJ event loop, through its pidfd.
#pragma once

#include <kj/async-unix.h>

namespace bh::ipc {

// Resolves once the process behind `pidfd` has exited (the pidfd polls readable). Works for
// processes that are not our children too. `pidfd` must stay open until the promise resolves.
kj::Promise<void> when_exited(kj::UnixEventPort& port, int pidfd);

} // namespace bh::ipc
