#!/usr/bin/env bash
# SIGTERM and SIGKILL of the service leave no process of any VM or distribution behind.
source "$(dirname "$0")/lib.sh"

# The pids of our VM's processes: its init as the service reports it, and all its descendants.
vm_processes() { process_tree "$1"; }

for signal in TERM KILL; do
  start_service
  bh list --json | grep teardown >/dev/null || bh register teardown --rootfs "$ROOTFS" >/dev/null
  bh start teardown
  bh run -- sh -c 'sleep 1000 >/dev/null 2>&1 &'
  bh_other register u --rootfs "$ROOTFS" >/dev/null 2>&1 || true
  init=$(status_field '.sessions[0].vm_init_pid')
  procs=$(vm_processes "$init")
  [ "$(echo $procs | wc -w)" -ge 3 ] || fail "expected the VM init, the distribution init and sleep; got '$procs'"
  watch_exits --reaped 10 $procs # not even a zombie may be left
  kill -$signal "$SVC_PID"
  wait "$SVC_PID" 2>/dev/null || true
  SVC_PID=
  await_exits "10 s after SIG$signal of the service"
  echo "SIG$signal: no survivor among $procs"
done
echo "teardown: ok"
