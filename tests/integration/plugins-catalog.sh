#!/usr/bin/env bash
# The plugin API catalog, after the Windows Subsystem for Linux plugin tests: every fixture mode
# (tests/plugins/test-plugin.c) against a fresh service in a fresh temporary directory, comparing
# the plugin's log line by line and the CLI's output exactly.
#
#   plugins-catalog.sh ISOLATION [CASE...]     ISOLATION: process or none; default: every case
#
# Both isolation modes must yield the same logs and the same CLI output. Cases run as separate
# processes (lib.sh gives each its own $T and service), $PLUGIN_TEST_JOBS at a time (default 2).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

CASES=(
  LazyActivation Success FailToLoad MissingPlugin PluginRequiresUpdate FailToStartVm FailToStartDistro
  FailToStopVm FailToStopDistro ApiErrors ErrorMessageStartVm ErrorMessageStartDistro
  FailToStartVmWithPluginErrorMessage SameDistroId InitPidIsDifferent GetUsername NullablePackage
  OtherUser VmSettingsFlags VmSettingsFlagsPolicy FailToRegisterUnregisterDistro ImportInplaceSuccess RunDistroCommand DuplicatedPlugin
  PluginOrder CallbackAfterHook LoadFailuresInFileOrder EntrySpins
)

if [ "${1:-}" != --case ]; then
  isolation=${1:?usage: plugins-catalog.sh process|none [CASE...]}
  shift
  exec "$HERE/plugins-run-cases.sh" "$0" "$isolation" "${@:-${CASES[@]}}"
fi

# ---- one case: plugins-catalog.sh --case ISOLATION CASE ----
ISOLATION=$2
CASE=$3
source "$HERE/lib.sh"
trap '__rc=$?; set +e; shrink_daemon_log; (exit $__rc); cleanup' EXIT

FATAL="A fatal error was returned by plugin 'test-plugin'"
START_OP=Bulkhead/Service/StartDistribution
RUN_OP=Bulkhead/Service/RunProgram

# The fixture in MODE, the busybox distribution "alpha" registered (before any VM exists).
setup() {
  install_test_plugin "$1" test-plugin "$ISOLATION"
  start_service
  bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
}

# A field of distribution NAME in `bulkhead list --json`. distro_field FIELD NAME
distro_field() {
  bh list --json | jq -r --arg field "$1" --arg name "$2" \
    'first(.[] | select(.name == $name) | .[$field]) // error("no distribution \($name)")'
}
uuid_of() { distro_field uuid "$1"; }
init_pid_of() { distro_field init_pid "$1"; }
# The inode of the pid namespace programs run in by `bulkhead run -d NAME` live in.
pid_ns_of() { bh run -d "$1" -- readlink /proc/self/ns/pid | sed -n 's/^pid:\[\([0-9]*\)\]$/\1/p'; }

# The fields every distribution line starts with, for a registered distribution NAME.
offline_fields() {
  echo "session_id=$(root_session_id), name=$1, id=$(uuid_of "$1"), package=${2:-test-pkg}, flavor=bulkhead-test, version=1.0"
}
# The fields a started/stopping line adds, for a running distribution NAME.
running_fields() { echo "init_pid=$(init_pid_of "$1"), pid_namespace=$(pid_ns_of "$1")"; }

vm_created() { echo "VM created (session_id=$1, uid=0, gid=0, user_name=root, custom_config_flags=${2:-0})"; }
vm_stopping() { echo "VM stopping (session_id=$1, uid=0, gid=0, user_name=root)"; }

expect_no_vm() { expect_eq "$(running_vms)" 0 "no VM may be left running"; }
expect_not_running() { expect_eq "$(bh list --running --json)" "[]" "no distribution may be running"; }

# The plugin entry of status --json, while the fixture runs normally.
expect_plugin_running() {
  expect_eq "$(plugin_field state)" running "plugin state"
  expect_eq "$(plugin_field name)" test-plugin "plugin name"
  expect_eq "$(plugin_field path)" "$T/plugins/test-plugin.so" "plugin path"
  expect_eq "$(plugin_field isolation)" "$ISOLATION" "plugin isolation"
  expect_eq "$(plugin_field cause)" "" "plugin cause"
  local pid; pid=$(plugin_field pid)
  if [ "$ISOLATION" = none ]; then
    expect_eq "$pid" 0 "an in-process plugin has no host pid"
  else
    [ "$pid" -gt 0 ] && [ "$pid" != "$SVC_PID" ] && kill -0 "$pid" ||
      fail "a process-isolated plugin needs a live host process of its own; status says pid $pid (service $SVC_PID)"
  fi
}

# ---- cases ----

case_LazyActivation() {
  setup Success
  bh register beta --rootfs "$ROOTFS" >/dev/null
  bh unregister beta
  bh list >/dev/null
  bh status >/dev/null
  [ ! -e "$PLUGIN_LOG" ] || fail "the plugin was loaded before any VM was created: $(cat "$PLUGIN_LOG")"
  expect_eq "$(plugin_field state)" "not loaded" "state before activation"
  expect_eq "$(plugin_field pid)" 0 "pid before activation"
  expect_eq "$(plugin_field cause)" "" "cause before activation"
  expect_eq "$(plugin_field isolation)" "$ISOLATION" "isolation before activation"
  bh start alpha
  expect_plugin_running
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
$(vm_created "$sid")
*
*
*
*
*
*
*
*
Distribution started ($(offline_fields alpha), $(running_fields alpha))
EOF
}

case_Success() {
  setup Success
  bh start alpha
  expect_plugin_running
  local sid d r
  sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  # The mount is in the VM's root namespace, for everyone.
  expect_eq "$(bh vm exec -- cat /test-plugin/deep/folder/hello)" OK "the plugin's mount seen by vm exec"
  bh terminate alpha
  bh shutdown
  expect_no_vm
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
$(vm_created "$sid")
$(success_vm_started_lines "$sid")
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
EOF
  expect_eq "$(plugin_field state)" running "plugin state after shutdown"
}

# A failed load is latched: one load attempt, every later VM creation fails the same way.
expect_latched_load_failure() {
  local line1=$1 code=$2
  expect_failure_output "$line1" "Error code: $START_OP/$code" bh start alpha
  expect_failure_output "$line1" "Error code: $START_OP/$code" bh start alpha
  expect_failure_output "$line1" "Error code: $RUN_OP/$code" bh run -- true
  expect_eq "$(plugin_field state)" "failed to load" "plugin state"
  # No host process is left for a plugin that failed to load (status may still name the pid it had).
  local pid; pid=$(plugin_field pid)
  [ "$ISOLATION" = process ] || expect_eq "$pid" 0 "an in-process plugin has no host pid"
  # (Only while it is still the service's child: a pid freed long ago may be another process now.)
  [ "$pid" = 0 ] || [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" != "$SVC_PID" ] || wait_gone 5 "$pid"
  wait_no_service_hosts 5
  echo "note: status after the failed load: pid $pid, cause '$(plugin_field cause)'"
  expect_no_vm
  expect_not_running
}

case_FailToLoad() {
  setup FailToLoad
  expect_latched_load_failure "$FATAL" EINVAL
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToLoad, api_version=*)
EOF
}

case_MissingPlugin() {
  plugin_toml test-plugin "$T/plugins/test-plugin.so" "" "$ISOLATION" # the name defaults to the stem
  start_service
  bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
  expect_latched_load_failure "$FATAL" ENOENT
  expect_eq "$(plugin_field name)" test-plugin "the name defaults to the file stem"
}

case_PluginRequiresUpdate() {
  setup PluginRequiresUpdate
  expect_latched_load_failure "The plugin 'test-plugin' requires a newer version of Bulkhead. Please update." \
    BH_E_PLUGIN_REQUIRES_UPDATE
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=PluginRequiresUpdate, api_version=*)
EOF
}

case_FailToStartVm() {
  setup FailToStartVm
  expect_failure_output "$FATAL" "Error code: $START_OP/EPERM" bh start alpha
  expect_no_vm
  expect_not_running
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStartVm, api_version=*)
$(vm_created "$sid")
$(vm_stopping "$sid")
EOF
  # A veto is not latched: the next attempt asks the plugin again.
  expect_failure_output "$FATAL" "Error code: $RUN_OP/EPERM" bh run -- true
  expect_no_vm
  expect_eq "$(plugin_field state)" running "a veto does not fail the plugin"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStartVm, api_version=*)
$(vm_created "$sid")
$(vm_stopping "$sid")
$(vm_created "$sid")
$(vm_stopping "$sid")
EOF
}

case_FailToStartDistro() {
  setup FailToStartDistro
  expect_failure_output "$FATAL" "Error code: $START_OP/EPERM" bh start alpha
  expect_not_running
  local sid d; sid=$(root_session_id); d=$(offline_fields alpha)
  bh shutdown
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStartDistro, api_version=*)
$(vm_created "$sid")
Distribution started ($d, init_pid=*, pid_namespace=*)
$(vm_stopping "$sid")
EOF
}

case_FailToStopVm() {
  setup FailToStopVm
  bh start alpha
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  bh terminate alpha
  bh shutdown
  expect_no_vm
  bh start alpha # a new VM
  local r2; r2=$(running_fields alpha)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStopVm, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
$(vm_created "$sid")
Distribution started ($d, $r2)
EOF
}

case_FailToStopDistro() {
  setup FailToStopDistro
  bh start alpha
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  bh terminate alpha
  expect_not_running
  bh shutdown
  expect_no_vm
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStopDistro, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
EOF
}

case_ApiErrors() {
  setup ApiErrors
  local out
  out=$(bh start alpha 2>&1) || fail "start failed although the hook returned 0: $out"
  expect_eq "$out" "" "a plugin_error message without a failure is not shown"
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  bh shutdown
  bh unregister alpha # with no VM running
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=ApiErrors, api_version=*)
$(vm_created "$sid")
mount_folder(session_id=$sid, host_path=/nonexistent/bulkhead-fixture, vm_path=/missing, read_only=1, name=missing) -> ENOENT
execute_binary(session_id=$sid, path=/nonexistent/bulkhead-missing-program, argv=bulkhead-missing-program) -> ENOENT (out_fd=-1)
mount_folder(session_id=9999, host_path=$T/plugins, vm_path=/unknown-session, read_only=1, name=unknown-session) -> BH_E_SESSION_NOT_FOUND
mount_folder(session_id=$sid, host_path=$T/plugins, vm_path=relative/path, read_only=1, name=relative) -> EINVAL
plugin_error(message=From another thread) from another thread -> BH_E_ILLEGAL_METHOD_CALL
plugin_error(NULL) -> EINVAL
plugin_error(message=First message) -> OK
plugin_error(message=Second message) -> BH_E_ILLEGAL_STATE_CHANGE
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
execute_binary(session_id=$sid, path=/bin/echo, argv=echo stopping) -> OK
output: stopping
plugin_error(message=Not a veto hook) -> BH_E_ILLEGAL_METHOD_CALL
Distribution unregistered ($d)
mount_folder(session_id=$sid, host_path=$T/plugins, vm_path=/no-vm, read_only=1, name=no-vm) -> BH_E_VM_NOT_RUNNING
execute_binary(session_id=$sid, path=/bin/echo, argv=echo unregistered) -> BH_E_VM_NOT_RUNNING (out_fd=-1)
plugin_error(message=Not a veto hook) -> BH_E_ILLEGAL_METHOD_CALL
EOF
}

case_ErrorMessageStartVm() {
  setup ErrorMessageStartVm
  local message="$FATAL. Error message: 'Plugin error message'"
  expect_failure_output "$message" "Error code: $START_OP/EPERM" bh start alpha
  expect_no_vm
  expect_failure_output "$message" "Error code: $RUN_OP/EPERM" bh run -- true
  expect_no_vm
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=ErrorMessageStartVm, api_version=*)
$(vm_created "$sid")
plugin_error(message=Plugin error message) -> OK
$(vm_stopping "$sid")
$(vm_created "$sid")
plugin_error(message=Plugin error message) -> OK
$(vm_stopping "$sid")
EOF
}

case_ErrorMessageStartDistro() {
  setup ErrorMessageStartDistro
  expect_failure_output "$FATAL. Error message: 'Plugin error message'" "Error code: $START_OP/EPERM" bh start alpha
  expect_not_running
  local sid d; sid=$(root_session_id); d=$(offline_fields alpha)
  bh shutdown
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=ErrorMessageStartDistro, api_version=*)
$(vm_created "$sid")
Distribution started ($d, init_pid=*, pid_namespace=*)
plugin_error(message=Plugin error message) -> OK
$(vm_stopping "$sid")
EOF
}

case_FailToStartVmWithPluginErrorMessage() {
  setup FailToStartVmWithPluginErrorMessage
  local message="$FATAL. Error message: 'Plugin error message'"
  expect_failure_output "$message" "Error code: $START_OP/EPERM" bh start alpha
  expect_failure_output "$message" "Error code: $START_OP/EPERM" bh start alpha
  expect_no_vm
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToStartVmWithPluginErrorMessage, api_version=*)
$(vm_created "$sid")
plugin_error(message=Plugin error message) -> OK
$(vm_stopping "$sid")
$(vm_created "$sid")
plugin_error(message=Plugin error message) -> OK
$(vm_stopping "$sid")
EOF
}

case_SameDistroId() {
  setup SameDistroId
  local uuid sid sid2 d d2
  uuid=$(uuid_of alpha); sid=$(root_session_id); d=$(offline_fields alpha)
  bh start alpha
  bh shutdown
  bh start alpha
  bh shutdown
  # ... and across a restart of the service.
  stop_service
  start_service
  bh start alpha
  sid2=$(root_session_id); d2=$(offline_fields alpha)
  expect_eq "$(uuid_of alpha)" "$uuid" "uuid after a service restart"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=SameDistroId, api_version=*)
$(vm_created "$sid")
Distribution started ($d, init_pid=*, pid_namespace=*)
Distribution stopping ($d, init_pid=*, pid_namespace=*)
$(vm_stopping "$sid")
$(vm_created "$sid")
Distribution started ($d, init_pid=*, pid_namespace=*)
Distribution stopping ($d, init_pid=*, pid_namespace=*)
$(vm_stopping "$sid")
Plugin loaded (mode=SameDistroId, api_version=*)
$(vm_created "$sid2")
Distribution started ($d2, init_pid=*, pid_namespace=*)
EOF
  [ "$(grep -c "^Distribution .* id=$uuid," "$PLUGIN_LOG")" = 5 ] || fail "not every line carries id $uuid"
}

case_InitPidIsDifferent() {
  setup InitPidIsDifferent
  bh start alpha
  local sid d r1 r2 p1 p2
  sid=$(root_session_id); d=$(offline_fields alpha); r1=$(running_fields alpha); p1=$(init_pid_of alpha)
  bh terminate alpha
  bh start alpha
  r2=$(running_fields alpha); p2=$(init_pid_of alpha)
  [ "$p1" -gt 0 ] && [ "$p2" -gt 0 ] && [ "$p1" != "$p2" ] || fail "init pids $p1 and $p2 should differ"
  bh shutdown
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=InitPidIsDifferent, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r1)
Distribution stopping ($d, $r1)
Distribution started ($d, $r2)
Distribution stopping ($d, $r2)
$(vm_stopping "$sid")
EOF
}

case_GetUsername() {
  setup GetUsername
  bh start alpha
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=GetUsername, api_version=*)
VM created (session_id=$sid, uid=0, gid=0, user_name=root, custom_config_flags=0)
Distribution started ($d, $r)
EOF
}

# Another user's VM: the session carries that user's uid and gid; the mount and the programs work
# in a VM whose root is mapped to the user.
case_OtherUser() {
  install_test_plugin Success test-plugin "$ISOLATION"
  start_service
  bh_other register mine --tar "$ROOTFS_TAR" --package test-pkg >/dev/null
  bh_other start mine
  local sid uuid
  sid=$(bh_other status --json | jq -r '.sessions[0].session_id')
  uuid=$(bh_other list --json | jq -r '.[0].uuid')
  echo "note: user_name for uid $OTHER_UID (no passwd entry on the host): $(sed -n 's/^VM created .*user_name=\([^,]*\),.*/\1/p' "$PLUGIN_LOG")"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
VM created (session_id=$sid, uid=$OTHER_UID, gid=$OTHER_UID, user_name=*, custom_config_flags=0)
$(success_vm_started_lines "$sid")
Distribution started (session_id=$sid, name=mine, id=$uuid, package=test-pkg, flavor=bulkhead-test, version=1.0, init_pid=*, pid_namespace=*)
EOF
}

# A distribution registered without --package: the nullable package field is NULL.
case_NullablePackage() {
  setup GetUsername
  bh start alpha
  bh register beta --rootfs "$ROOTFS" >/dev/null
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=GetUsername, api_version=*)
$(vm_created "$sid")
Distribution started ($(offline_fields alpha), $(running_fields alpha))
Distribution registered ($(offline_fields beta "(null)"))
EOF
}

user_config() {
  mkdir -p "$T/home/.config/bulkhead"
  printf '%s\n' "$@" >"$T/home/.config/bulkhead/bulkhead.toml"
}

case_VmSettingsFlags() {
  user_config '[vm]' 'host_network = true'
  printf '[policy]\nallow_user_host_network = true\n' >"$T/cfg/bulkhead.toml"  # not allowed by default
  setup VmSettingsFlags
  bh start alpha
  local sid; sid=$(root_session_id)
  expect_eq "$(status_field '[.sessions[] | select(.uid == 0) | .custom_config_flags][0]')" 1 "status flags"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=VmSettingsFlags, api_version=*)
$(vm_created "$sid" 1)
Distribution started ($(offline_fields alpha), $(running_fields alpha))
EOF
}

case_VmSettingsFlagsPolicy() {
  user_config '[vm]' 'host_network = true'
  printf '[policy]\nallow_user_host_network = false\n' >"$T/cfg/bulkhead.toml"
  setup VmSettingsFlags
  bh start alpha
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=VmSettingsFlags, api_version=*)
$(vm_created "$sid" 0)
Distribution started ($(offline_fields alpha), $(running_fields alpha))
EOF
}

case_FailToRegisterUnregisterDistro() {
  setup FailToRegisterUnregisterDistro
  bh start alpha # activates the plugins; registering before that notifies nobody
  local sid d r db out
  sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  out=$(bh register beta --rootfs "$ROOTFS" --package test-pkg) || fail "register failed: $out"
  grep -q "^Registered 'beta' (" <<<"$out" || fail "register said: $out"
  db=$(offline_fields beta)
  bh unregister beta || fail "unregister failed"
  expect_eq "$(bh list --json | jq -c '[.[].name]')" '["alpha"]' "list after unregister"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=FailToRegisterUnregisterDistro, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
Distribution registered ($db)
Distribution unregistered ($db)
EOF
}

# WSL's import, shutdown, export, unregister, import-in-place of the export, unregister: here the
# export is unpacked into a folder root adopts where it is (register --in-place), which unregister
# leaves in place.
case_ImportInplaceSuccess() {
  setup Success
  bh start alpha # activates the plugins; registering before that notifies nobody
  local sid d r dv
  sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  bh shutdown
  bh export alpha "$T/alpha.tar"
  bh unregister alpha
  mkdir "$T/in-place"
  tar -C "$T/in-place" -xf "$T/alpha.tar"
  bh register alpha-in-place --in-place "$T/in-place" --package test-pkg >/dev/null
  expect_eq "$(distro_field in_place alpha-in-place)" "$T/in-place" "the adopted folder"
  dv=$(offline_fields alpha-in-place)
  expect_eq "$(bh run -d alpha-in-place -- cat /etc/os-release | grep -c bulkhead-test)" 1 "the adopted distribution runs"
  bh shutdown
  bh unregister alpha-in-place
  [ -f "$T/in-place/etc/os-release" ] || fail "unregister removed the adopted folder"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
$(vm_created "$sid")
$(success_vm_started_lines "$sid")
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
Distribution unregistered ($d)
Distribution registered ($dv)
$(vm_created "$sid")
$(success_vm_started_lines "$sid")
Distribution started ($dv, *)
Distribution stopping ($dv, *)
$(vm_stopping "$sid")
Distribution unregistered ($dv)
EOF
}

case_RunDistroCommand() {
  setup RunDistroCommand
  bh start alpha
  local sid d r uuid; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha); uuid=$(uuid_of alpha)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=RunDistroCommand, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
execute_binary_in_distribution(session_id=$sid, id=$uuid, path=/bin/cat, argv=cat /etc/os-release) -> OK
output: NAME="Bulkhead Test Linux"
output: ID=bulkhead-test
output: VERSION_ID="1.0"
output: PRETTY_NAME="Bulkhead Test Linux 1.0"
execute_binary_in_distribution(session_id=$sid, id=$uuid, path=/nonexistent/bulkhead-missing-program, argv=bulkhead-missing-program) -> ENOENT (out_fd=-1)
execute_binary_in_distribution(session_id=$sid, id=deadbeef-0000-4000-8000-000000000001, path=/bin/cat, argv=cat /etc/os-release) -> BH_E_DISTRO_NOT_RUNNING (out_fd=-1)
execute_binary_in_distribution(session_id=$sid, id=(null), path=/bin/cat, argv=cat /etc/os-release) -> EINVAL (out_fd=-1)
EOF
}

# The same .so under two names loads once, under the first name (in file-name order).
case_DuplicatedPlugin() {
  install_test_plugin DuplicatedPlugin test-plugin "$ISOLATION" 10-first
  plugin_toml 20-second "$T/plugins/test-plugin.so" second "$ISOLATION"
  start_service
  bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
  bh start alpha
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  bh terminate alpha
  bh shutdown
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=DuplicatedPlugin, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
EOF
  expect_eq "$(plugin_field state test-plugin)" running "the first name's state"
  grep -i "warn" "$T/daemon.log" | grep "second" >/dev/null ||
    fail "no warning naming the ignored duplicate 'second' in the service log"
  echo "note: status lists plugins $(status_field '[.plugins[] | [.name, .state]]' -c)"
}

# Plugins are notified in file-name order (not name order); the first veto names its plugin.
case_PluginOrder() {
  install_test_plugin FailToStartVm zeta "$ISOLATION" 10-zeta "$T/plugins-zeta"
  install_test_plugin ErrorMessageStartVm alpha-plugin "$ISOLATION" 20-alpha "$T/plugins-alpha"
  start_service
  bh register alpha --rootfs "$ROOTFS" >/dev/null
  expect_failure_output "A fatal error was returned by plugin 'zeta'" "Error code: $START_OP/EPERM" bh start alpha
  expect_no_vm
}

# Every plugin is loaded at once; when several fail, the first in file-name order is the one
# reported, although the other one failed a second earlier.
case_LoadFailuresInFileOrder() {
  install_test_plugin FailToLoadSlowly slow "$ISOLATION" 10-slow "$T/plugins-slow"
  install_test_plugin FailToLoad fast "$ISOLATION" 20-fast "$T/plugins-fast"
  start_service
  bh register alpha --rootfs "$ROOTFS" >/dev/null
  expect_failure_output "A fatal error was returned by plugin 'slow'" "Error code: $START_OP/EINVAL" bh start alpha
  expect_no_vm
  expect_eq "$(plugin_field state slow)" "failed to load" "the slow plugin's state"
  expect_eq "$(plugin_field state fast)" "failed to load" "the fast plugin's state (every plugin loads at once)"
  local order; order=$(sed -n "s/.*plugin '\(slow\|fast\)' failed to load.*/\1/p" "$T/daemon.log" | paste -sd' ' -)
  expect_eq "$order" "fast slow" "the order the failures happened in (service log)"
  # Latched: the next start reports the same plugin, without loading anything again.
  expect_failure_output "A fatal error was returned by plugin 'slow'" "Error code: $START_OP/EINVAL" bh start alpha
}

# An entry point that busy-loops forever: past hook_timeout_s the load fails, in both isolation
# modes, with the plugin named to every start waiting for it and the entry point named in status;
# a host is killed, an in-process hook thread abandoned (it spins on: it cannot be killed).
case_EntrySpins() {
  setup_endless_load EntrySpins "$ISOLATION"
  begin_endless_load 'spinning in the entry point'
  local host=$LOADING_HOST
  expect_load_timed_out
  expect_eq "$(plugin_jq pid)" 0 "no host pid after the failed load"
  if [ "$ISOLATION" = process ]; then
    [ "$host" -gt 0 ] || fail "no host pid in status while loading"
    process_gone "$host" || fail "the host $host outlived the failed load"
  else
    expect_eq "$host" 0 "an in-process plugin has no host pid"
  fi
  kill -0 "$SVC_PID" || fail "the service died"
  expect_no_vm
  # Latched: every later VM creation, for any user, is answered at once with the same error.
  expect_failure_output "$FATAL" "Error code: $START_OP/ETIMEDOUT" bh_within 10 start alpha
  expect_failure_output "$FATAL" "Error code: $RUN_OP/ETIMEDOUT" bh_other_within 10 run -- true
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=EntrySpins, api_version=*)
spinning in the entry point
EOF
  stop_service # exits 0, also with an abandoned hook thread still spinning in it
}

case_CallbackAfterHook() {
  setup CallbackAfterHook
  bh start alpha
  local sid d r; sid=$(root_session_id); d=$(offline_fields alpha); r=$(running_fields alpha)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=CallbackAfterHook, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
execute_binary(session_id=$sid, path=/bin/echo, argv=echo late) -> OK
output: late
EOF
  bh shutdown
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=CallbackAfterHook, api_version=*)
$(vm_created "$sid")
Distribution started ($d, $r)
execute_binary(session_id=$sid, path=/bin/echo, argv=echo late) -> OK
output: late
Distribution stopping ($d, $r)
$(vm_stopping "$sid")
EOF
}

declare -F "case_$CASE" >/dev/null || fail "no case '$CASE'"
"case_$CASE"
echo "plugins-catalog ($ISOLATION) $CASE: ok"
