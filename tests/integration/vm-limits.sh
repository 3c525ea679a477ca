#!/usr/bin/env bash
# A fork bomb in one user's VM stays under the admin's vm_pids_max while another user's run works;
# each VM's cgroups carry the limits and are gone once the VM and the service stop.
source "$(dirname "$0")/lib.sh"
PIDS_MAX=64
MEMORY_MAX=$((256 << 20))
make_rootfs "$T/rootfs" "$T/rootfs.tar"
chmod 644 "$T/rootfs.tar"
# The service runs in a cgroup2 directory of its own, as under systemd with Delegate=yes: on a pure
# cgroup v2 host that is what lets it pass pids and memory on to its VMs' cgroups (the cgroup2
# root must offer them). Empty ones left by earlier runs that failed are removed first.
CGROUP2=$(awk '/ - cgroup2 / {print $5; exit}' /proc/self/mountinfo)
for stale in "$CGROUP2"/bulkhead-test-*; do
  [ -d "$stale" ] && ! kill -0 "${stale##*-}" 2>/dev/null || continue
  rmdir "$stale/bulkhead-service" "$stale" 2>/dev/null || true
done
SERVICE_CGROUP=$CGROUP2/bulkhead-test-$$
mkdir "$SERVICE_CGROUP"
SERVICE_LAUNCHER=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$SERVICE_CGROUP")
printf '[limits]\nvm_pids_max = %d\nvm_memory_max = "256M"\n' "$PIDS_MAX" >"$T/cfg/bulkhead.toml"
start_service
bh register rootdist --rootfs "$T/rootfs" >/dev/null
bh_other register mine --tar "$T/rootfs.tar" >/dev/null

# The directory of the CONTROLLER (pids, memory) cgroup process PID is in: in that controller's v1
# hierarchy on a hybrid host, else in the cgroup2 one. cgroup_dir_of PID CONTROLLER
cgroup_dir_of() {
  local path mount
  path=$(sed -n "s/^[0-9]*:\([^:]*,\)\{0,1\}$2\(,[^:]*\)\{0,1\}:\(.*\)$/\3/p" "/proc/$1/cgroup")
  if [ -n "$path" ]; then
    mount=$(awk -v c="$2" '/ - cgroup / && index("," $NF ",", "," c ",") {print $5; exit}' /proc/self/mountinfo)
  else
    path=$(sed -n 's/^0:://p' "/proc/$1/cgroup")
    mount=$(awk '/ - cgroup2 / {print $5; exit}' /proc/self/mountinfo)
  fi
  echo "$mount${path%/}"
}
# Every VM cgroup the service (or the one whose pid is given) made, in any hierarchy.
vm_cgroups() { find /sys/fs/cgroup -maxdepth 4 -type d -name "bulkhead-vm-${1:-$SVC_PID}-*" 2>/dev/null; }
vm_init_of() { bh status --json | jq -r --argjson uid "$1" '.sessions[] | select(.uid == $uid) | .vm_init_pid'; }

expect_eq "$(bh status --json | jq -c '.vm_limits | [.pids_max, .memory_max]')" "[$PIDS_MAX,$MEMORY_MAX]" "status"
bh status --json | jq -r '.vm_limits | "limits enforced with: pids \(.pids), memory \(.memory)"'
bh_other run -- true
OTHER_INIT=$(vm_init_of "$OTHER_UID")
PIDS=$(cgroup_dir_of "$OTHER_INIT" pids)
MEMORY=$(cgroup_dir_of "$OTHER_INIT" memory)
# Created in its cgroup2 directory (CLONE_INTO_CGROUP), on hybrid hosts as on pure v2 ones.
[[ $(sed -n 's/^0:://p' "/proc/$OTHER_INIT/cgroup") == ${SERVICE_CGROUP#"$CGROUP2"}/bulkhead-vm-$SVC_PID-* ]] ||
  fail "the user's VM init is not in a cgroup2 directory of its own: $(cat "/proc/$OTHER_INIT/cgroup")"
[[ $PIDS == */bulkhead-vm-$SVC_PID-* ]] || fail "the user's VM is not in a pids cgroup of its own: $PIDS"
[[ $MEMORY == */bulkhead-vm-$SVC_PID-* ]] || fail "the user's VM is not in a memory cgroup of its own: $MEMORY"
expect_eq "$(cat "$PIDS/pids.max")" "$PIDS_MAX" "pids.max of the user's VM"
expect_eq "$(cat "$MEMORY/memory.max" 2>/dev/null || cat "$MEMORY/memory.limit_in_bytes")" "$MEMORY_MAX" \
  "the memory limit of the user's VM"
# On a hybrid host the service's thread enters the VM's v1 directories for the span of the clone
# only (VmCgroup::spawn); left there, it would be killed with the VM.
for dir in "$PIDS" "$MEMORY"; do
  if grep -qx "$SVC_PID" "$dir/cgroup.procs"; then fail "the service was left in its VM's cgroup $dir"; fi
done

# The bomb: sleepers until fork fails (busybox sh then stops with "can't fork"), at most 300 a
# round; rounds again and again for BOMB_SECONDS, each bounded by `timeout`.
BOMB='i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i + 1)); echo $i; done'
BOMB_SECONDS=6
bomb() {
  local end=$((SECONDS + BOMB_SECONDS))
  while [ $SECONDS -lt $end ]; do
    timeout 10 setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" \
      HOME="$T/home" "$BIN/bulkhead" run -- sh -c "$BOMB" >>"$T/bomb.out" 2>>"$T/bomb.err" || true
    sleep 0.1
  done
}
# Processes and threads in the user's VM (pids.current; without one, the count of cgroup.procs).
process_count() { cat "$PIDS/pids.current" 2>/dev/null || wc -l <"$PIDS/cgroup.procs"; }
bomb &
BOMB_PID=$!
# Samples the VM's process count while the bomb runs; the highest count seen ends in $T/peak.
(
  peak=0
  while kill -0 "$BOMB_PID" 2>/dev/null; do
    now=$(process_count)
    [ "$now" -le "$peak" ] || peak=$now
    echo "$peak" >"$T/peak"
    sleep 0.01
  done
) &
SAMPLER=$!
hit_limit() { [ "$(process_count)" -ge $((PIDS_MAX - 4)) ]; }
eventually hit_limit

# The user's VM is full and forking there fails; root's run is not affected.
start=$(date +%s%N)
expect_eq "$(BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" timeout 10 "$BIN/bulkhead" run -- echo ok)" ok "root's run while the user's VM is at its limit"
echo "root's run (its VM created) during the bomb: $((($(date +%s%N) - start) / 1000000)) ms"
kill -0 "$BOMB_PID" 2>/dev/null || fail "the bomb ended before root's run did; make BOMB_SECONDS longer"
wait "$BOMB_PID"
wait "$SAMPLER"
grep -q "can't fork" "$T/bomb.err" || fail "the bomb never failed to fork: $(tail -3 "$T/bomb.err")"
PEAK=$(cat "$T/peak")
[ "$PEAK" -le "$PIDS_MAX" ] || fail "the user's VM had $PEAK processes, over its limit of $PIDS_MAX"
grep -qE '^max [1-9]' "$PIDS/pids.events" || fail "pids.events records no refused fork: $(cat "$PIDS/pids.events")"
echo "bomb: at most $PEAK processes in the VM (limit $PIDS_MAX), $(grep -c "can't fork" "$T/bomb.err") rounds stopped by a failed fork, at most $(sort -n "$T/bomb.out" | tail -1) sleepers in a round"

# Ending the VM removes its cgroups; stopping the service removes the rest.
bh --uid "$OTHER_UID" shutdown
[ ! -e "$PIDS" ] && [ ! -e "$MEMORY" ] || fail "the user's VM cgroups outlived the VM: $(vm_cgroups)"
bh run -- true
[ -n "$(vm_cgroups)" ] || fail "root's VM has no cgroup"

# A killed service leaves its VMs' cgroups behind (empty: the VMs died with it); its next start
# removes them.
KILLED=$SVC_PID
ROOT_INIT=$(vm_init_of 0)
kill -KILL "$SVC_PID"
wait "$SVC_PID" 2>/dev/null || true
SVC_PID=
eventually process_gone "$ROOT_INIT"
[ -n "$(vm_cgroups "$KILLED")" ] || fail "the killed service left no VM cgroup to clean up; the check below proves nothing"
start_service
[ -z "$(vm_cgroups "$KILLED")" ] || fail "start-up left the killed service's VM cgroups: $(vm_cgroups "$KILLED")"
bh run -- true
SERVICE=$SVC_PID
stop_service

# An admin who limits no VM's memory (vm_memory_max = 0): plain VMs get no memory cgroup, and a
# container session's --memory still gets its own limit, which was refused before ("cannot limit
# the VM's memory: not limited").
printf '[limits]\nvm_memory_max = 0\n' >"$T/cfg/bulkhead.toml"
start_service
expect_eq "$(bh status --json | jq -r .vm_limits.memory)" "not limited" "status without a memory limit"
bh run -- true
[ "$(cgroup_dir_of "$(vm_init_of 0)" memory)" != */bulkhead-vm-* ] || fail "a memory cgroup for an unlimited VM"
bh container session create capped --memory 64 --start-vm >/dev/null
CAPPED=$(cgroup_dir_of "$(bh container session show capped --json | jq -r .vm_init_pid)" memory)
expect_eq "$(cat "$CAPPED/memory.max" 2>/dev/null || cat "$CAPPED/memory.limit_in_bytes")" "$((64 << 20))" \
  "the session's --memory without an admin limit"
stop_service
[ -z "$(vm_cgroups "$SERVICE")" ] || fail "VM cgroups outlived the service: $(vm_cgroups "$SERVICE")"
rmdir "$SERVICE_CGROUP/bulkhead-service" 2>/dev/null || true
rmdir "$SERVICE_CGROUP"

# With no usable cgroup (every cgroup file system read-only, as in many containers) VMs start
# without limits: each missing limit is logged once and shown by status.
SERVICE_LAUNCHER=(unshare -m --propagation private sh -c \
  'for m in $(awk "/ - cgroup2? /{print \$5}" /proc/self/mountinfo); do mount -o remount,bind,ro "$m" || exit 1; done
   exec "$@"' sh)
start_service
expect_eq "$(bh run -- echo ok)" ok "a run with no cgroup to use"
bh shutdown
expect_eq "$(bh_other run -- echo ok)" ok "the user's run with no cgroup to use"
[[ $(bh status --json | jq -r .vm_limits.pids) == unavailable:* ]] || fail "status: $(bh status --json | jq -c .vm_limits)"
expect_eq "$(grep -c 'VMs run without a pids limit' "$T/daemon.log")" 1 "warnings about the pids limit"
[ -z "$(vm_cgroups)" ] || fail "VM cgroups made on a read-only cgroup file system: $(vm_cgroups)"
stop_service
echo "vm-limits: ok"
