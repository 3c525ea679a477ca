# Shared helpers for the integration tests: a private service per test, real binaries, real namespaces.
set -euo pipefail

BIN=${BULKHEAD_BIN:?set BULKHEAD_BIN to the directory holding bulkheadd and bulkhead}
# Where bulkheadd is: beside the CLI in a build tree, sbin in an installed one (install.sh).
SBIN=$BIN
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OTHER_UID=4242

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: this test needs root (it creates namespaces and runs a second user); run it as root" >&2
  exit 77
fi

# Built by tests/CMakeLists.txt beside the binaries (ctest passes their paths).
HELPER=${BULKHEAD_TEST_HELPER:-$BIN/../test-tools/bh-test-helper}
[ -x "$HELPER" ] || { echo "FAIL: no $HELPER (build the bh-test-helper target)" >&2; exit 1; }
# The read-only fixtures every test shares (tests/make-test-fixtures.sh): built once per ctest
# run by the "fixtures" test, or here when a test runs on its own.
FIXTURES=${BULKHEAD_TEST_FIXTURES:-$BIN/../test-fixtures}
if [ ! -f "$FIXTURES/complete" ]; then
  flock "$(dirname "$FIXTURES")" bash -c '[ -f "$1/complete" ] || "$2" "$1" >/dev/null' _ \
    "$FIXTURES" "$HERE/../make-test-fixtures.sh" || { echo "FAIL: cannot build the fixtures in $FIXTURES" >&2; exit 1; }
fi
ROOTFS=$FIXTURES/rootfs     # the busybox distribution root: register it, never write to it
ROOTFS_TAR=$FIXTURES/rootfs.tar
TEST_KEYS=$FIXTURES/keys    # Ed25519 keys: NAME.pem (private) and NAME.pub.pem, NAME team or stranger

T=$(mktemp -d /tmp/bulkhead-test.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/cfg" "$T/state" "$T/run" "$T/home"
chmod 777 "$T/home"
SVC_PID=
# A command prefix start_service runs bulkheadd through, when a test sets it (vm-limits.sh starts
# the service in a cgroup of its own).
SERVICE_LAUNCHER=()
# Options start_service passes to bulkheadd before the directories (journal.sh: --log-level).
SERVICE_ARGS=()
SANITIZER_REPORT='(Address|Thread|Leak|UndefinedBehavior)Sanitizer|runtime error: '

TEST_START=$EPOCHREALTIME

# True while $SVC_PID is still the bulkheadd this test started: its child, named bulkheadd. A
# service that ended by itself frees its pid, which another test's process may get (pid_max is
# small, tests run in parallel): that one must never be signalled.
service_is_ours() {
  [ -n "$SVC_PID" ] || return 1
  local stat
  stat=$(cat "/proc/$SVC_PID/stat" 2>/dev/null) || return 1
  local rest=${stat##*) } comm=${stat#*(}
  comm=${comm%)*}
  set -- $rest
  [ "$comm" = bulkheadd ] && [ "$2" = "$$" ] && [ "$1" != Z ]
}

cleanup() {
  local rc=$?
  if service_is_ours; then
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
  # A service killed with SIGKILL leaves its staging mounts (<runtime-dir>/vm-mounts): its next
  # start would remove them; this test's directory goes now.
  umount -R -l "$T/run/vm-mounts" 2>/dev/null || true
  rm -rf "$T"
  # A whole script is one case: its time, as plugins-run-cases.sh prints each case's.
  if [ -z "${BULKHEAD_CASE_RUNNER:-}" ]; then
    local ms=$(((${EPOCHREALTIME/[.,]/} - ${TEST_START/[.,]/}) / 1000))
    printf '=== %s: %s (%d.%03d s)\n' "$(basename "$0" .sh)" "$([ $rc -eq 0 ] && echo PASS || echo "FAIL (exit $rc)")" \
      $((ms / 1000)) $((ms % 1000))
  fi
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Starts bulkheadd on the private directories and waits for its sd_notify READY=1 (10 s deadline):
# the helper binds the notify socket and says so, then says READY when the datagram comes.
start_service() { start_service_with_env; }

# start_service, with NAME=VALUE... added to bulkheadd's environment (e.g. loader variables that
# must not reach a plugin host). start_service_with_env [NAME=VALUE...]
start_service_with_env() {
  rm -f "$T/notify.sock"
  local ready line=
  exec {ready}< <(exec "$HELPER" ready-wait "$T/notify.sock" 10)
  read -r -u "$ready" line || true
  [ "$line" = listening ] || { exec {ready}<&-; fail "cannot listen for sd_notify on $T/notify.sock"; }
  NOTIFY_SOCKET="$T/notify.sock" "${SERVICE_LAUNCHER[@]}" env "$@" "$SBIN/bulkheadd" "${SERVICE_ARGS[@]}" --config-dir "$T/cfg" \
    --state-dir "$T/state" --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
  SVC_PID=$!
  line=
  read -r -u "$ready" line || true
  exec {ready}<&-
  [ "$line" = READY ] || fail "bulkheadd did not report READY=1 within 10 s"
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

# A private, writable copy of the shared busybox root (most tests register $ROOTFS itself).
# make_rootfs DIR [TAR]
make_rootfs() {
  cp -a "$ROOTFS" "$1"
  [ $# -lt 2 ] || cp "$ROOTFS_TAR" "$2"
}

expect_eq() { [ "$1" = "$2" ] || fail "expected '$2', got '$1' ($3)"; }

# Runs a command that must fail with a given "Error code:" line; its stderr must name the problem.
expect_error() {
  local code=$1 pattern=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ $rc -ne 0 ] || fail "'$*' succeeded; expected $code"
  grep -q "^Error code: .*/$code\$" <<<"$out" || fail "'$*': no 'Error code: .../$code' line in: $out"
  grep -q -- "$pattern" <<<"$out" || fail "'$*': message does not match '$pattern': $out"
}

# Waits until "$@" succeeds, polling every 50 ms, for at most $DEADLINE seconds (default 10). For
# a state only a query shows; a process's exit is waited for with wait_gone, a file with expect_log.
eventually() {
  local end=$((SECONDS + ${DEADLINE:-10}))
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

# For eventually: succeeds when CMD's output is EXPECTED. `eventually [ "$(cmd)" = x ]` would
# run cmd once, when eventually's arguments are expanded; `eventually output_is x cmd` runs it
# on every poll.
output_is() { [ "$("${@:2}")" = "$1" ]; }

# A value from `bulkhead status --json`: status_field JQ-FILTER [JQ-OPTION...], e.g. .pid
status_field() {
  local filter=$1
  shift
  bh status --json | jq -r "$@" "$filter"
}

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
  "$HELPER" wait-lines "$file" "$want" "${DEADLINE:-10}" || true
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
  bh status --json | jq -r --arg field "$1" --arg name "${2:-}" '
    if has("plugins") then .plugins else error("status --json has no \"plugins\" array") end
    | (map(select($name == "" or .name == $name)) | first)
      // error("no plugin \($name) in status: \(.)")
    | if has($field) then .[$field] else error("plugin \(.name) has no field \($field)") end'
}

# For `eventually`: the plugin's (first, or NAME's) state is STATE. plugin_state_is STATE [NAME]
plugin_state_is() { [ "$(plugin_field state ${2:+"$2"})" = "$1" ]; }

# For `eventually`: FILE has at least N lines matching the extended regex RE. lines_at_least N RE FILE
lines_at_least() { [ "$(grep -cE -- "$2" "$3" 2>/dev/null)" -ge "$1" ]; }

# Waits (inotify: no polling) until FILE has at least N lines matching the extended regex RE, for
# at most $DEADLINE seconds (default 10). wait_for_lines N RE FILE
wait_for_lines() {
  "$HELPER" wait-grep "$3" "$1" "$2" "${DEADLINE:-10}" ||
    fail "timed out after ${DEADLINE:-10} s waiting for $1 line(s) matching '$2' in $3"
}

# The session id of uid 0 from `bulkhead status --json`.
root_session_id() {
  bh status --json | jq -r 'first(.sessions[] | select(.uid == 0) | .session_id) // error("no session of uid 0")'
}

# Number of sessions whose VM runs.
running_vms() { status_field '[.sessions[] | select(.vm_running)] | length'; }

# Waits (pidfds: no polling) until every PID has exited, for at most SECONDS; fails naming the
# survivors. Only for processes alive now (their pids are not free for reuse yet); to wait for
# processes that an action ends, watch_exits before the action. wait_gone SECONDS PID...
wait_gone() {
  local seconds=$1 out
  shift
  [ $# -gt 0 ] || return 0
  out=$("$HELPER" wait-exit "$seconds" "$@" | tail -n 1)
  [ "$out" = gone ] || fail "still running after $seconds s: ${out#alive }"
}

# Watches PID... (pidfds, opened before this returns) so that await_exits, after an action, waits
# for these very processes, whatever their pids are reused for meanwhile. With --reaped, a zombie
# still counts as running. One watch at a time. watch_exits [--reaped] SECONDS PID...
watch_exits() {
  local line=
  exec {WATCH_FD}< <(exec "$HELPER" wait-exit "$@")
  read -r -u "$WATCH_FD" line || true
  [ "$line" = watching ] || fail "cannot watch processes $*"
}
# Waits for what watch_exits watches; fails naming the survivors. await_exits WHAT
await_exits() {
  local out=
  read -r -u "$WATCH_FD" out || true
  exec {WATCH_FD}<&-
  [ "$out" = gone ] || fail "$1: still running: ${out#alive }"
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
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -F -- "$program" >/dev/null || continue
    { tr '\0' ' ' <"$p/cmdline"; cat "$p/maps"; } 2>/dev/null | grep -F -- "$text" >/dev/null || continue
    [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" != Z ] || continue
    echo "${p#/proc/}"
  done
}

# PID and all its descendants, as pids.
process_tree() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { children[$2] = children[$2] " " $1 }
    END {
      todo = root; seen = ""
      while ((n = split(todo, level, " ")) > 0) {
        todo = ""
        for (i = 1; i <= n; i++) { seen = seen (seen == "" ? "" : " ") level[i]; todo = todo children[level[i]] }
      }
      print seen
    }'
}

# Live plugin host processes among the service's descendants (not the host template, which
# lives as long as the service: "bulkhead-pluginhost --template").
service_hosts() {
  local p
  for p in $(process_tree "$SVC_PID"); do
    [ "$p" != "$SVC_PID" ] && ! process_gone "$p" || continue
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep '^bulkhead-pluginhost ' | grep -v '^bulkhead-pluginhost --template' >/dev/null && echo "$p"
  done
  true
}
# The host template's pid, or nothing.
host_template_pid() {
  local p
  for p in $(process_tree "$SVC_PID"); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep '^bulkhead-pluginhost --template' >/dev/null && echo "$p"
  done
  true
}
no_service_hosts() { [ -z "$(service_hosts)" ]; }
# Waits until the service has no plugin host left, for at most SECONDS: for the hosts it has (their
# pidfds), then looks again. wait_no_service_hosts SECONDS
wait_no_service_hosts() {
  local end=$((SECONDS + $1)) hosts
  while hosts=$(service_hosts); [ -n "$hosts" ]; do
    [ $SECONDS -lt $end ] || fail "plugin hosts of the service still running after $1 s: $hosts"
    wait_gone $((end - SECONDS + 1)) $hosts
  done
}

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
# The lines the fixture's WslcProcessApi mode logs from on_container_vm_started (the catalog's
# checks of the container-session process and mount API).
process_api_lines() {
  cat <<EOF
missing executable -> ENOENT errno=2
process_get_fd(999) -> EINVAL
exit code while running -> EBUSY
cat -> OK exit=0 (OK) output=fed-through-stdin
exit 12 -> OK exit=12 (OK) output=
envp -> OK exit=0 (OK) output=from-envp
relative mountpoint -> EINVAL
missing host folder -> ENOENT
read-only mount -> OK
write to read-only -> OK exit=0 (OK) output=refused
unmount of a mount not made -> ENOENT
unmount -> OK
unknown session -> BH_E_SESSION_NOT_FOUND
EOF
}

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
