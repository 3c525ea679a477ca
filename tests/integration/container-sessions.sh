#!/usr/bin/env bash
# Container sessions from the CLI: create, open, list, show, exec, idle, terminate; storage, limits,
# ownership across users, and bad input that changes nothing.
source "$(dirname "$0")/lib.sh"
printf '[limits]\ncontainer_sessions_per_user = 4\n' >"$T/cfg/bulkhead.toml"
start_service

cs() { bh container session "$@"; }
cs_other() { bh_other container session "$@"; }
session_field() { cs show "$1" --json | jq -r "$2"; }

# --- Create, open, list, show ---
out=$(cs create work --json)
expect_eq "$(echo "$out" | jq -r .created)" "true" "first create creates"
expect_eq "$(echo "$out" | jq -r .vm_state)" "idle" "the VM starts lazily"
expect_eq "$(echo "$out" | jq -r .storage)" "" "no --storage: tmpfs"
expect_eq "$(cs create work --json | jq -r .created)" "false" "a second create opens it"
expect_error EEXIST "already exists" cs create work --new
expect_eq "$(cs list --json | jq -r '.[].name')" "work" "listed"
expect_eq "$(session_field work .uid)" "0" "owned by root"

# --- exec: stdio of the caller, exit status back, environment, the VM started on demand ---
expect_eq "$(echo hello | cs exec work -- cat)" "hello" "stdin and stdout reach the program"
rc=0; cs exec work -- sh -c 'exit 12' || rc=$?
expect_eq "$rc" "12" "the exit status comes back"
expect_eq "$(cs exec work -e GREETING=hi -- sh -c 'echo $GREETING')" "hi" "-e reaches the program"
expect_eq "$(session_field work .vm_state)" "running" "exec started the VM"
VM_PID=$(session_field work .vm_init_pid)
[ "$VM_PID" -gt 0 ] || fail "no VM init pid"
# The tmpfs storage is writable by the VM and survives between programs.
cs exec work -- sh -c 'echo kept > /storage/file'
expect_eq "$(cs exec work -- cat /storage/file)" "kept" "tmpfs storage between programs"

# --- Storage that survives the VM; idle stops it, the next use restarts it ---
mkdir "$T/store"
cs create stored --storage "$T/store" --idle-timeout 1 >/dev/null
cs exec stored -- sh -c 'echo persisted > /storage/data'
expect_eq "$(cat "$T/store/data")" "persisted" "the storage folder is the host folder"
expect_eq "$(cs idle stored)" "The VM was stopped" "idle stops a running VM"
expect_eq "$(session_field stored .vm_state)" "idle" "idle after the trigger"
expect_eq "$(cs idle stored)" "The VM was already idle" "idle reports an idle VM"
expect_eq "$(cs exec stored -- cat /storage/data)" "persisted" "restarted VM sees the storage"
# The idle timer stops a storage-backed VM by itself; a tmpfs-backed one keeps running.
vm_idle() { [ "$(session_field stored .vm_state)" = idle ]; }
DEADLINE=10 eventually vm_idle
expect_eq "$(session_field work .vm_state)" "running" "a session without storage keeps its VM"

# --- terminate ends everything the session ran ---
cs exec work --detach -- sleep 600
SLEEP_PID=$(pgrep -f "^sleep 600$" | head -1)
[ -n "$SLEEP_PID" ] || fail "the detached sleep is not running"
cs terminate work
expect_error ENOENT "no container session" cs show work
! kill -0 "$VM_PID" 2>/dev/null || fail "the VM init survived terminate"
gone() { ! kill -0 "$SLEEP_PID" 2>/dev/null; }
eventually gone
[ -z "$(ls "$T/run/vm-mounts" | grep '^storage-' || true)" ] || fail "the session's tmpfs was left behind"

# --- Limits go into the VM's cgroup ---
cs create limited --memory 64 --cpus 0.5 --start-vm >/dev/null
LIMITED_PID=$(session_field limited .vm_init_pid)
MEMCG=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' "/proc/$LIMITED_PID/cgroup")
CPUCG=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' "/proc/$LIMITED_PID/cgroup")
MEM_FILE=/sys/fs/cgroup/memory$MEMCG/memory.limit_in_bytes
[ -f "$MEM_FILE" ] || MEM_FILE=/sys/fs/cgroup/unified$(awk -F: '$1 == 0 { print $3 }' "/proc/$LIMITED_PID/cgroup")/memory.max
expect_eq "$(cat "$MEM_FILE")" "$((64 << 20))" "--memory in the VM's cgroup"
if [ -f "/sys/fs/cgroup/cpu$CPUCG/cpu.cfs_quota_us" ]; then
  expect_eq "$(cat "/sys/fs/cgroup/cpu$CPUCG/cpu.cfs_quota_us")" "50000" "--cpus in the VM's cgroup"
fi
cs terminate limited

# --- Another user can neither see nor use root's session; root reaches theirs only with --uid ---
cs create mine >/dev/null
expect_eq "$(cs_other list --json | jq length)" "0" "uid $OTHER_UID sees none of root's sessions"
expect_error ENOENT "no container session" cs_other show mine
expect_error ENOENT "no container session" cs_other exec mine -- true
expect_error ENOENT "no container session" cs_other terminate mine
expect_error EPERM "only root" bh_other --uid 0 container session show mine
expect_error EPERM "only root" cs_other idle mine
cs_other create theirs >/dev/null
expect_error ENOENT "no container session" cs show theirs
expect_eq "$(bh --uid $OTHER_UID container session show theirs --json | jq -r .uid)" "$OTHER_UID" "root with --uid"
expect_eq "$(cs_other exec theirs -- id -u)" "0" "the user is root in their session's VM"
expect_eq "$(cs list --all --json | jq -r "[.[].name] | sort | join(\",\")")" "mine,stored,theirs" "root lists everyone's with --all"

# --- Bad input: clear errors, nothing changes ---
before=$(cs list --all --json)
mounts_before=$(ls "$T/run/vm-mounts")
expect_error EINVAL "invalid container session name" cs create 'bad/name'
expect_error EINVAL "invalid container session name" cs create "$(printf 'x%.0s' {1..65})"
expect_error EINVAL "invalid container session name" cs create ''
expect_error EINVAL "not an absolute path" cs create rel --storage relative/dir
expect_error ENOENT "cannot open the storage folder" cs create missing --storage "$T/nowhere"
mkdir "$T/roots-only" && chmod 755 "$T/roots-only"
expect_error EACCES "cannot write in the storage folder" cs_other create nowrite --storage "$T/roots-only"
expect_error EINVAL "invalid --cpus" cs create cpu --cpus -1
expect_error EINVAL "invalid --cpus" cs create cpu --cpus lots
expect_error EINVAL "invalid --memory" cs create mem --memory -5
expect_error EINVAL "at least 16 MB" cs create mem --memory 1
expect_error EINVAL "every VM is limited" cs create mem --memory $((1 << 29))
expect_error EINVAL "invalid --network" cs create net --network bridge
expect_error EINVAL "invalid --idle-timeout" cs create idle --idle-timeout -1
expect_error ENOENT "no container session" cs exec nosuch -- true
expect_error ENOENT "no container session" cs terminate nosuch
expect_eq "$(cs list --all --json)" "$before" "failed creations changed nothing"
expect_eq "$(ls "$T/run/vm-mounts")" "$mounts_before" "failed creations left no staging mount or tmpfs"

# --- At most container_sessions_per_user each (root has mine and stored) ---
cs create q1 >/dev/null
cs create q2 >/dev/null
expect_error EDQUOT "container_sessions_per_user" cs create q3
expect_eq "$(cs_other create q3 --json | jq -r .created)" "true" "another user's sessions count apart"
cs terminate q1
cs create q3 >/dev/null

# --- shutdown --all ends every session; the service stops cleanly with sessions open ---
bh shutdown --all
expect_eq "$(cs list --all --json | jq length)" "0" "shutdown --all ended every session"
cs create last --start-vm >/dev/null
LAST_PID=$(session_field last .vm_init_pid)
stop_service
! kill -0 "$LAST_PID" 2>/dev/null || fail "a session VM survived the service"
echo "container-sessions: ok"
