#!/usr/bin/env bash
# Runs the cases of a plugin test script, each as its own process with its own temporary directory
# and service, $PLUGIN_TEST_JOBS at a time (default 2), and prints each case's output and time as
# it ends ("=== ISOLATION CASE: PASS (1.234 s)"; tests/run-ctest.sh lists the slowest).
#   plugins-run-cases.sh SCRIPT ISOLATION CASE...      (SCRIPT --case ISOLATION CASE runs one case)
# Exits 0 when every case passed, 77 when all were skipped (not root), 1 otherwise.
set -uo pipefail
script=$1 isolation=$2
shift 2
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the plugin tests need root (they create namespaces); run them as root" >&2
  exit 77
fi
jobs=${PLUGIN_TEST_JOBS:-2}
out=$(mktemp -d /tmp/bulkhead-plugin-cases.XXXXXX)
trap 'rm -rf "$out"' EXIT
declare -A pid_of_case=() start_of_case=()
passed=() failed=()

finish() { # finish CASE RC
  local c=$1 rc=$2 took
  took=$(elapsed_since "${start_of_case[$c]}")
  echo "=== $isolation $c: $([ "$rc" -eq 0 ] && echo PASS || echo "FAIL (exit $rc)") ($took s)"
  if [ "$rc" -eq 0 ]; then grep '^note:' "$out/$c.log" | sed "s/^/    /" || true; else sed "s/^/    /" "$out/$c.log"; fi
  if [ "$rc" -eq 0 ]; then passed+=("$c"); else failed+=("$c"); fi
}

# Seconds since START (an $EPOCHREALTIME), with milliseconds.
elapsed_since() {
  local now=${EPOCHREALTIME/[.,]/} start=${1/[.,]/}
  local ms=$(((now - start) / 1000))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

declare -A case_of_pid=()
reap_one() { # waits for any case to end (bash >= 5.1: wait -n -p)
  local pid rc=0 c
  wait -n -p pid || rc=$?
  c=${case_of_pid[$pid]}
  unset "case_of_pid[$pid]" "pid_of_case[$c]"
  finish "$c" "$rc"
}

for c in "$@"; do
  while [ ${#pid_of_case[@]} -ge "$jobs" ]; do reap_one; done
  start_of_case[$c]=$EPOCHREALTIME
  BULKHEAD_CASE_RUNNER=1 bash "$script" --case "$isolation" "$c" >"$out/$c.log" 2>&1 &
  pid_of_case[$c]=$!
  case_of_pid[$!]=$c
done
while [ ${#pid_of_case[@]} -gt 0 ]; do reap_one; done

echo "$(basename "$script") $isolation: ${#passed[@]} passed, ${#failed[@]} failed${failed:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
