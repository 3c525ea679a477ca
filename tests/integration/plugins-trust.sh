#!/usr/bin/env bash
# "Trust what is loaded": a plugin is loaded only if its bytes are the ones its configuration pins
# (sha256) or signs (Ed25519, against <config-dir>/trusted-keys/*.pem), and only from files and
# directories that only root can change; its host gets a fixed environment and its resource limits.
# Every refusal is a latched load failure with the code BH_E_PLUGIN_UNTRUSTED and a cause in
# `bulkhead status` that names the failed check; a refused plugin runs no code at all.
#
#   plugins-trust.sh                          every case, process isolation, then the in-process set
#   plugins-trust.sh ISOLATION [CASE...]      ISOLATION: process or none; default: that mode's cases
#
# Cases run as separate processes (lib.sh gives each its own $T and service), $PLUGIN_TEST_JOBS at
# a time (default 2).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

# Integrity is checked whatever the isolation: these run in both modes.
BOTH_CASES=(
  PinnedOk PinnedUppercaseOk PinnedModified SignedOk SignedModified WrongSignature UnsignedWhenRequired
  RequiredAndPinnedOk RequiredAndSignedOk GroupWritablePlugin SymlinkPath SwapRace
)
# What only a host process has (its environment, its limits), and the rest of the ownership rules.
PROCESS_CASES=(
  "${BOTH_CASES[@]}" WritableParentDir WritableGrandparentDir StickyParentDirOk NotOwnedByRoot
  DirNotOwnedByRoot ConfigFileWritable ConfigDirWritable SignatureFileWritable SignatureDirWritable
  LdPreloadNotInherited MemoryLimit OpenFilesLimit
)
NONE_CASES=("${BOTH_CASES[@]}")
# Left out of sanitizer builds: MemoryLimit (a sanitized host reserves terabytes of address space
# for its shadow memory before any plugin code runs, so it cannot live under an RLIMIT_AS) and,
# under ASan, LdPreloadNotInherited (ASan refuses to start a service with a library preloaded
# ahead of its runtime).
if [ -n "${BULKHEAD_SANITIZER:-}" ] && [ "${1:-}" != --case ]; then
  left_out=(MemoryLimit)
  [ "$BULKHEAD_SANITIZER" != address ] || left_out+=(LdPreloadNotInherited)
  kept=()
  for c in "${PROCESS_CASES[@]}"; do [[ " ${left_out[*]} " == *" $c "* ]] || kept+=("$c"); done
  PROCESS_CASES=("${kept[@]}")
  echo "note: left out of the $BULKHEAD_SANITIZER-sanitized build: ${left_out[*]}"
fi

if [ "${1:-}" != --case ]; then
  if [ $# -eq 0 ]; then
    rc_process=0 rc_none=0
    "$HERE/plugins-run-cases.sh" "$0" process "${PROCESS_CASES[@]}" || rc_process=$?
    "$HERE/plugins-run-cases.sh" "$0" none "${NONE_CASES[@]}" || rc_none=$?
    if [ $rc_process -eq 77 ] && [ $rc_none -eq 77 ]; then exit 77; fi
    [ $rc_process -ne 77 ] || rc_process=0
    [ $rc_none -ne 77 ] || rc_none=0
    [ $rc_process -eq 0 ] && [ $rc_none -eq 0 ]
    exit
  fi
  isolation=$1
  shift
  if [ $# -eq 0 ]; then
    case $isolation in
    process) set -- "${PROCESS_CASES[@]}" ;;
    none) set -- "${NONE_CASES[@]}" ;;
    *) echo "usage: plugins-trust.sh [process|none [CASE...]]" >&2; exit 2 ;;
    esac
  fi
  exec "$HERE/plugins-run-cases.sh" "$0" "$isolation" "$@"
fi

# ---- one case: plugins-trust.sh --case ISOLATION CASE ----
ISOLATION=$2
CASE=$3
source "$HERE/lib.sh"
SWAPPER=
stop_swapper() {
  if [ -n "$SWAPPER" ]; then
    kill "$SWAPPER" 2>/dev/null || true
    wait "$SWAPPER" 2>/dev/null || true
    SWAPPER=
  fi
}
trap '__rc=$?; set +e; stop_swapper; shrink_daemon_log; (exit $__rc); cleanup' EXIT
umask 022 # the directories this test creates are root's 0755, as the ownership rules want

FATAL="A fatal error was returned by plugin 'test-plugin'"
START_OP=Bulkhead/Service/StartDistribution
RUN_OP=Bulkhead/Service/RunProgram
UNTRUSTED=BH_E_PLUGIN_UNTRUSTED
PLUGIN=$T/plugins/test-plugin.so
TOML=$T/cfg/plugins.d/test-plugin.toml

# ---- set-up ----

# The fixture in MODE at $PLUGIN, configured in $TOML, with the isolation of this run (or
# ISOLATION). Keys are added with toml_key before the service starts.
install() { install_test_plugin "$1" test-plugin "${2:-$ISOLATION}"; }

# Appends `KEY = VALUE` (VALUE is raw TOML: quote strings yourself) to $TOML.
toml_key() { printf '%s = %s\n' "$1" "$2" >>"$TOML"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
pin() { toml_key sha256 "\"${2:-$(sha256_of "${1:-$PLUGIN}")}\""; }

# An Ed25519 key pair NAME (team or stranger), made once per run with the shared fixtures: the
# private key $TEST_KEYS/NAME.pem (only root can read it), its public half NAME.pub.pem.
make_key() { [ -f "$TEST_KEYS/$1.pem" ] && [ -f "$TEST_KEYS/$1.pub.pem" ] || fail "no fixture key '$1' in $TEST_KEYS"; }
# Trusts the public half of key NAME: <config-dir>/trusted-keys/NAME.pem.
trust_key() {
  mkdir -p "$T/cfg/trusted-keys"
  cp "$TEST_KEYS/$1.pub.pem" "$T/cfg/trusted-keys/$1.pem"
}
# sign KEY FILE SIGNATURE: a raw 64-byte Ed25519 signature over FILE's bytes.
sign() {
  openssl pkeyutl -sign -rawin -inkey "$TEST_KEYS/$1.pem" -in "$2" -out "$3"
  expect_eq "$(stat -c %s "$3")" 64 "the size of an Ed25519 signature"
}
# Signs $PLUGIN with KEY into $T/plugins/test-plugin.sig and configures that signature.
sign_plugin() {
  sign "$1" "$PLUGIN" "$T/plugins/test-plugin.sig"
  toml_key signature "\"$T/plugins/test-plugin.sig\""
}

require_verified() { printf '[plugins]\nrequire_verified = true\n' >>"$T/cfg/bulkhead.toml"; }

# Flips the lowest bit of byte OFFSET of FILE. flip_bit FILE OFFSET
flip_bit() {
  local byte
  byte=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
  [ -n "$byte" ] || fail "$1 has no byte $2"
  # shellcheck disable=SC2059 # the octal escape is the point
  printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
  expect_eq "$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')" "$((byte ^ 1))" "byte $2 of $1 after the flip"
}

# Appends BYTES (default: a line of text) to FILE: a different file that still loads.
append_bytes() { printf '%s' "${2:-appended by plugins-trust.sh}" >>"$1"; }

# The busybox distribution "alpha", registered unless the service already knows it.
register_alpha() {
  bh list --json | jq -e 'any(.[]; .name == "alpha")' >/dev/null ||
    bh register alpha --rootfs "$ROOTFS" >/dev/null
}

start() { start_service; register_alpha; }

# ---- checks ----

expect_service_alive() {
  kill -0 "$SVC_PID" 2>/dev/null || fail "the service died"
  expect_eq "$(status_field .pid)" "$SVC_PID" "the service's pid"
  bh list >/dev/null || fail "the service no longer serves list"
}

expect_no_vm() { expect_eq "$(running_vms)" 0 "no VM may be left running"; }

# The plugin loaded and its on_vm_started ran in full (mode Success): mount, file, programs.
expect_success() {
  bh start alpha || fail "bulkhead start failed for a plugin that should be trusted"
  expect_eq "$(plugin_field state)" running "plugin state"
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
VM created (session_id=$sid, uid=0, gid=0, user_name=root, custom_config_flags=0)
$(success_vm_started_lines "$sid")
Distribution started (*)
EOF
  expect_eq "$(bh vm exec -- cat /test-plugin/deep/folder/hello)" OK "the plugin's mount seen by vm exec"
  if [ "$ISOLATION" = process ]; then
    local host; host=$(plugin_field pid)
    [ "$host" -gt 0 ] && [ "$host" != "$SVC_PID" ] && kill -0 "$host" || fail "no live host process (pid $host)"
  else
    expect_eq "$(plugin_field pid)" 0 "an in-process plugin has no host pid"
  fi
}

# The load is refused, latched, and the cause in status contains every TEXT given.
# expect_untrusted TEXT...
expect_untrusted() {
  expect_failure_output "$FATAL" "Error code: $START_OP/$UNTRUSTED" bh start alpha
  expect_service_alive
  expect_no_vm
  # Latched: every later VM creation fails the same way.
  expect_failure_output "$FATAL" "Error code: $START_OP/$UNTRUSTED" bh start alpha
  expect_failure_output "$FATAL" "Error code: $RUN_OP/$UNTRUSTED" bh run -- true
  expect_service_alive
  expect_no_vm
  expect_eq "$(plugin_field state)" "failed to load" "plugin state"
  local cause text
  cause=$(plugin_field cause)
  echo "note: cause: $cause"
  for text in "$@"; do
    [[ $cause == *"$text"* ]] || fail "the cause should contain '$text'; it is '$cause'"
  done
  # Not one line of the plugin's code ran (its entry point would have logged first).
  [ ! -s "$PLUGIN_LOG" ] || fail "the refused plugin ran: $(cat "$PLUGIN_LOG")"
  wait_no_service_hosts 5
}

# Ends this service and starts another on the same directories, with a fresh plugin log.
restart() {
  stop_service
  rm -f "$PLUGIN_LOG"
  start_service
}

# ---- integrity ----

case_PinnedOk() {
  install Success
  pin
  start
  expect_success
}

case_PinnedUppercaseOk() {
  install Success
  pin "$PLUGIN" "$(sha256_of "$PLUGIN" | tr a-f A-F)"
  start
  expect_success
}

# Pinned, then changed: a byte more at the end, which still loads as a library.
case_PinnedModified() {
  install Success
  pin
  append_bytes "$PLUGIN"
  start
  expect_untrusted sha256
}

case_SignedOk() {
  install Success
  make_key team
  trust_key team
  sign_plugin team
  start
  expect_success
}

case_SignedModified() {
  install Success
  make_key team
  trust_key team
  sign_plugin team
  append_bytes "$PLUGIN"
  start
  expect_untrusted signature
}

# A valid signature by a key nobody trusts; then a trusted key's signature with one bit flipped.
case_WrongSignature() {
  install Success
  make_key team
  make_key stranger
  trust_key team
  sign_plugin stranger
  start
  echo "note: signed by an untrusted key:"
  expect_untrusted signature

  sign team "$PLUGIN" "$T/plugins/test-plugin.sig"
  flip_bit "$T/plugins/test-plugin.sig" 17
  restart
  echo "note: a trusted key's signature, corrupted:"
  expect_untrusted signature
}

case_UnsignedWhenRequired() {
  install Success
  require_verified
  start
  expect_untrusted "neither pinned nor signed"
}

case_RequiredAndPinnedOk() {
  install Success
  require_verified
  pin
  start
  expect_success
}

case_RequiredAndSignedOk() {
  install Success
  require_verified
  make_key team
  trust_key team
  sign_plugin team
  start
  expect_success
}

# ---- ownership and modes ----
# Checked for every plugin, verified or not (only GroupWritablePlugin is also pinned: a correct pin
# does not excuse a file others can change).

case_GroupWritablePlugin() {
  install Success
  pin
  chmod 664 "$PLUGIN"
  start
  expect_untrusted "$PLUGIN is writable by group or others"
}

# A plain (not sticky) directory anyone can write to: anyone could replace the plugin in it.
case_WritableParentDir() {
  install Success
  chmod 777 "$T/plugins"
  start
  expect_untrusted "$T/plugins is writable by group or others"
}

# A root-owned sticky directory (like /tmp) is accepted: nobody else can rename or remove root's
# files in it.
case_StickyParentDirOk() {
  install Success
  chmod 1777 "$T/plugins"
  start
  expect_success
}

case_NotOwnedByRoot() {
  install Success
  chown "$OTHER_UID:$OTHER_UID" "$PLUGIN"
  start
  expect_untrusted "$PLUGIN" "not owned by root"
}

# Not the plugin's own directory but one further up: every directory above the file counts.
case_WritableGrandparentDir() {
  install_test_plugin Success test-plugin "$ISOLATION" test-plugin "$T/deep/er/plugins"
  chmod 777 "$T/deep"
  start
  expect_untrusted "$T/deep is writable by group or others"
}

case_DirNotOwnedByRoot() {
  install Success
  chown "$OTHER_UID:$OTHER_UID" "$T/plugins"
  start
  expect_untrusted "$T/plugins" "not owned by root"
}

case_ConfigFileWritable() {
  install Success
  chmod 666 "$TOML"
  start
  expect_untrusted "$TOML is writable by group or others"
}

case_ConfigDirWritable() {
  install Success
  chmod 777 "$T/cfg/plugins.d"
  start
  expect_untrusted "$T/cfg/plugins.d is writable by group or others"
}

case_SignatureFileWritable() {
  install Success
  make_key team
  trust_key team
  sign_plugin team
  chmod 666 "$T/plugins/test-plugin.sig"
  start
  expect_untrusted "$T/plugins/test-plugin.sig is writable by group or others"
}

# The signature kept in a directory of its own, which others may write to.
case_SignatureDirWritable() {
  install Success
  make_key team
  trust_key team
  mkdir -p "$T/signatures"
  sign team "$PLUGIN" "$T/signatures/test-plugin.sig"
  toml_key signature "\"$T/signatures/test-plugin.sig\""
  chmod 777 "$T/signatures"
  start
  expect_untrusted "$T/signatures is writable by group or others"
}

# The configured path is a symbolic link (to the very file, pinned correctly): refused.
case_SymlinkPath() {
  install Success
  ln -s "$PLUGIN" "$T/plugins/link.so"
  plugin_toml test-plugin "$T/plugins/link.so" test-plugin "$ISOLATION"
  pin "$PLUGIN"
  start
  expect_untrusted "symbolic link"
}

# ---- the bytes checked are the bytes loaded ----

# The fixture and the impostor (the same fixture built as another file: tests/CMakeLists.txt's
# test-plugin-impostor) side by side: $T/plugins/good.so and $T/plugins/impostor.so. The impostor
# behaves the same but hashes differently and logs "Plugin variant: impostor" from its ELF
# constructor: as soon as dlopen runs any of its code, before any entry point is looked up.
make_good_and_impostor() {
  local impostor=${BULKHEAD_TEST_IMPOSTOR:-$BIN/../plugins/test-plugin-impostor.so}
  [ -f "$impostor" ] || fail "no impostor plugin at $impostor (build the test-plugin-impostor target)"
  cp "$PLUGIN" "$T/plugins/good.so"
  cp "$impostor" "$T/plugins/impostor.so"
  chmod 644 "$T/plugins/good.so" "$T/plugins/impostor.so"
  [ "$(sha256_of "$T/plugins/good.so")" != "$(sha256_of "$T/plugins/impostor.so")" ] || fail "the impostor hashes the same"
}

# Plugin NAME of SwapRace: $T/NAME/test-plugin.so, logging to $T/NAME.log, pinned to the
# fixture's hash. install_slot NAME
install_slot() {
  local saved=$PLUGIN_LOG
  PLUGIN_LOG=$T/$1.log
  install_test_plugin GetUsername "$1" "$ISOLATION" "$1" "$T/$1"
  PLUGIN_LOG=$saved
  printf 'sha256 = "%s"\n' "$(sha256_of "$T/plugins/good.so")" >>"$T/cfg/plugins.d/$1.toml"
}

# The configured paths keep being renamed between the pinned fixture and an impostor while the
# service is started and the plugins are loaded, again and again. Each start loads $slots plugins
# at once (each its own path and directory, all pinned to the fixture), so each start gives the
# impostor $slots chances, and $rounds starts give $rounds x $slots. Every load either gets the
# pinned bytes or is refused: no code of the impostor ever runs, not even its constructor.
case_SwapRace() {
  local rounds=${SWAP_RACE_ROUNDS:-10} slots=${SWAP_RACE_SLOTS:-8} i s slot rc loaded=0 refused=0
  local cause state first_refused names=() swap_args=()
  install GetUsername
  make_good_and_impostor

  # First, that an impostor would be noticed: pinned to its own hash, it loads and says so.
  cp "$T/plugins/impostor.so" "$PLUGIN"
  pin "$PLUGIN"
  start
  bh start alpha || fail "the impostor, pinned to its own hash, did not load"
  expect_log "$PLUGIN_LOG" <<EOF
Plugin variant: impostor
Plugin loaded (mode=GetUsername, api_version=*)
VM created (*)
Distribution started (*)
EOF
  stop_service

  rm -f "$TOML"
  for ((s = 1; s <= slots; s++)); do
    slot=$(printf 'slot-%02d' "$s") # file-name order is slot order
    names+=("$slot")
    install_slot "$slot"
    swap_args+=("$T/$slot/test-plugin.so" "$T/plugins/good.so" "$T/plugins/impostor.so")
  done
  "$HELPER" swap 0.001 "${swap_args[@]}" >"$T/swaps" &
  SWAPPER=$!

  for ((i = 1; i <= rounds; i++)); do
    rm -f "$T"/slot-*.log
    start_service
    rc=0
    bh start alpha >"$T/start.out" 2>"$T/start.err" || rc=$?
    ! grep -l 'Plugin variant' "$T"/slot-*.log 2>/dev/null ||
      fail "round $i: the impostor was loaded (start exit $rc): $(cat "$T"/slot-*.log)"
    bh status --json >"$T/status.json"
    first_refused=
    for slot in "${names[@]}"; do
      state=$(jq -r --arg n "$slot" '.plugins[] | select(.name == $n) | .state' "$T/status.json")
      case $state in
        running)
          if [ $rc -eq 0 ]; then
            expect_log "$T/$slot.log" <<EOF
Plugin loaded (mode=GetUsername, api_version=*)
VM created (*)
Distribution started (*)
EOF
          else # another plugin was refused: this one loaded, and the VM went no further
            [[ $(head -n 1 "$T/$slot.log" 2>/dev/null) == "Plugin loaded (mode=GetUsername, api_version="* ]] ||
              fail "round $i: $slot is running but did not log its load: $(cat "$T/$slot.log" 2>/dev/null)"
          fi
          loaded=$((loaded + 1))
          ;;
        "failed to load")
          cause=$(jq -r --arg n "$slot" '.plugins[] | select(.name == $n) | .cause' "$T/status.json")
          [[ $cause == *sha256* ]] || fail "round $i: $slot's cause should name sha256; it is '$cause'"
          [ ! -s "$T/$slot.log" ] || fail "round $i: the refused $slot ran: $(cat "$T/$slot.log")"
          [ -n "$first_refused" ] || first_refused=$slot
          refused=$((refused + 1))
          ;;
        *) fail "round $i: $slot is '$state' after a start (status: $(cat "$T/status.json"))" ;;
      esac
    done
    if [ $rc -eq 0 ]; then
      [ -z "$first_refused" ] || fail "round $i: the start succeeded although $first_refused was refused"
    else
      [ -n "$first_refused" ] || fail "round $i: the start failed (exit $rc) but no plugin was refused: $(cat "$T/start.err")"
      expect_eq "$(cat "$T/start.err")" "A fatal error was returned by plugin '$first_refused'"$'\n'"Error code: $START_OP/$UNTRUSTED" \
        "round $i: a failed start must be a refusal naming the first refused plugin (stdout: $(cat "$T/start.out"))"
    fi
    stop_service
    ! grep -l 'Plugin variant' "$T"/slot-*.log 2>/dev/null || fail "round $i: the impostor was loaded"
  done
  stop_swapper
  echo "note: $rounds starts x $slots plugins = $((rounds * slots)) loads (chances for the impostor) while the plugins were renamed $(cat "$T/swaps") times: $loaded loaded the pinned plugin, $refused were refused ($UNTRUSTED)"
  expect_eq "$((loaded + refused))" "$((rounds * slots))" "every load ended one of the two ways"
}

# ---- the host's environment and limits ----

# LD_PRELOAD and LD_LIBRARY_PATH in the service's environment reach no host: its environment is
# fixed (nothing of the service's is passed on, a marker variable included).
case_LdPreloadNotInherited() {
  install GetUsername process
  local probe=$T/preload/libbh-preload-probe.so lib
  lib=$(ldconfig -p | sed -n 's/^[[:space:]]*libanl\.so\.1 (.*) => //p' | head -n 1)
  [ -n "$lib" ] && [ -f "$lib" ] || fail "no libanl.so.1 found to preload (ldconfig -p)"
  mkdir -p "$T/preload"
  cp "$lib" "$probe"
  start_service_with_env LD_PRELOAD="$probe" LD_LIBRARY_PATH=/nonexistent BULKHEAD_TRUST_PROBE=leaked
  register_alpha
  # The service itself got them: the preloaded library is in its memory.
  grep -qzxF "LD_PRELOAD=$probe" "/proc/$SVC_PID/environ" || fail "the service did not get LD_PRELOAD"
  grep -qF "$probe" "/proc/$SVC_PID/maps" || fail "the service did not preload $probe"
  bh start alpha
  local host; host=$(plugin_field pid)
  [ "$host" -gt 0 ] && [ "$host" != "$SVC_PID" ] && kill -0 "$host" || fail "no live host process (pid $host)"
  local environment; environment=$(tr '\0' '\n' <"/proc/$host/environ")
  echo "note: the host's environment: $(echo "$environment" | tr '\n' ' ')"
  ! grep -q "^LD_" <<<"$environment" || fail "the host $host got a loader variable: $environment"
  ! grep -q "^BULKHEAD_TRUST_PROBE=" <<<"$environment" || fail "the host $host inherited the service's environment: $environment"
  ! grep -qF "$probe" "/proc/$host/maps" || fail "the host $host has $probe mapped"
  expect_eq "$(plugin_field state)" running "plugin state"
}

# A plugin that allocates without end dies of its host's memory limit, inside its host: a crash
# (SIGABRT), latched; the service keeps its pid and serves.
case_MemoryLimit() {
  install AllocateForever process
  toml_key memory_limit_mb 256
  start
  expect_failure_output "$FATAL" "Error code: $START_OP/ECONNRESET" bh start alpha
  expect_service_alive
  expect_no_vm
  expect_eq "$(plugin_field state)" crashed "plugin state"
  local cause; cause=$(plugin_field cause)
  echo "note: cause: $cause"
  [[ $cause == *SIGABRT* ]] || fail "the cause should name SIGABRT; it is '$cause'"
  wait_no_service_hosts 5
  expect_failure_output "$FATAL" "Error code: $START_OP/ECONNRESET" bh start alpha
  expect_service_alive
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=AllocateForever, api_version=*)
VM created (session_id=$sid, uid=0, gid=0, user_name=root, custom_config_flags=0)
RLIMIT_AS soft=268435456 hard=268435456
allocation failed after * MiB
EOF
  local mib; mib=$(sed -n 's/^allocation failed after \([0-9]*\) MiB$/\1/p' "$PLUGIN_LOG")
  echo "note: the plugin allocated $mib MiB before malloc failed"
  [ "$mib" -lt 256 ] || fail "the plugin allocated $mib MiB under a 256 MiB limit"
}

case_OpenFilesLimit() {
  install CountOpenFiles process
  toml_key max_open_files 64
  start
  bh start alpha
  local sid; sid=$(root_session_id)
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=CountOpenFiles, api_version=*)
VM created (session_id=$sid, uid=0, gid=0, user_name=root, custom_config_flags=0)
RLIMIT_NOFILE soft=64 hard=64
opened * files, then EMFILE
Distribution started (*)
EOF
  local n; n=$(sed -n 's/^opened \([0-9]*\) files, then EMFILE$/\1/p' "$PLUGIN_LOG")
  echo "note: the plugin opened $n files before EMFILE"
  [ "$n" -gt 0 ] && [ "$n" -lt 64 ] || fail "the plugin opened $n files under a limit of 64"
  expect_eq "$(plugin_field state)" running "plugin state"
}

declare -F "case_$CASE" >/dev/null || fail "no case '$CASE'"
"case_$CASE"
echo "plugins-trust $ISOLATION $CASE: ok"
