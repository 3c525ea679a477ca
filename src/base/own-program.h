// open_own_program: where one of Bulkhead's helper programs is, found from the running program.
#pragma once

#include "base/fd.h"
#include "base/result.h"

namespace bh {

// An O_PATH fd of the helper program `name` (for SpawnPlan::exec_fd): beside the running program
// (the build tree), else in `installed_reldir` relative to the running program's directory (an
// installed tree, where the path is relative so the tree may move to another prefix). -ENOENT
// naming both places when it is in neither.
Result<Fd> open_own_program(const char* name, const char* installed_reldir);

} // namespace bh
