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
# A process StuckVmIsAbandoned froze is thawed, or nothing could end.
trap 'rc=$?; umount -l "$T/shared" 2>/dev/null || true; umount -l "$T/share/hidden" 2>/dev/null || true
  f=/sys/fs/cgroup/freezer/bulkhead-test-$$; [ ! -d "$f" ] || { echo THAWED >"$f/freezer.state" || true; for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$f" 2>/dev/null && break; sleep 0.2; done; }
  (exit $rc); cleanup' EXIT
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

# The VM's cgroup2 tree is mounted writable (a container session's is delegated to its root),
# but a distribution VM's cgroup files stay the host root's: its root can make no cgroup there,
# nor move processes, nor touch a limit.
case_VmCgroupStaysRoots() {
  bh_other vm exec -- /bin/sh -c 'test -e /sys/fs/cgroup/cgroup.procs' || { echo "no cgroup2 in the VM"; return 0; }
  local out
  out=$(bh_other vm exec -- /bin/sh -c 'mkdir /sys/fs/cgroup/mine 2>/dev/null && echo made;
    echo $$ 2>/dev/null >/sys/fs/cgroup/cgroup.procs && echo moved;
    echo 1 2>/dev/null >/sys/fs/cgroup/cgroup.max.depth && echo raised; true')
  expect_eq "$out" "" "what the user did to their distribution VM's cgroup"
}

# A folder reaches the VM locked: VM root can neither unmount a submount to see what the host hid
# under it, nor make a read-only folder writable. Nothing of the staging stays behind.
case_MountsArriveLocked() {
  mkdir -p "$T/share/hidden"; echo secret >"$T/share/hidden/under"; chown -R $OTHER_UID "$T/share"
  mount -t tmpfs cover "$T/share/hidden"
  bh_other vm mount --read-only "$T/share" /mnt/share
  local out
  out=$(bh_other vm exec -- /bin/sh -c 'umount /mnt/share/hidden 2>/dev/null && echo unmounted;
    cat /mnt/share/hidden/under 2>/dev/null;
    mount -o remount,bind,rw /mnt/share 2>/dev/null && echo remounted;
    touch /mnt/share/x 2>/dev/null && echo written;
    ls -A /run/bulkhead/mounts')
  expect_eq "$out" "" "what VM root could do to a locked, read-only folder"
  ! grep -q "/run/vm-mounts/[^ ]*/[0-9]" /proc/self/mountinfo || fail "a staged mount stayed behind on the host"
  # The service mounts and unmounts in the staging mounts as root: no user may plant anything
  # there (a symlink swapped in for a mount point would point its unmount elsewhere).
  local staging found=0
  for staging in $(awk '$5 ~ "/run/vm-mounts/[^/]+$" { print $5 }' /proc/self/mountinfo); do
    found=1
    ! as_other ln -s / "$staging/9" 2>/dev/null || fail "uid $OTHER_UID could write in the staging mount $staging"
  done
  [ $found = 1 ] || fail "no staging mount found (test ineffective)"
  umount "$T/share/hidden"
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

# A registration from a FIFO the test holds open and never writes to: it waits for its first
# byte. Starts one as uid 4242 and prints the CLI's pid (the CLI itself, not a subshell).
stalled_registration() {
  local name=$1 fifo=$T/home/$1.fifo
  rm -f "$fifo"; mkfifo -m 0644 "$fifo"; chown $OTHER_UID "$fifo"
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" \
    HOME="$T/home" "$BIN/bulkhead" register "$name" --tar "$fifo" </dev/null >"$T/$name.out" 2>&1 &
  echo $!
}
service_threads() { ls "/proc/$SVC_PID/task" | wc -l; }
registering_dirs() { find "$T/state/distributions" -mindepth 1 -maxdepth 1 | wc -l; }
# For eventually, which must re-run the query each time: predicates, not expanded strings.
dirs_are() { [ "$(registering_dirs)" -eq "$1" ]; }
threads_at_most() { [ "$(service_threads)" -le "$1" ]; }

# A registration whose client goes away ends: its import stops waiting for bytes that will never
# come, its thread and its directory go, and the name is free again. At most
# registrations_per_user (2 here) are in progress at once.
case_StalledRegistrationsEnd() {
  local threads dirs a b c
  threads=$(service_threads); dirs=$(registering_dirs)
  a=$(stalled_registration a); b=$(stalled_registration b)
  exec 7<>"$T/home/a.fifo" 8<>"$T/home/b.fifo"   # writers that never write
  eventually dirs_are $((dirs + 2))
  expect_error EUSERS "registrations in progress" bh_other register c --tar "$T/rootfs.tar"
  kill -KILL "$a" "$b"; wait "$a" "$b" 2>/dev/null || true
  # The writers stay open: the imports must end because their clients went, not on EOF.
  eventually dirs_are "$dirs"
  eventually threads_at_most "$threads"
  exec 7>&- 8>&-
  bh_other register a --tar "$T/rootfs.tar" >/dev/null
  bh_other unregister a
}

# Archives are unpacked by bulkhead-unpack, never by the service. A user's runs as that user on the
# host (root only of a user namespace mapping just them), chrooted into the new tree, in PID and
# network namespaces of its own, with no new privileges and only the file capabilities extraction
# needs, none of which leave a chroot: a libarchive bug exploited by the archive gets the user's own
# ids in an empty tree. Caught here waiting for its first byte; its client's going kills it.
unpacker_pid() { pgrep -P "$SVC_PID" -x bulkhead-unpack; }
no_unpacker() { ! unpacker_pid >/dev/null; }
status_field() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
unpacker_confined() { local pid; pid=$(unpacker_pid) && [ "$(status_field "$pid" CapBnd)" = 000000000000001a ]; }
case_UnpackerIsConfined() {
  local cli pid dirs ns
  dirs=$(registering_dirs)
  cli=$(stalled_registration confined)
  exec 7<>"$T/home/confined.fifo"
  # It confines itself after exec; the bounding set is dropped last. (Under TSan the unconfined
  # moments before that are long enough to be caught.)
  eventually unpacker_confined
  pid=$(unpacker_pid)
  expect_eq "$(status_field "$pid" Uid)" "$OTHER_UID" "the unpacking process's uid on the host"
  [[ $(readlink "/proc/$pid/root") == "$T/state/distributions/"*/rootfs ]] ||
    fail "the unpacking process is not chrooted into the new tree: its root is $(readlink "/proc/$pid/root")"
  expect_eq "$(status_field "$pid" NoNewPrivs)" 1 "NoNewPrivs of the unpacking process"
  # CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID: bits 1, 3 and 4; no CAP_SYS_CHROOT, no CAP_CHOWN.
  expect_eq "$(status_field "$pid" CapEff)" 000000000000001a "the unpacking process's capabilities"
  expect_eq "$(status_field "$pid" CapBnd)" 000000000000001a "the unpacking process's bounding set"
  for ns in user pid net; do
    [ "$(readlink "/proc/$pid/ns/$ns")" != "$(readlink "/proc/$SVC_PID/ns/$ns")" ] ||
      fail "the unpacking process shares the service's $ns namespace"
  done
  kill -KILL "$cli"; wait "$cli" 2>/dev/null || true
  eventually no_unpacker
  eventually dirs_are "$dirs"
  exec 7>&-
  # What it unpacked is the user's, entry by entry, with no chown pass.
  bh_other register owned --tar "$T/rootfs.tar" >/dev/null
  local root found=0
  for root in "$T"/state/distributions/*/rootfs; do
    [ "$(stat -c %u "$root")" = "$OTHER_UID" ] || continue
    found=1
    expect_eq "$(find "$root" ! -user "$OTHER_UID" -o ! -group "$OTHER_UID" | head -3)" "" "entries of $root not owned by uid $OTHER_UID"
  done
  [ $found = 1 ] || fail "no rootfs of uid $OTHER_UID found (test ineffective)"
  bh_other unregister owned
}

# An "archive" that is a directory would be the unpacking process's way out of its chroot.
case_DirectoryAsArchive() {
  expect_error EINVAL "the archive must be a regular file, a pipe or a socket" \
    as_other "$HOSTILE" "$T/run" register-dir "$T/home" escape
  ! bh_other list 2>/dev/null | grep escape >/dev/null || fail "the distribution was registered"
}

# A few hundred bytes of gzip that expand to 20 MiB: over storage_bytes_per_user (8 MiB here),
# refused before the file is written, and nothing stays on disk.
case_ArchiveBomb() {
  mkdir -p "$T/bomb"; truncate -s 20M "$T/bomb/zeros"
  tar -C "$T/bomb" -czf "$T/home/bomb.tgz" .; chmod 644 "$T/home/bomb.tgz"
  local dirs; dirs=$(registering_dirs)
  expect_error EDQUOT "bytes of files, what uid $OTHER_UID has left of its storage (\[limits\] storage_bytes_per_user" bh_other register bomb --tar "$T/home/bomb.tgz"
  expect_eq "$(registering_dirs)" "$dirs" "directories in the state folder"
}

# distributions_per_user (3 here): the user has one; two more are fine, a fourth is refused.
case_DistributionsPerUser() {
  bh_other register second --tar "$T/rootfs.tar" >/dev/null
  bh_other register third --tar "$T/rootfs.tar" >/dev/null
  expect_error EDQUOT "distributions_per_user" bh_other register fourth --tar "$T/rootfs.tar"
  bh_other unregister second
  bh_other unregister third
  expect_error EINVAL "longer than 4096 bytes" bh_other register big --tar "$T/rootfs.tar" --package "$(head -c 5000 /dev/zero | tr '\0' x)"
}

# connections_per_user (8 here): a user holding 20 connections has 8 served and the rest hung up
# on; everyone else is served meanwhile, and the user again once they let go.
case_ConnectionsPerUser() {
  coproc HOLDER { as_other "$HOSTILE" "$T/run" connections 20; }
  local served; read -r served <&"${HOLDER[0]}"
  expect_eq "$served" 8 "connections served out of 20"
  expect_eq "$(bh run -d rootdist -- echo ok)" ok "root's run while uid $OTHER_UID holds its connections"
  ! bh_other list >/dev/null 2>&1 || fail "a ninth connection of uid $OTHER_UID was served"
  grep -q "control connection refused: uid $OTHER_UID has 8 open connections" "$T/daemon.log" || fail "no refusal logged"
  exec {HOLDER[1]}>&-
  wait "$HOLDER_PID"
  eventually bh_other list >/dev/null
}

# calls_per_user (8 here): 20 runs pipelined on one connection without waiting for any; 12 are
# refused, and the 8 in progress end with their connection.
case_CallsPerUser() {
  local refused
  refused=$(as_other "$HOSTILE" "$T/run" calls 20)
  expect_eq "$refused" 12 "runs refused out of 20"
  eventually no_process_with_args "sleep 4245"
  expect_eq "$(bh_other run -- echo ok)" ok "the user's next run"
}

# A VM whose process cannot die (in uninterruptible sleep: here frozen by a cgroup v1 freezer,
# which even SIGKILL does not get through) no longer holds its stop forever: after
# vm_stop_timeout_s (2 here) the distribution, then the VM, are abandoned, everyone else is served,
# and the VM's init is reaped once it ends.
FREEZER=/sys/fs/cgroup/freezer
case_StuckVmIsAbandoned() {
  if [ ! -w "$FREEZER/cgroup.procs" ]; then
    echo "note: no cgroup v1 freezer here; StuckVmIsAbandoned skipped"
    return 0
  fi
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" \
    HOME="$T/home" "$BIN/bulkhead" run -- sleep 4244 </dev/null >/dev/null 2>&1 &
  local cli=$! sleeper init frozen=$FREEZER/bulkhead-test-$$
  eventually pgrep -f -x "sleep 4244" >/dev/null
  sleeper=$(pgrep -f -x "sleep 4244"); init=$(vm_init_pid $OTHER_UID)
  mkdir "$frozen"; echo "$sleeper" >"$frozen/cgroup.procs"; echo FROZEN >"$frozen/freezer.state"
  timeout 20 setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" \
    HOME="$T/home" "$BIN/bulkhead" shutdown || fail "the stop of a VM with a stuck process did not return"
  grep -q "the VM (init pid $init) did not end within 2 s of SIGKILL" "$T/daemon.log" || fail "no abandonment logged"
  expect_eq "$(bh run -d rootdist -- echo ok)" ok "root's run while uid $OTHER_UID's old VM is stuck"
  [ -e "/proc/$init" ] || fail "the stuck VM's init is already gone: the test froze nothing"
  echo THAWED >"$frozen/freezer.state"
  eventually test ! -e "/proc/$init"   # ended and reaped by the service, not left a zombie
  rmdir "$frozen"
  wait "$cli" 2>/dev/null || true
  expect_eq "$(bh_other run -- echo again)" again "the user's next VM"
}

printf '[limits]\nvm_stop_timeout_s = 2\nconnections_per_user = 8\ncalls_per_user = 8\nregistrations_per_user = 2\ndistributions_per_user = 3\nstorage_bytes_per_user = 8388608\n' \
  >"$T/cfg/bulkhead.toml"
make_rootfs "$T/rootfs" "$T/rootfs.tar"
chmod 644 "$T/rootfs.tar"
exec 251>"$T/leaked-fd"   # inherited by the service without O_CLOEXEC
start_service
exec 251>&-
bh_other register mine --tar "$T/rootfs.tar" >/dev/null
bh register rootdist --rootfs "$T/rootfs" >/dev/null
bh_other run -- true

for name in MountsStayInTheVm VmCgroupStaysRoots MountsArriveLocked UnreadableFolder OversizedMessage RunEndsWithItsClient InitsHoldNoServiceFd \
  StalledRegistrationsEnd UnpackerIsConfined DirectoryAsArchive ArchiveBomb DistributionsPerUser ConnectionsPerUser CallsPerUser StuckVmIsAbandoned; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || continue
  started=${EPOCHREALTIME/./}
  "case_$name"
  ms=$(((${EPOCHREALTIME/./} - started) / 1000))
  printf 'case %s: ok (%d.%03d s)\n' "$name" $((ms / 1000)) $((ms % 1000))
done
kill -0 "$SVC_PID" || fail "the service died"
echo "hostile-user: ok"
