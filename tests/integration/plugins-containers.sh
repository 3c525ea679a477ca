#!/usr/bin/env bash
# The container-session cases of the plugin catalog (the Windows Subsystem for Linux's Wslc* plugin
# tests): the fixture's Wslc* modes against a fresh service each, the same expected logs in both
# isolation modes.
#
#   plugins-containers.sh ISOLATION [CASE...]     ISOLATION: process or none; default: every case
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

CASES=(
  WslcSessionHooks WslcSessionRejected WslcVmNeverStarted WslcVmRestart WslcVmStopCommitted
  ParallelWslcWithCallbacks WslcAsyncCallbackPostReturn WslcAsyncCallbackNoVm WslcProcessApi
  WslcCreateRace
)

if [ "${1:-}" != --case ]; then
  isolation=${1:?usage: plugins-containers.sh process|none [CASE...]}
  shift
  cases=("${@:-${CASES[@]}}")
  # A host that kills itself would take the service with it in-process.
  [ "$isolation" = none ] || [ $# -gt 0 ] || cases+=(WslcHostCrashInCreated WslcHostKilledInCreateProcess)
  exec "$HERE/plugins-run-cases.sh" "$0" "$isolation" "${cases[@]}"
fi

ISOLATION=$2
CASE=$3
source "$HERE/lib.sh"
trap '__rc=$?; set +e; shrink_daemon_log; (exit $__rc); cleanup' EXIT

FATAL="A fatal error was returned by plugin 'test-plugin'"
CREATE_OP=Bulkhead/Service/CreateContainerSession

setup() {
  install_test_plugin "$1" test-plugin "$ISOLATION"
  start_service
}
cs() { bh container session "$@"; }
id_of() { cs show "$1" --json | jq -r .session_id; }
# The fields of a "Container session ..." line for session ID named NAME created by PID (root's).
fields() { echo "session_id=$1, name=$2, application_pid=$3, uid=0, gid=0, user_name=root"; }

case_WslcSessionHooks() {
  setup Success
  cs create quiet >/dev/null
  local id; id=$(id_of quiet)
  cs exec quiet -- true
  cs terminate quiet
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=0.2.0)
Container session created (session_id=$id, name=quiet, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=$id, name=quiet)
Container VM stopping (session_id=$id, name=quiet)
Container session stopping (session_id=$id, name=quiet, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

case_WslcSessionRejected() {
  setup WslcSessionRejected
  expect_failure_output "$FATAL" "Error code: $CREATE_OP/EPERM" cs create rejected
  expect_eq "$(cs list --json | jq length)" "0" "a vetoed session is never visible"
  expect_error ENOENT "no container session" cs show rejected
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcSessionRejected, api_version=0.2.0)
Container session created (session_id=1, name=rejected, application_pid=*, uid=0, gid=0, user_name=root)
vetoing the container session
Container session stopping (session_id=1, name=rejected, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

case_WslcVmNeverStarted() {
  setup WslcVmNeverStarted
  cs create lazy >/dev/null
  cs terminate lazy
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcVmNeverStarted, api_version=0.2.0)
Container session created (session_id=1, name=lazy, application_pid=*, uid=0, gid=0, user_name=root)
create_process(/bin/true) in created -> BH_E_VM_NOT_RUNNING errno=0 (process=NULL)
Container session stopping (session_id=1, name=lazy, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

# The VM stops when idle and restarts on the next use; calls made from both VM hooks are served by
# the living VM, also during the final stop (the spec: the VM is alive during on_container_vm_stopping).
case_WslcVmRestart() {
  setup WslcVmRestart
  mkdir "$T/store"
  cs create restart --storage "$T/store" --idle-timeout 0 >/dev/null
  cs exec restart --detach -- sleep 60
  expect_eq "$(cs idle restart)" "The VM was stopped" "the idle trigger stops the VM"
  expect_eq "$(cs idle restart)" "The VM was already idle" "and says so the second time"
  cs exec restart -- true
  timeout 60 "$BIN/bulkhead" --runtime-dir "$T/run" container session terminate restart
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcVmRestart, api_version=0.2.0)
Container session created (session_id=1, name=restart, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=restart)
true -> OK exit=0 (OK) output=
vm_started: true ok, mount ok, unmount ok
Container VM stopping (session_id=1, name=restart)
true -> OK exit=0 (OK) output=
vm_stopping: true ok, mount ok, unmount ok
Container VM started (session_id=1, name=restart)
true -> OK exit=0 (OK) output=
vm_started: true ok, mount ok, unmount ok
Container VM stopping (session_id=1, name=restart)
true -> OK exit=0 (OK) output=
vm_stopping: true ok, mount ok, unmount ok
Container session stopping (session_id=1, name=restart, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

# A call from a plugin thread during on_container_vm_stopping is served by the stopping VM; the
# process the hook kept dies with the VM (its exit fd polls readable, killed: 128 + 9).
case_WslcVmStopCommitted() {
  setup WslcVmStopCommitted
  cs create committed --start-vm >/dev/null
  expect_eq "$(cs idle committed)" "The VM was stopped" "idle"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcVmStopCommitted, api_version=0.2.0)
Container session created (session_id=1, name=committed, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=committed)
Container VM stopping (session_id=1, name=committed)
kept sleep 60 -> OK
stop-window create_process(/bin/true) -> OK exit=0 (OK) output=
leaked sleep: exit fd readable, exit code OK 137
EOF
}

case_ParallelWslcWithCallbacks() {
  setup ParallelWslcWithCallbacks
  cs create first --start-vm >/dev/null &
  local a=$!
  cs create second --start-vm >/dev/null &
  local b=$!
  wait $a || fail "creating the first session failed"
  wait $b || fail "creating the second session failed"
  DEADLINE=20 eventually grep -q '^parallel: ' "$PLUGIN_LOG"
  expect_eq "$(grep '^parallel: ' "$PLUGIN_LOG")" "parallel: 2 of 2 succeeded, max in flight 2" "both calls at once"
}

case_WslcAsyncCallbackPostReturn() {
  setup WslcAsyncCallbackPostReturn
  cs create async --start-vm >/dev/null
  DEADLINE=10 eventually grep -q '^post-return' "$PLUGIN_LOG"
  expect_eq "$(grep '^post-return' "$PLUGIN_LOG")" "post-return create_process(/bin/true) -> OK exit=0 (OK) output=" \
    "a call 200 ms after the hook returned, with a VM"
}

case_WslcAsyncCallbackNoVm() {
  setup WslcAsyncCallbackPostReturn
  cs create async >/dev/null
  DEADLINE=10 eventually grep -q '^post-return' "$PLUGIN_LOG"
  expect_eq "$(grep '^post-return' "$PLUGIN_LOG")" \
    "post-return create_process(/bin/true) -> BH_E_VM_NOT_RUNNING errno=0 (process=NULL)" "without a VM: never started by the call"
  expect_eq "$(cs show async --json | jq -r .vm_state)" "idle" "the call started no VM"
}

case_WslcProcessApi() {
  setup WslcProcessApi
  cs create api --start-vm >/dev/null
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcProcessApi, api_version=0.2.0)
Container session created (session_id=1, name=api, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=api)
$(process_api_lines)
EOF
  [ ! -e "$T/plugins/written" ] || fail "a write went through the read-only mount"
}

# Two creations of one name at once: one wins, the other's creator gets the winner's session, and
# the plugin sees created and stopping for the loser too.
case_WslcCreateRace() {
  setup Success
  local i pids=()
  for i in 1 2 3 4; do
    cs create raced --json >"$T/race.$i" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || fail "a concurrent create failed"; done
  expect_eq "$(jq -r .session_id "$T"/race.* | sort -u | wc -l)" "1" "every creator got the same session"
  local winner; winner=$(id_of raced)
  expect_eq "$(grep -c '^Container session created' "$PLUGIN_LOG")" \
    "$(grep -c '^Container session stopping' "$PLUGIN_LOG" | awk '{ print $1 + 1 }')" "a stopping for each loser"
  ! grep -q "^Container session stopping (session_id=$winner," "$PLUGIN_LOG" || fail "the winner was stopped"
  expect_eq "$(cs list --json | jq length)" "1" "one session listed"
  echo "note: $(grep -c '^Container session created' "$PLUGIN_LOG") creations raced for one session"
}

case_WslcHostCrashInCreated() {
  setup WslcHostCrashInCreated
  expect_failure_output "$FATAL" "Error code: $CREATE_OP/ECONNRESET" cs create crash
  expect_eq "$(plugin_jq state)" "crashed" "the crash is latched"
  expect_failure_output "$FATAL" "Error code: $CREATE_OP/ECONNRESET" cs create again
  expect_eq "$(cs list --json | jq length)" "0" "nothing was created"
}

# The sleeps a host kept, and those it was starting when it was SIGKILLed (4 threads creating
# without pause), all die with the host: none is left in the session's VM, which lives on.
case_WslcHostKilledInCreateProcess() {
  setup WslcHostKilledInCreateProcess
  cs create killed --start-vm >/dev/null
  DEADLINE=30 eventually grep -qx 'killers: 16 kept' "$PLUGIN_LOG"
  local running; running=$(sleeps_in killed)  # the 16 kept, and those being created and released
  [ "$running" -ge 16 ] || fail "only $running of the 16 kept sleeps run in the session's VM"
  local host; host=$(plugin_jq pid)
  kill -KILL "$host"
  DEADLINE=10 eventually process_gone "$host"
  DEADLINE=10 eventually no_sleeps_in killed
  expect_eq "$(cs show killed --json | jq -r .vm_state)" "running" "the session's VM outlived the host"
}
# How many `sleep 987` run in session NAME's VM (seen from inside it).
sleeps_in() { cs exec "$1" -- pgrep -c -f '^/bin/sleep 987$' || true; }
no_sleeps_in() { [ "$(sleeps_in "$1")" = 0 ]; }

"case_$CASE"
