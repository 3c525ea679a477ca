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

# g++'s command for each source of src/, run by clang++ for the analysis only.
jq -r --arg src "$PWD/src/" '.[] | select(.file | startswith($src)) | .command' "$commands" \
  | sed -E 's|^[^ ]+ |clang++ |; s| -o [^ ]+| |; s| -Werror| |g; s| -Wno-maybe-uninitialized| |' \
  | sed -E 's|$| -fsyntax-only -Wno-everything -Wthread-safety -Werror=thread-safety|' \
  | xargs -d '\n' -P "${JOBS:-2}" -I{} sh -c '{}'
echo "check-thread-safety: $(jq --arg src "$PWD/src/" '[.[] | select(.file | startswith($src))] | length' "$commands") sources analysed, no finding"
