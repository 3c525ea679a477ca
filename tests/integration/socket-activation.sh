#!/usr/bin/env bash
# Socket activation without systemd: systemd-socket-activate binds the control socket and, on the
# first connection, execs bulkheadd with it (LISTEN_FDS=1), as bulkhead.socket does. That first
# client is answered, the service says it took the passed socket, and leaves it in place on exit.
source "$(dirname "$0")/lib.sh"
command -v systemd-socket-activate >/dev/null \
  || { echo "SKIP: no systemd-socket-activate (Debian package systemd)" >&2; exit 77; }

systemd-socket-activate -l "$T/run/control.sock" "$SBIN/bulkheadd" --config-dir "$T/cfg" \
  --state-dir "$T/state" --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
SVC_PID=$!
# The activator, not yet bulkheadd, is no service lib.sh stops: end it if the test ends first.
activator_gone() { [ "$(cat "/proc/$SVC_PID/comm" 2>/dev/null)" != systemd-socket- ] || kill "$SVC_PID"; }
trap 'rc=$?; activator_gone; (exit $rc); cleanup' EXIT
DEADLINE=5 eventually test -S "$T/run/control.sock"
! grep -q listening "$T/daemon.log" || fail "bulkheadd started before any client connected"

out=$(bh_within 20 status) || fail "bulkhead status through the activated socket failed"
grep -q '^Bulkhead service' <<<"$out" || fail "unexpected status output: $out"
expect_eq "$(cat "/proc/$SVC_PID/comm")" bulkheadd "the process the activator became"
grep -q "listening on $T/run/control.sock (socket passed by the service manager)" "$T/daemon.log" \
  || fail "the service did not take the passed socket"
# It serves as usual: a registration and a program.
bh register busybox --rootfs "$ROOTFS" >/dev/null
expect_eq "$(bh run -d busybox -- /bin/echo activated)" activated "a program run through the activated service"
stop_service
[ -S "$T/run/control.sock" ] || fail "the service removed the socket it was passed (it is the manager's)"
echo "PASS: started by its first client through a passed socket"
