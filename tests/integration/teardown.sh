#!/usr/bin/env bash
# SIGTERM and SIGKILL of the service leave no process of any VM or distribution behind.
source "$(dirname "$0")/lib.sh"
make_rootfs "$T/rootfs"

# Prints the pids of every process whose root or ancestry belongs to our VMs: the VM inits
# reported by the service, and all their descendants.
vm_processes() {
  local init=$1
  ps -e -o pid=,ppid= | python3 -c '
import sys
init = int(sys.argv[1]); children = {}
for line in sys.stdin:
    pid, ppid = map(int, line.split()); children.setdefault(ppid, []).append(pid)
todo, seen = [init], []
while todo:
    p = todo.pop(); seen.append(p); todo += children.get(p, [])
print(" ".join(map(str, seen)))' "$init"
}

all_gone() { for p in $1; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }

for signal in TERM KILL; do
  start_service
  bh list --json | grep -q teardown || bh register teardown --rootfs "$T/rootfs" >/dev/null
  bh start teardown
  bh run -- sh -c 'sleep 1000 >/dev/null 2>&1 &'
  bh_other register u --rootfs "$T/rootfs" >/dev/null 2>&1 || true
  init=$(status_field 's["sessions"][0]["vm_init_pid"]')
  procs=$(vm_processes "$init")
  [ "$(echo $procs | wc -w)" -ge 3 ] || fail "expected the VM init, the distribution init and sleep; got '$procs'"
  kill -$signal "$SVC_PID"
  wait "$SVC_PID" 2>/dev/null || true
  SVC_PID=
  DEADLINE=10 eventually all_gone "$procs"
  echo "SIG$signal: no survivor among $procs"
done
echo "teardown: ok"
