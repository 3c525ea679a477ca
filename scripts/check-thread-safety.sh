#!/usr/bin/env bash
# Clang's thread-safety analysis over every source of ours (base/mutex.h says what it checks),
# with the flags of build directory $1's compile_commands.json; and no lock outside base/mutex.h.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
commands="$build/compile_commands.json"
[ -f "$commands" ] || { echo "check-thread-safety: no $commands (configure $build first)" >&2; exit 1; }

# Every lock is a bh::Mutex, so the analysis sees every lock.
if grep -rnE 'std::(mutex|shared_mutex|recursive_mutex|condition_variable|lock_guard|unique_lock|scoped_lock)\b' \
    src --include='*.cpp' --include='*.h' | grep -vE '^src/base/mutex.h:|^[^:]+:[0-9]+: *//'; then
  echo "check-thread-safety: use bh::Mutex, MutexLock and CondVar (base/mutex.h), which the analysis sees" >&2
  exit 1
fi

# The analysis is on: a fixture that touches guarded state without its lock must be refused.
flags="-std=c++20 -fsyntax-only -Wno-everything -Wthread-safety -Werror=thread-safety"
if clang++ $flags -Isrc tests/unit/fixtures/thread-safety-violation.cpp 2>/dev/null; then
  echo "check-thread-safety: clang++ accepted tests/unit/fixtures/thread-safety-violation.cpp: the analysis is off" >&2
  exit 1
fi

# g++'s command for each source of src/, run by clang++ for the analysis only.
jq -r --arg src "$PWD/src/" '.[] | select(.file | startswith($src)) | .command' "$commands" \
  | sed -E 's|^[^ ]+ |clang++ |; s| -o [^ ]+| |; s| -Werror| |g; s| -Wno-maybe-uninitialized| |' \
  | sed -E "s|\$| $flags|" \
  | xargs -d '\n' -P "${JOBS:-2}" -I{} sh -c '{}'
echo "check-thread-safety: $(jq --arg src "$PWD/src/" '[.[] | select(.file | startswith($src))] | length' "$commands") sources analysed, no finding"
