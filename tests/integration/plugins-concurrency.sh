#!/usr/bin/env bash
# Plugin concurrency (docs/design/concurrency.md): plugin threads calling the service at once,
# from outside hooks, during teardown, before the first hook and after a failed load; two
# sessions' hooks of one plugin never overlapping. The fixture's concurrency modes
# (tests/plugins/test-plugin.c) against a fresh service per case.
#
#   plugins-concurrency.sh ISOLATION [CASE...]     ISOLATION: process or none; default: every case
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

CASES=(
  ConcurrentCallbacks SlowCallbackDoesNotBlockOthers AsyncApiCallFromWorker
  CallbacksDuringTerminationDoNotCrash TwoSessionsAtOnce ThreadBeforeFirstHook ThreadAfterEntryFailure
  StuckCallbackCancelledByTeardown HammerThroughShutdown TimedOutPluginGetsNoQueuedHook
  StartDuringShutdownRefused ShutdownAllKeepsPluginsServed
)

if [ "${1:-}" != --case ]; then
  isolation=${1:?usage: plugins-concurrency.sh process|none [CASE...]}
  shift
  exec "$HERE/plugins-run-cases.sh" "$0" "$isolation" "${@:-${CASES[@]}}"
fi

# ---- one case: plugins-concurrency.sh --case ISOLATION CASE ----
ISOLATION=$2
CASE=$3
source "$HERE/lib.sh"
trap '__rc=$?; set +e; shrink_daemon_log; (exit $__rc); cleanup' EXIT

FATAL="A fatal error was returned by plugin 'test-plugin'"
START_OP=Bulkhead/Service/StartDistribution

# The fixture in MODE, the busybox distribution "alpha" registered (before any VM exists).
setup() {
  install_test_plugin "$1" test-plugin "$ISOLATION"
  [ -z "${HOOK_TIMEOUT_S:-}" ] || printf 'hook_timeout_s = %s\n' "$HOOK_TIMEOUT_S" >>"$T/cfg/plugins.d/test-plugin.toml"
  [ -z "${STRESS_CALLS:-}" ] || printf 'stress_calls=%s\n' "$STRESS_CALLS" >>"$T/plugins/fixture.conf"
  [ -z "${WORKER_ROUNDS:-}" ] || printf 'worker_rounds=%s\n' "$WORKER_ROUNDS" >>"$T/plugins/fixture.conf"
  start_service
  bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
}

# Uid $OTHER_UID registers "mine" from the shared busybox tar archive.
register_other_user() {
  bh_other register mine --tar "$ROOTFS_TAR" --package test-pkg >/dev/null
}

# Root starts alpha and uid $OTHER_UID starts mine, at once: exit codes in ROOT_RC and OTHER_RC,
# output in $T/root.out and $T/other.out.
start_both_users() {
  local root_pid other_pid
  ROOT_RC=0 OTHER_RC=0
  bh start alpha >"$T/root.out" 2>&1 & root_pid=$!
  bh_other start mine >"$T/other.out" 2>&1 & other_pid=$!
  wait $root_pid || ROOT_RC=$?
  wait $other_pid || OTHER_RC=$?
}

uuid_of() { bh list --json | jq -r --arg name "$1" 'first(.[] | select(.name == $name) | .uuid) // error("no distribution \($name)")'; }
vm_created() { echo "VM created (session_id=$1, uid=0, gid=0, user_name=root, custom_config_flags=0)"; }

# The service is still the one we started, and serves a new VM.
expect_service_serves() {
  kill -0 "$SVC_PID" 2>/dev/null || fail "bulkheadd (pid $SVC_PID) is gone"
  process_gone "$SVC_PID" && fail "bulkheadd (pid $SVC_PID) is a zombie"
  local out
  out=$(bh run -- true 2>&1) || fail "'bulkhead run -- true' failed after $1: $out"
  kill -0 "$SVC_PID" 2>/dev/null || fail "bulkheadd (pid $SVC_PID) is gone after 'bulkhead run'"
}

# ---- cases ----

case_ConcurrentCallbacks() {
  # 32 threads calling at once, each 40 times (10 under a sanitizer: ThreadSanitizer makes each
  # call some 20 times slower, and 320 calls from 32 threads interleave as much as 1,280 do); the
  # hook's deadline is raised, as the calls all run inside one on_vm_started.
  local calls=40
  [ -z "${BULKHEAD_SANITIZER:-}" ] || calls=10
  STRESS_CALLS=$calls HOOK_TIMEOUT_S=300 setup ConcurrentCallbacks
  local start=$SECONDS
  bh start alpha
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=ConcurrentCallbacks, api_version=*)
$(vm_created "$sid")
Concurrent callbacks complete: success=4 failures=0 maxConcurrent=4
Concurrent rounds: *
Stress complete: success=$((32 * calls)) failures=0
Stress elapsed: * ms (32 threads x $calls execute_binary /bin/true)
Distribution started (*)
EOF
  local i
  for i in 0 1 2 3; do
    bh vm exec -- test -e "/concurrent/$i/fixture.conf" || fail "the mount at /concurrent/$i is not in the VM"
  done
  echo "note: $(grep '^Concurrent rounds' "$PLUGIN_LOG") (until 4 calls overlapped); $(grep '^Stress elapsed' "$PLUGIN_LOG"); bulkhead start took $((SECONDS - start)) s"
  bh shutdown
  expect_service_serves "the stress"
}

case_SlowCallbackDoesNotBlockOthers() {
  setup SlowCallbackDoesNotBlockOthers
  bh start alpha
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=SlowCallbackDoesNotBlockOthers, api_version=*)
$(vm_created "$sid")
completed: fast (result=OK, output=fast)
completed: fast (result=OK, output=fast)
completed: fast (result=OK, output=fast)
completed: slow (result=OK, output=slow)
Completion order: fast fast fast slow
Distribution started (*)
EOF
}

case_AsyncApiCallFromWorker() {
  setup AsyncApiCallFromWorker
  bh start alpha
  local sid uuid; sid=$(root_session_id); uuid=$(uuid_of alpha)
  # Terminated at once: the worker's call may come before or while on_distribution_stopping runs
  # (which waits for it); either way it must be served, and nothing may deadlock.
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout 60 "$BIN/bulkhead" terminate alpha ||
    fail "terminate failed or hung (exit $?)"
  local call="execute_binary_in_distribution(session_id=$sid, id=$uuid, path=/bin/echo, argv=echo hello-from-worker) -> OK"
  wait_for_lines 1 '^Async worker output: ' "$PLUGIN_LOG"
  grep -qxF "$call" "$PLUGIN_LOG" || fail "no '$call' line in: $(cat "$PLUGIN_LOG")"
  grep -qxF "Async worker output: hello-from-worker" "$PLUGIN_LOG" ||
    fail "the worker's output is not 'hello-from-worker': $(cat "$PLUGIN_LOG")"
  # The hook joined the worker: its output line follows the stopping line.
  sed -n '/^Distribution stopping /,$p' "$PLUGIN_LOG" | grep -xF "Async worker output: hello-from-worker" >/dev/null ||
    fail "the output line does not follow 'Distribution stopping': $(cat "$PLUGIN_LOG")"
  expect_eq "$(bh list --running --json)" "[]" "no distribution may be running"
  if [ "$(grep -n -m1 -F "$call" "$PLUGIN_LOG" | cut -d: -f1)" -lt "$(grep -n -m1 '^Distribution stopping ' "$PLUGIN_LOG" | cut -d: -f1)" ]; then
    echo "note: the worker's call came before on_distribution_stopping"
  else
    echo "note: the worker's call came while on_distribution_stopping waited for it"
  fi
  expect_service_serves "terminate"
}

case_CallbacksDuringTerminationDoNotCrash() {
  # Workers on the first distribution only: the second VM is there to show the service serves,
  # and under ThreadSanitizer 4 threads spawning without pause starved its run past 10 minutes
  # (each spawn in the agent copies a TSan-sized address space).
  WORKER_ROUNDS=1 setup CallbacksDuringTermination
  bh start alpha
  sleep 1
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout 60 "$BIN/bulkhead" shutdown ||
    fail "shutdown failed or hung (exit $?)"
  wait_for_lines 1 '^Termination call results: ' "$PLUGIN_LOG"
  local results; results=$(grep '^Termination call results: ' "$PLUGIN_LOG" | head -n 1)
  echo "note: $results"
  echo "note: hook order: $(grep -oE '^(Distribution started|Distribution stopping|VM created|VM stopping|Termination call results)' "$PLUGIN_LOG" | paste -sd, -)"
  local field name count ok=0
  for field in ${results#Termination call results: }; do
    name=${field%%=*} count=${field#*=}
    case $name in
      total) ;;
      OK) ok=$count ;;
      BH_E_VM_NOT_RUNNING | BH_E_DISTRO_NOT_RUNNING | BH_E_SESSION_NOT_FOUND) ;;
      *) fail "a call during termination returned $name ($count times): $results" ;;
    esac
  done
  [ "$ok" -gt 0 ] || fail "no call succeeded while the distribution ran: $results"
  expect_service_serves "the shutdown"
  bh shutdown # the new VM's workers, joined before the service stops
}

# A callback stuck inside the service when the VM is torn down: the distribution's init is
# stopped (SIGSTOP), so the plugin's execute_binary_in_distribution waits on an agent that never
# answers. `bulkhead shutdown` must not wait for it: the call is cancelled with
# BH_E_VM_NOT_RUNNING, the shutdown completes, and the service serves the next VM.
case_StuckCallbackCancelledByTeardown() {
  setup StuckCallback
  bh start alpha
  local init p
  for p in $(process_tree "$SVC_PID"); do
    [ "$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)" = "bulkhead-vminit distribution alpha " ] && init=$p
  done
  [ -n "${init:-}" ] || fail "no init process for alpha among the service's descendants"
  kill -STOP "$init"
  touch "$T/plugins/go"
  wait_for_lines 1 '^Stuck call started$' "$PLUGIN_LOG"
  sleep 0.5
  grep -q '^Stuck call returned' "$PLUGIN_LOG" && fail "the call returned while the agent was stopped: $(cat "$PLUGIN_LOG")"
  expect_eq "$(status_field '.sessions | length')" 1 "status answers while the call is stuck"
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout 30 "$BIN/bulkhead" shutdown ||
    fail "shutdown failed or waited for the stuck call (exit $?)"
  wait_for_lines 1 '^Stuck call returned ' "$PLUGIN_LOG"
  local returned; returned=$(grep '^Stuck call returned ' "$PLUGIN_LOG")
  echo "note: $returned"
  expect_eq "$returned" "Stuck call returned BH_E_VM_NOT_RUNNING (out_fd=-1)" "the stuck call's result"
  process_gone "$init" || fail "the stopped init $init outlived the VM"
  expect_service_serves "the shutdown"
}

# Plugin threads calling the API without pause, never told to stop, through `bulkhead shutdown`
# (calls fail cleanly once the distribution and the VM are gone) and then through the service's
# own exit (SIGTERM) while they are inside the stubs: the service exits 0, the host goes with it,
# and no call returns anything but success or a clean error.
case_HammerThroughShutdown() {
  setup HammerThroughShutdown
  bh start alpha
  wait_for_lines 1 '^Hammer result: OK ' "$PLUGIN_LOG"
  sleep 0.5
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout 30 "$BIN/bulkhead" shutdown ||
    fail "shutdown failed or hung (exit $?)"
  wait_for_lines 2 '^Hammer result: ' "$PLUGIN_LOG"
  sleep 0.3
  watch_exits 10 $(service_hosts)
  stop_service
  local name
  for name in $(sed -n 's/^Hammer result: \([^ ]*\) .*/\1/p' "$PLUGIN_LOG"); do
    case $name in
      # ESHUTDOWN: the service closed its connection (in-process: its route) before the end.
      # An isolated host can see it too, between the service hanging up and the host's exit.
      OK | BH_E_VM_NOT_RUNNING | BH_E_DISTRO_NOT_RUNNING | BH_E_SESSION_NOT_FOUND | ESHUTDOWN) ;;
      *) fail "a call through shutdown returned $name: $(grep '^Hammer' "$PLUGIN_LOG")" ;;
    esac
  done
  echo "note: $(grep '^Hammer result: ' "$PLUGIN_LOG" | paste -sd ';' -)"
  await_exits "the plugin hosts, 10 s after the service stopped"
}

case_TwoSessionsAtOnce() {
  setup TwoSessionsAtOnce
  register_other_user
  start_both_users
  [ $ROOT_RC -eq 0 ] || fail "root's start failed (exit $ROOT_RC): $(cat "$T/root.out")"
  [ $OTHER_RC -eq 0 ] || fail "uid $OTHER_UID's start failed (exit $OTHER_RC): $(cat "$T/other.out")"
  expect_eq "$(running_vms)" 2 "both VMs run"
  local sid osid
  sid=$(root_session_id)
  osid=$(status_field "[.sessions[] | select(.uid == $OTHER_UID) | .session_id][0]")
  wait_for_lines 2 '^Distribution started ' "$PLUGIN_LOG"
  ! grep -q overlap "$PLUGIN_LOG" || fail "hooks of one plugin overlapped: $(cat "$PLUGIN_LOG")"
  expect_eq "$(grep -c '^VM created ' "$PLUGIN_LOG")" 2 "VM created lines"
  grep -qxF "$(vm_created "$sid")" "$PLUGIN_LOG" || fail "no VM created line for root: $(cat "$PLUGIN_LOG")"
  grep -qx "VM created (session_id=$osid, uid=$OTHER_UID, gid=$OTHER_UID, user_name=.*, custom_config_flags=0)" \
    "$PLUGIN_LOG" || fail "no VM created line for uid $OTHER_UID: $(cat "$PLUGIN_LOG")"
  local s
  for s in "$sid" "$osid"; do
    grep -qxF "mount_folder(session_id=$s, host_path=$T/plugins, vm_path=/two-sessions, read_only=1, name=two-sessions) -> OK" \
      "$PLUGIN_LOG" || fail "the mount of session $s did not succeed: $(cat "$PLUGIN_LOG")"
  done
  # Each hook's lines stay together: the hooks ran one after the other.
  local sessions; sessions=$(grep -E '^(VM created|mount_folder)' "$PLUGIN_LOG" | sed 's/.*(session_id=\([0-9]*\),.*/\1/')
  expect_eq "$(echo "$sessions" | uniq | wc -l)" 2 "hook lines grouped by session: ${sessions//$'\n'/ }"
  expect_eq "$(bh vm exec -- test -e /two-sessions/fixture.conf && echo yes)" yes "root's VM sees its mount"
}

# Two sessions' on_vm_started queued at one plugin whose first call outlives its deadline: the
# plugin is dead from then on. Both starts fail naming it, and the queued hook never reaches the
# plugin, not even once the late hook has returned (in-process nothing is killed: the hook
# thread's queue is what gets dropped).
case_TimedOutPluginGetsNoQueuedHook() {
  install_test_plugin ReturnLate test-plugin "$ISOLATION"
  # 3 s: time enough for the second user's VM to start and queue its hook behind the first.
  printf 'hook_timeout_s = 3\n' >>"$T/cfg/plugins.d/test-plugin.toml"
  start_service
  bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
  register_other_user
  start_both_users
  [ $ROOT_RC -ne 0 ] || fail "root's start succeeded past the plugin's deadline"
  [ $OTHER_RC -ne 0 ] || fail "uid $OTHER_UID's start succeeded past the plugin's deadline"
  grep -qxF "$FATAL" "$T/root.out" || fail "root's start does not name the plugin: $(cat "$T/root.out")"
  grep -qxF "$FATAL" "$T/other.out" || fail "uid $OTHER_UID's start does not name the plugin: $(cat "$T/other.out")"
  expect_eq "$(plugin_field state)" crashed "plugin state"
  # Both hooks reached the plugin (not the latch failing the second start): each met its own
  # deadline, or was dropped with the plugin (logged as such, possibly just before its deadline).
  local unanswered; unanswered=$(grep -cE "timed out in on_vm_started|on_vm_started got no answer" "$T/daemon.log")
  [ "$unanswered" -ge 2 ] || fail "only $unanswered on_vm_started call ended without an answer: the second start never reached the plugin"
  if [ "$ISOLATION" = none ]; then
    DEADLINE=10 wait_for_lines 1 '^on_vm_started returned late ' "$PLUGIN_LOG"
    sleep 1 # a queued hook would run at once now
  else
    sleep 4 # past the late return, had the host not been killed
    ! grep -q '^on_vm_started returned late ' "$PLUGIN_LOG" || fail "the timed-out host lived on"
  fi
  expect_eq "$(grep -c '^VM created ' "$PLUGIN_LOG")" 1 "on_vm_started calls the plugin saw: $(cat "$PLUGIN_LOG")"
  expect_eq "$(running_vms)" 0 "no VM may be left running"
}

# A start that arrives while the service is shutting down (here: while a plugin's on_vm_stopping
# takes three seconds) is refused with ESHUTDOWN; no VM is created behind the shutdown's back.
case_StartDuringShutdownRefused() {
  setup StopSlowly
  bh start alpha
  kill -TERM "$SVC_PID"
  DEADLINE=10 wait_for_lines 1 '^VM stopping ' "$PLUGIN_LOG"
  expect_error ESHUTDOWN "the service is shutting down" bh start alpha
  bh status >/dev/null || fail "status failed while the service shuts down"
  wait "$SVC_PID" || fail "bulkheadd exited with status $? after SIGTERM"
  SVC_PID=
  grep -q '^on_vm_stopping returned ' "$PLUGIN_LOG" || fail "the slow on_vm_stopping was cut short: $(cat "$PLUGIN_LOG")"
  expect_eq "$(grep -c '^VM created ' "$PLUGIN_LOG")" 1 "VMs created: $(cat "$PLUGIN_LOG")"
}

# `bulkhead shutdown --all` stops every VM but not the service: the next VM starts, and the
# plugin's calls in it are served (the route to the service stays open).
case_ShutdownAllKeepsPluginsServed() {
  setup Success
  bh run -- true
  bh shutdown --all
  expect_eq "$(running_vms)" 0 "VMs running after shutdown --all"
  bh run -- true || fail "a run after shutdown --all failed"
  local mounts; mounts=$(grep '^mount_folder(' "$PLUGIN_LOG" | sed 's/.* -> //')
  expect_eq "$(echo $mounts)" "OK OK" "the plugin's mount in each VM"
}

# The thread's line: execute_binary with session 1 before or during the first hook.
entry_call_line() { grep '^execute_binary(session_id=1, path=/bin/true, argv=true) -> ' "$PLUGIN_LOG" || true; }

case_ThreadBeforeFirstHook() {
  setup ThreadBeforeFirstHook
  bh start alpha
  wait_for_lines 1 '^execute_binary\(session_id=1, path=/bin/true, argv=true\) -> ' "$PLUGIN_LOG"
  local line; line=$(entry_call_line)
  echo "note: $line"
  case $line in
    *"-> BH_E_SESSION_NOT_FOUND (out_fd=-1)" | *"-> BH_E_VM_NOT_RUNNING (out_fd=-1)") ;;
    *) fail "unexpected result for a call before the first hook: $line" ;;
  esac
  expect_eq "$(plugin_field state)" running "plugin state"
  grep -q '^Distribution started ' "$PLUGIN_LOG" || fail "no Distribution started line: $(cat "$PLUGIN_LOG")"
  bh shutdown
  expect_service_serves "a call before the first hook"
}

case_ThreadAfterEntryFailure() {
  setup ThreadAfterEntryFailure
  expect_failure_output "$FATAL" "Error code: $START_OP/EINVAL" bh start alpha
  expect_eq "$(plugin_field state)" "failed to load" "plugin state"
  [ "$ISOLATION" = none ] || wait_no_service_hosts 5
  # In-process, the thread lives on in the service: give it time to call, then the service must
  # still serve (every VM creation fails the same way: the failed load is latched).
  sleep 1
  echo "note: the thread's call: $(entry_call_line)"
  local line; line=$(entry_call_line)
  case $line in
    "" | *"-> BH_E_SESSION_NOT_FOUND (out_fd=-1)" | *"-> BH_E_VM_NOT_RUNNING (out_fd=-1)") ;;
    *) fail "unexpected result for a call from a plugin that failed to load: $line" ;;
  esac
  kill -0 "$SVC_PID" 2>/dev/null || fail "bulkheadd (pid $SVC_PID) is gone"
  bh status >/dev/null || fail "status failed"
  bh list >/dev/null || fail "list failed"
  expect_failure_output "$FATAL" "Error code: $START_OP/EINVAL" bh start alpha
  expect_eq "$(running_vms)" 0 "no VM may be left running"
}

declare -F "case_$CASE" >/dev/null || fail "no case '$CASE'"
"case_$CASE"
echo "plugins-concurrency ($ISOLATION) $CASE: ok"
