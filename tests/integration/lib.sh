# Shared helpers for the integration tests: a private service per test, real binaries, real namespaces.
set -euo pipefail

BIN=${BULKHEAD_BIN:?set BULKHEAD_BIN to the directory holding bulkheadd and bulkhead}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OTHER_UID=4242

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: this test needs root (it creates namespaces and runs a second user); run it as root" >&2
  exit 77
fi

T=$(mktemp -d /tmp/bulkhead-test.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/cfg" "$T/state" "$T/run" "$T/home"
chmod 777 "$T/home"
SVC_PID=
# A command prefix start_service runs bulkheadd through, when a test sets it (vm-limits.sh starts
# the service in a cgroup of its own).
SERVICE_LAUNCHER=()
SANITIZER_REPORT='(Address|Thread|Leak|UndefinedBehavior)Sanitizer|runtime error: '

cleanup() {
  local rc=$?
  if [ -n "$SVC_PID" ] && kill -0 "$SVC_PID" 2>/dev/null; then
    kill -TERM "$SVC_PID" 2>/dev/null || true
    wait "$SVC_PID" 2>/dev/null || true
  fi
  # A sanitizer report from the service, a host or a VM's init (all write to this log) fails the
  # test even when everything else passed.
  if [ $rc -eq 0 ] && [ -f "$T/daemon.log" ] && grep -qE "$SANITIZER_REPORT" "$T/daemon.log"; then
    echo "FAIL: a sanitizer report in the service log" >&2
    rc=1
  fi
  if [ $rc -ne 0 ] && [ -f "$T/daemon.log" ]; then
    echo "--- service log ---" >&2; cat "$T/daemon.log" >&2
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Starts bulkheadd on the private directories and waits for its sd_notify READY=1 (10 s deadline).
start_service() {
  rm -f "$T/notify.sock"
  python3 "$HERE/wait-ready.py" "$T/notify.sock" 10 & local waiter=$!
  while [ ! -S "$T/notify.sock" ]; do sleep 0.01; done
  NOTIFY_SOCKET="$T/notify.sock" "${SERVICE_LAUNCHER[@]}" "$BIN/bulkheadd" --config-dir "$T/cfg" \
    --state-dir "$T/state" --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
  SVC_PID=$!
  wait $waiter || fail "bulkheadd did not report READY=1 within 10 s"
}

# start_service, with NAME=VALUE... added to bulkheadd's environment (e.g. loader variables that
# must not reach a plugin host). start_service_with_env NAME=VALUE...
start_service_with_env() {
  rm -f "$T/notify.sock"
  python3 "$HERE/wait-ready.py" "$T/notify.sock" 10 & local waiter=$!
  while [ ! -S "$T/notify.sock" ]; do sleep 0.01; done
  NOTIFY_SOCKET="$T/notify.sock" env "$@" "$BIN/bulkheadd" --config-dir "$T/cfg" --state-dir "$T/state" \
    --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
  SVC_PID=$!
  wait $waiter || fail "bulkheadd did not report READY=1 within 10 s"
}

stop_service() {
  kill -TERM "$SVC_PID"
  wait "$SVC_PID" || fail "bulkheadd exited with $? on SIGTERM"
  SVC_PID=
}

bh() { BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead" "$@"; }
# The same CLI, run as another user (uid $OTHER_UID).
bh_other() {
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups \
    env BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead" "$@"
}

# bh and bh_other killed after LIMIT seconds (exit status 124), for commands that must not hang:
# a hang then fails the test instead of stalling it. bh_within LIMIT ARGS...
bh_within() {
  local limit=$1; shift
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout "$limit" "$BIN/bulkhead" "$@"
}
bh_other_within() {
  local limit=$1; shift
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups \
    env BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout "$limit" "$BIN/bulkhead" "$@"
}

# FIELD of the plugin NAME (default: the first) in `bulkhead status --json`, read with jq.
plugin_jq() {
  bh status --json | jq -r --arg field "$1" --arg name "${2:-}" \
    '[.plugins[] | select($name == "" or .name == $name)][0][$field]'
}

# The wall clock in milliseconds, for coarse bounds and for reporting how long something took.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

make_rootfs() { "$HERE/../rootfs/make-test-rootfs.sh" "$@"; }

expect_eq() { [ "$1" = "$2" ] || fail "expected '$2', got '$1' ($3)"; }

# Runs a command that must fail with a given "Error code:" line; its stderr must name the problem.
expect_error() {
  local code=$1 pattern=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ $rc -ne 0 ] || fail "'$*' succeeded; expected $code"
  echo "$out" | grep -q "^Error code: .*/$code\$" || fail "'$*': no 'Error code: .../$code' line in: $out"
  echo "$out" | grep -q -- "$pattern" || fail "'$*': message does not match '$pattern': $out"
}

# Waits until "$@" succeeds, polling every 50 ms, for at most $DEADLINE seconds (default 10).
eventually() {
  local end=$((SECONDS + ${DEADLINE:-10}))
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

status_field() { bh status --json | python3 -c "import json,sys; print(eval(sys.argv[1], {'s': json.load(sys.stdin)}))" "$1"; }

distro_dirs() { find "$T/state/distributions" -mindepth 1 -maxdepth 1 | wc -l; }

# ---- Plugins (tests/integration/plugins-*.sh) ----

# The fixture plugin (tests/plugins/test-plugin.c), built into <build>/plugins beside <build>/bin.
TEST_PLUGIN_SO=${BULKHEAD_TEST_PLUGIN:-$BIN/../plugins/test-plugin.so}
PLUGIN_LOG=$T/plugin.log

# Installs a private copy of the fixture plugin in DIR (default $T/plugins) with its fixture.conf
# (mode MODE, log $PLUGIN_LOG), and enables it as $T/cfg/plugins.d/STEM.toml.
# install_test_plugin MODE [NAME [ISOLATION [STEM [DIR]]]]   (ISOLATION: process or none; "" = default)
install_test_plugin() {
  local mode=$1 name=${2:-test-plugin} isolation=${3:-} stem=${4:-${2:-test-plugin}} dir=${5:-$T/plugins}
  [ -f "$TEST_PLUGIN_SO" ] || fail "no fixture plugin at $TEST_PLUGIN_SO (build the test-plugin target)"
  mkdir -p "$dir" "$T/cfg/plugins.d"
  cp "$TEST_PLUGIN_SO" "$dir/test-plugin.so"
  printf 'mode=%s\nlog=%s\n' "$mode" "$PLUGIN_LOG" >"$dir/fixture.conf"
  plugin_toml "$stem" "$dir/test-plugin.so" "$name" "$isolation"
}

# Writes $T/cfg/plugins.d/STEM.toml. plugin_toml STEM PATH [NAME [ISOLATION]] ("" leaves a key out)
plugin_toml() {
  mkdir -p "$T/cfg/plugins.d"
  {
    printf 'path = "%s"\n' "$2"
    [ -z "${3:-}" ] || printf 'name = "%s"\n' "$3"
    [ -z "${4:-}" ] || printf 'isolation = "%s"\n' "$4"
  } >"$T/cfg/plugins.d/$1.toml"
}

# Turns an expected line into a bash pattern in which only * is special.
log_pattern() {
  local p=${1//\\/\\\\}
  p=${p//\[/\\[}; p=${p//\]/\\]}; p=${p//\?/\\?}
  printf '%s' "$p"
}

line_count() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# expect_log FILE <<EOF ... EOF: FILE must hold exactly the expected lines, in order; in each
# expected line * matches any text (everything else is literal). Waits up to $DEADLINE s (default
# 10) for FILE to reach the expected number of lines, then reports the first mismatch, printing
# both files with line numbers.
expect_log() {
  local file=$1 expected_file actual_file i n
  expected_file=$(mktemp "$T/expected.XXXXXX")
  cat >"$expected_file"
  local want; want=$(line_count "$expected_file")
  local end=$((SECONDS + ${DEADLINE:-10}))
  while [ "$(line_count "$file")" -lt "$want" ] && [ $SECONDS -lt $end ]; do sleep 0.05; done
  actual_file=$(mktemp "$T/actual.XXXXXX")
  [ ! -f "$file" ] || cp "$file" "$actual_file"
  local -a exp act
  mapfile -t exp <"$expected_file"
  mapfile -t act <"$actual_file"
  n=${#exp[@]}; [ ${#act[@]} -le "$n" ] || n=${#act[@]}
  local problem=
  for ((i = 0; i < n; i++)); do
    if [ $i -ge ${#act[@]} ]; then
      problem="line $((i + 1)) missing: expected '${exp[i]}'"
    elif [ $i -ge ${#exp[@]} ]; then
      problem="line $((i + 1)) unexpected: '${act[i]}'"
    elif [[ ${act[i]} != $(log_pattern "${exp[i]}") ]]; then
      problem="line $((i + 1)) differs:"$'\n'"  expected: ${exp[i]}"$'\n'"  actual:   ${act[i]}"
    fi
    [ -z "$problem" ] || break
  done
  if [ -n "$problem" ]; then
    {
      echo "--- expected ($file, * = any text) ---"; cat -n "$expected_file"
      echo "--- actual ($file) ---"; cat -n "$actual_file"
    } >&2
    fail "log $file: $problem"
  fi
  rm -f "$expected_file" "$actual_file"
}

# expect_failure_output LINE1 LINE2 COMMAND...: COMMAND must exit non-zero, print nothing on stdout
# and exactly LINE1 and LINE2 on stderr (* in a line matches any text). Leaves stderr in $LAST_STDERR.
expect_failure_output() {
  local line1=$1 line2=$2; shift 2
  local out err rc=0
  out=$(mktemp "$T/stdout.XXXXXX"); err=$(mktemp "$T/stderr.XXXXXX")
  "$@" >"$out" 2>"$err" || rc=$?
  local -a lines
  mapfile -t lines <"$err"
  LAST_STDERR=$(cat "$err")
  [ $rc -ne 0 ] || fail "'$*' succeeded; expected: $line1 / $line2"
  [ ! -s "$out" ] || fail "'$*' printed on stdout: $(cat "$out")"
  if [ ${#lines[@]} -ne 2 ] || [[ ${lines[0]} != $(log_pattern "$line1") ]] ||
    [[ ${lines[1]} != $(log_pattern "$line2") ]]; then
    fail "'$*' (exit $rc) stderr:"$'\n'"$(cat "$err")"$'\n'"expected exactly:"$'\n'"$line1"$'\n'"$line2"
  fi
  rm -f "$out" "$err"
}

# A field of the first plugin (or the one named NAME) in `bulkhead status --json`.
plugin_field() {
  bh status --json | python3 -c '
import json, sys
plugins = json.load(sys.stdin).get("plugins")
if plugins is None:
    sys.exit("status --json has no \"plugins\" array")
match = [p for p in plugins if len(sys.argv) < 3 or p.get("name") == sys.argv[2]]
if not match:
    sys.exit("no plugin %r in status: %r" % (sys.argv[2:], plugins))
print(match[0][sys.argv[1]])' "$@"
}

# For `eventually`: the plugin's (first, or NAME's) state is STATE. plugin_state_is STATE [NAME]
plugin_state_is() { [ "$(plugin_field state ${2:+"$2"})" = "$1" ]; }

# For `eventually`: FILE has at least N lines matching the extended regex RE. lines_at_least N RE FILE
lines_at_least() { [ "$(grep -cE -- "$2" "$3" 2>/dev/null)" -ge "$1" ]; }

# The session id of uid 0 from `bulkhead status --json`.
root_session_id() {
  bh status --json | python3 -c '
import json, sys
print([s["session_id"] for s in json.load(sys.stdin)["sessions"] if s["uid"] == 0][0])'
}

# Number of sessions whose VM runs.
running_vms() {
  bh status --json | python3 -c '
import json, sys
print(sum(1 for s in json.load(sys.stdin)["sessions"] if s["vm_running"]))'
}

# True when no process PID runs any more (gone, or a zombie waiting for its reaper).
process_gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

# Pids (as the test sees them) of live, non-zombie processes whose environment holds NAME=VALUE.
processes_with_env() {
  local needle="$1=$2" p
  for p in /proc/[0-9]*; do
    [ -r "$p/environ" ] || continue
    grep -qzxF -- "$needle" "$p/environ" 2>/dev/null || continue
    [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" != Z ] || continue
    echo "${p#/proc/}"
  done
}

# Pids of live processes whose command line names PROGRAM and which mention TEXT in their command
# line or their memory maps (e.g. a plugin host that loaded a plugin from our temporary directory).
processes_mentioning() {
  local program=$1 text=$2 p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$program" || continue
    { tr '\0' ' ' <"$p/cmdline"; cat "$p/maps"; } 2>/dev/null | grep -qF -- "$text" || continue
    [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" != Z ] || continue
    echo "${p#/proc/}"
  done
}

# PID and all its descendants, as pids.
process_tree() {
  ps -e -o pid=,ppid= | python3 -c '
import sys
root = int(sys.argv[1]); children = {}
for line in sys.stdin:
    pid, ppid = map(int, line.split()); children.setdefault(ppid, []).append(pid)
todo, seen = [root], []
while todo:
    p = todo.pop(); seen.append(p); todo += children.get(p, [])
print(" ".join(map(str, seen)))' "$1"
}

# Live plugin host processes among the service's descendants.
service_hosts() {
  local p
  for p in $(process_tree "$SVC_PID"); do
    [ "$p" != "$SVC_PID" ] && ! process_gone "$p" || continue
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -q '^bulkhead-pluginhost' && echo "$p"
  done
  true
}
no_service_hosts() { [ -z "$(service_hosts)" ]; }

# ---- A plugin whose load never ends (fixture modes EntryHangs and EntrySpins) ----

# The fixture in MODE with hook_timeout_s = 2, the busybox distribution registered as "alpha" for
# root and as "mine" for $OTHER_UID, nothing loaded yet. setup_endless_load MODE ISOLATION
setup_endless_load() {
  install_test_plugin "$1" test-plugin "$2"
  printf 'hook_timeout_s = 2\n' >>"$T/cfg/plugins.d/test-plugin.toml"
  make_rootfs "$T/rootfs" "$T/rootfs.tar"
  chmod 644 "$T/rootfs.tar"
  start_service
  bh register alpha --rootfs "$T/rootfs" >/dev/null
  bh_other register mine --tar "$T/rootfs.tar" >/dev/null
}

# Starts root's `start alpha` and the other user's `run -- true` (each killed after 30 s), which
# both wait for the one activation, and waits until the plugin logs LINE; then status must say
# "loading" and list must answer. Sets LOADING_HOST to the host's pid status shows meanwhile.
begin_endless_load() {
  LOAD_T0=$(now_ms)
  bh_within 30 start alpha >"$T/start.out" 2>"$T/start.err" & LOAD_START=$!
  bh_other_within 30 run -- true >"$T/other.out" 2>"$T/other.err" & LOAD_OTHER=$!
  DEADLINE=10 eventually grep -qs "^$1" "$PLUGIN_LOG"
  expect_eq "$(plugin_jq state)" loading "plugin state while its entry point has not returned"
  LOADING_HOST=$(plugin_jq pid)
  bh list >/dev/null || fail "list failed while an entry point has not returned"
}

# Both commands of begin_endless_load must fail with the plugin named and ETIMEDOUT, 2 to 15 s
# after they started; status must then say "failed to load" and name the entry point.
expect_load_timed_out() {
  local rc=0 other_rc=0 took fatal="A fatal error was returned by plugin 'test-plugin'"
  wait "$LOAD_START" || rc=$?
  took=$(($(now_ms) - LOAD_T0))
  wait "$LOAD_OTHER" || other_rc=$?
  echo "note: start failed after $took ms (hook_timeout_s = 2)"
  [ $rc -ne 124 ] || fail "bulkhead start still hung after 30 s"
  [ $other_rc -ne 124 ] || fail "the other user's run still hung after 30 s"
  [ "$took" -ge 2000 ] && [ "$took" -lt 15000 ] || fail "the start failed after $took ms; expected 2 to 15 s"
  expect_eq "$(cat "$T/start.err")" "$fatal"$'\n'"Error code: Bulkhead/Service/StartDistribution/ETIMEDOUT" \
    "start output"
  expect_eq "$(cat "$T/other.err")" "$fatal"$'\n'"Error code: Bulkhead/Service/RunProgram/ETIMEDOUT" \
    "the other user's run"
  expect_eq "$(plugin_jq state)" "failed to load" "plugin state after the deadline"
  expect_eq "$(plugin_jq cause)" "its entry point bh_plugin_entry_v1 did not return within 2 s (hook_timeout_s)" \
    "plugin cause"
}

# Keeps the head and tail of a service log that a test flooded, so a failure report stays readable.
shrink_daemon_log() {
  local log=$T/daemon.log size
  [ -f "$log" ] || return 0
  size=$(stat -c %s "$log")
  [ "$size" -gt 400000 ] || return 0
  { head -c 100000 "$log"; printf '\n[... %s bytes left out by the test ...]\n' "$size"; tail -c 100000 "$log"; } \
    >"$log.short"
  mv "$log.short" "$log"
}

# What the fixture's Success mode logs from on_vm_started of session SID: its own folder mounted
# read-only, a file written from the host and read back in the VM, the mount proven read-only,
# and stdin echoed through the exec socket.
success_vm_started_lines() {
  local sid=$1
  cat <<EOF
mount_folder(session_id=$sid, host_path=$T/plugins, vm_path=/test-plugin/deep/folder, read_only=1, name=test-plugin) -> OK
write $T/plugins/hello -> OK
execute_binary(session_id=$sid, path=/bin/cat, argv=cat /test-plugin/deep/folder/hello) -> OK
output: OK
execute_binary(session_id=$sid, path=/bin/sh, argv=sh -c if touch /test-plugin/deep/folder/probe *) -> OK
output: read-only
execute_binary(session_id=$sid, path=/bin/cat, argv=cat) -> OK
output: ping
EOF
}
