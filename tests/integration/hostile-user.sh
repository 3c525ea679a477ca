#!/usr/bin/env bash
# An unprivileged user (uid 4242) attacks the service: each case is an attack that once worked,
# and must now do no harm. The script runs in a private mount namespace of its own, where a shared
# tmpfs stands in for the shared / of every systemd host.
# Usage: hostile-user.sh [--case NAME]
if [ "${BH_HOSTILE_NS:-}" != 1 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: this test needs root" >&2; exit 77; }
  exec env BH_HOSTILE_NS=1 unshare --mount --propagation private "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
# The shared mount of MountsStayInTheVm goes before lib.sh's cleanup removes $T.
trap 'rc=$?; umount -l "$T/shared" 2>/dev/null; (exit $rc); cleanup' EXIT
HOSTILE=$BIN/hostile-client
ONLY=
[ "${1:-}" != --case ] || ONLY=$2

as_other() { setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups "$@"; }
# The VM's init of uid UID, as a host pid (0: no VM).
vm_init_pid() { bh status --json | jq -r --argjson uid "$1" '.sessions[] | select(.uid == $uid) | .vm_init_pid'; }
no_process_with_args() { ! pgrep -f -x "$1" >/dev/null; }

# A VM may not make mounts on the host: its copy of a host folder shares no peer group with it.
case_MountsStayInTheVm() {
  mkdir "$T/shared"
  mount -t tmpfs -o mode=0755 bh-shared "$T/shared"
  mount --make-shared "$T/shared"
  mkdir "$T/shared/etc"; echo host >"$T/shared/etc/shadow"
  bh_other vm mount "$T/shared" /mnt/host
  local out
  out=$(bh_other vm exec -- /bin/sh -c \
    'mkdir -p /tmp/evil && echo forged >/tmp/evil/shadow && mount --bind /tmp/evil /mnt/host/etc && cat /mnt/host/etc/shadow')
  expect_eq "$out" forged "the user's bind mount, inside their own VM"
  expect_eq "$(cat "$T/shared/etc/shadow")" host "the host's file under the shared mount"
  ! grep -qF " $T/shared/etc " /proc/self/mountinfo || fail "the VM's mount propagated to the host"
  out=$(bh_other vm exec -- /bin/sh -c 'grep " /mnt/host " /proc/self/mountinfo')
  [[ $out == *nosuid* && $out == *nodev* ]] || fail "a user's folder is mounted without nosuid,nodev: $out"
}

# A folder the user may not read is not theirs to mount, whether the CLI or a raw client sends it.
case_UnreadableFolder() {
  mkdir -m 700 "$T/secret"; echo key >"$T/secret/key"
  expect_error EACCES "cannot open the folder" bh_other vm mount "$T/secret" /mnt/secret
  expect_error EACCES "not opened for reading" as_other "$HOSTILE" "$T/run" mount-opath "$T/secret" /mnt/secret
  bh_other vm exec -- /bin/sh -c 'test ! -e /mnt/secret' || fail "the folder was mounted"
}

# A message announced larger than the control protocol's limit ends the connection at once,
# before the service buffers it.
case_OversizedMessage() {
  local out
  out=$(as_other "$HOSTILE" "$T/run" oversized) || fail "oversized message: $out"
  expect_eq "$out" closed "a 32 MiB message"
}

# A `run` whose client goes away takes its program with it.
case_RunEndsWithItsClient() {
  # Not through bh_other: $! must be the CLI itself, not a subshell running it.
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" \
    HOME="$T/home" "$BIN/bulkhead" run -- sleep 4243 </dev/null >/dev/null 2>&1 &
  local cli=$!
  eventually pgrep -f -x "sleep 4243" >/dev/null
  kill -KILL $cli; wait $cli 2>/dev/null || true
  eventually no_process_with_args "sleep 4243"
}

# A VM's init (and so the distribution's) holds no fd of the service's: stdio is /dev/null, and an
# fd the service inherited without O_CLOEXEC stays with the service.
case_InitsHoldNoServiceFd() {
  local pid fd target
  pid=$(vm_init_pid $OTHER_UID)
  [ "${pid:-0}" -gt 0 ] || fail "no VM init for uid $OTHER_UID"
  for p in $pid $(pgrep -P "$pid"); do
    for fd in 0 1 2; do
      expect_eq "$(readlink "/proc/$p/fd/$fd")" /dev/null "fd $fd of VM process $p"
    done
    for fd in /proc/$p/fd/*; do
      target=$(readlink "$fd" || true)
      [[ $target != "$T/leaked-fd" && $target != "$T/daemon.log" ]] || fail "VM process $p holds $target as $fd"
    done
  done
}

make_rootfs "$T/rootfs" "$T/rootfs.tar"
chmod 644 "$T/rootfs.tar"
exec 251>"$T/leaked-fd"   # inherited by the service without O_CLOEXEC
start_service
exec 251>&-
bh_other register mine --tar "$T/rootfs.tar" >/dev/null
bh_other run -- true

for name in MountsStayInTheVm UnreadableFolder OversizedMessage RunEndsWithItsClient InitsHoldNoServiceFd; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || continue
  started=${EPOCHREALTIME/./}
  "case_$name"
  ms=$(((${EPOCHREALTIME/./} - started) / 1000))
  printf 'case %s: ok (%d.%03d s)\n' "$name" $((ms / 1000)) $((ms % 1000))
done
kill -0 "$SVC_PID" || fail "the service died"
echo "hostile-user: ok"
