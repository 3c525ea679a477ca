#!/usr/bin/env bash
# Time-bounded stress (about $STRESS_SECONDS, default 60): everything the concurrency tests do one
# at a time, mixed over many rounds against one service. Three fixture plugins at once:
#   terminator (process isolation)  CallbacksDuringTermination: 4 threads calling into each
#                                   distribution until on_vm_stopping stops them
#   hammer     (in-process)         HammerThroughShutdown: 4 threads calling without pause, never
#                                   stopped, through every shutdown and the service's own exit
#   sessions   (process isolation)  TwoSessionsAtOnce: checks its hooks never overlap
# Each round: two users' `run` at once with status and list beside them, then one teardown at
# random (shutdown of one VM, of both at once, or terminate of a distribution). Every command has
# a deadline (a hang fails the test as a deadlock). At the end: same service pid, no fd and
# no process more than after the first round, every plugin call ended in success or a clean
# error, no hook overlap, the service exits 0 on SIGTERM, and no sanitizer report (lib.sh).
source "$(dirname "$0")/lib.sh"
SECONDS_BUDGET=${STRESS_SECONDS:-60}

install_fixture() { # install_fixture NAME MODE ISOLATION
  local saved=$PLUGIN_LOG
  PLUGIN_LOG=$T/$1.log
  install_test_plugin "$2" "$1" "$3" "$1" "$T/$1"
  PLUGIN_LOG=$saved
}
install_fixture terminator CallbacksDuringTermination process
install_fixture hammer HammerThroughShutdown none
install_fixture sessions TwoSessionsAtOnce process
start_service
bh register alpha --rootfs "$ROOTFS" --package test-pkg >/dev/null
bh_other register mine --tar "$ROOTFS_TAR" --package test-pkg >/dev/null

# The CLI as root and as uid $OTHER_UID (lib.sh's bh and bh_other), as commands timeout can run.
ROOT_CLI=(env BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead")
OTHER_CLI=(setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups "${ROOT_CLI[@]}")

# Runs the CLI (WHO: root or other) with a deadline; its output goes to $T/out.NAME. 60 s, and
# 240 s under a sanitizer: there the hammer plugin's calls without pause keep the VM's agent busy
# enough (ThreadSanitizer is 5-15 times slower) that a run waited over 60 s beside another test,
# with the agent still answering (seen in the TSan suite; the VM init busy in RPC, not blocked).
DEADLINE_S=60
[ -z "${BULKHEAD_SANITIZER:-}" ] || DEADLINE_S=240
# bounded NAME WHO ARG...
bounded() {
  local name=$1 who=$2 rc=0 cli
  shift 2
  if [ "$who" = root ]; then cli=("${ROOT_CLI[@]}"); else cli=("${OTHER_CLI[@]}"); fi
  timeout "$DEADLINE_S" "${cli[@]}" "$@" >"$T/out.$name" 2>&1 || rc=$?
  [ $rc -ne 124 ] || fail "'$*' did not finish within $DEADLINE_S s (deadlock?)"
  [ $rc -eq 0 ] || fail "'$*' failed (exit $rc): $(cat "$T/out.$name")"
}

round() {
  local pids=() p
  bounded run-root root run -- true & pids+=($!)
  bounded run-other other run -d mine -- true & pids+=($!)
  bounded status root status --json & pids+=($!)
  bounded list root list --all & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || exit 1; done
  case $((RANDOM % 4)) in
    0) bounded shutdown-root root shutdown ;;
    1) bounded shutdown-other other shutdown ;;
    2)
      bounded shutdown-root root shutdown & p=$!
      bounded shutdown-other other shutdown || exit 1
      wait "$p" || exit 1
      ;;
    3) bounded terminate root terminate alpha ;;
  esac
}

# At rest: no VM; what the service holds then is its baseline.
at_rest() {
  bounded shutdown-root root shutdown
  bounded shutdown-other other shutdown
}
fd_count() { ls "/proc/$SVC_PID/fd" | wc -l; }
tree_size() { process_tree "$SVC_PID" | wc -w; }

round
at_rest
sleep 0.5
base_fds=$(fd_count) base_tree=$(tree_size)
rounds=1
end=$((SECONDS + SECONDS_BUDGET))
while [ $SECONDS -lt $end ]; do
  round
  rounds=$((rounds + 1))
done
at_rest
kill -0 "$SVC_PID" || fail "the service died"
expect_eq "$(status_field .pid)" "$SVC_PID" "the service's pid"
fds_back() { [ "$(fd_count)" -le "$base_fds" ]; }
DEADLINE=5 eventually fds_back
tree_back() { [ "$(tree_size)" -le "$base_tree" ]; }
DEADLINE=5 eventually tree_back

for p in terminator hammer sessions; do
  expect_eq "$(status_field '[.plugins[] | select(.name == $p) | .state][0]' --arg p "$p")" running "plugin $p"
done
! grep -q overlap "$T/sessions.log" || fail "hooks of one plugin overlapped: $(grep overlap "$T/sessions.log")"
# Every call result the fixtures saw: success, or a clean error of a VM or distribution gone.
for name in $(sed -n 's/^Termination call results: total=[0-9]*//p' "$T/terminator.log" | tr ' ' '\n' | sed 's/=.*//') \
  $(sed -n 's/^Hammer result: \([^ ]*\) .*/\1/p' "$T/hammer.log"); do
  case $name in
    OK | BH_E_VM_NOT_RUNNING | BH_E_DISTRO_NOT_RUNNING | BH_E_SESSION_NOT_FOUND) ;;
    *) fail "a plugin call returned $name: $(grep -h '^Termination call results\|^Hammer result' "$T"/*.log)" ;;
  esac
done
calls=$(sed -n 's/^Termination call results: total=\([0-9]*\).*/\1/p' "$T/terminator.log" | awk '{ s += $1 } END { print s + 0 }')
echo "stress: $rounds rounds in ${SECONDS_BUDGET}s budget; terminator made $calls calls; fds $base_fds -> $(fd_count); processes $base_tree -> $(tree_size)"
watch_exits 10 $(service_hosts)
stop_service
await_exits "the plugin hosts, 10 s after the service stopped"
echo "stress: ok"
