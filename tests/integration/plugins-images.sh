#!/usr/bin/env bash
# Images and containers in container sessions, seen by users and by plugins: the Wslc* image and
# container cases of the plugin catalog, translated, against a fresh service each, the same
# expected logs in both isolation modes; then the rest, with process isolation. skopeo, umoci and crun run for real in the session's VM;
# the image is the fixtures' busybox root as a docker-archive named debian:latest.
#
#   plugins-images.sh ISOLATION [CASE...]     ISOLATION: process or none; default: every case
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

# The catalog's cases run in both isolation modes; the rest are about images and containers
# themselves, which the isolation mode does not change: they run with process isolation only.
CASES=(WslcSuccess WslcContainerRejected WslcPullImageNotification)
PROCESS_CASES=(ImageTagsAndErrors ImageImport ProgressOnATerminal ContainerStopAndEnd ContainerExecAndLogs ContainerVolumes
  ContainerCgroups ContainerRestart NonRootContainers IndexPersists IndexLimits)

if [ "${1:-}" != --case ]; then
  isolation=${1:?usage: plugins-images.sh process|none [CASE...]}
  shift
  cases=("${@:-${CASES[@]}}")
  [ "$isolation" = none ] || [ $# -gt 0 ] || cases+=("${PROCESS_CASES[@]}")
  exec "$HERE/plugins-run-cases.sh" "$0" "$isolation" "${cases[@]}"
fi

ISOLATION=$2
CASE=$3
source "$HERE/lib.sh"
trap '__rc=$?; set +e; shrink_daemon_log; (exit $__rc); cleanup' EXIT

IMAGE_TAR=$FIXTURES/image.tar
FATAL="A fatal error was returned by plugin 'test-plugin'"

setup() {
  install_test_plugin "$1" test-plugin "$ISOLATION"
  start_service
}
cs() { bh container session "$@"; }
ctr() { bh container "$@"; }
# What the session's VM holds in its store (seen from inside it): image directories, staging.
store_entries() { cs exec "$1" -- sh -c "ls /storage/$2 | wc -l"; }
# Host processes of a container: they run `sleep SECONDS` (a number no other test uses).
sleepers() { pgrep -f "^sleep $1\$" | wc -l; }
# Ends a CLI started with `ctr ... &` (a subshell running it; SIGINT is ignored there).
stop_background() {
  pkill -TERM -P "$1" || true
  wait "$1" || true
}
containers_with_id() { ctr ls -a --json | jq --arg id "$1" '[.[] | select(.Id == $id)] | length'; }
log_lines() { ctr logs "$1" | wc -l; }
# `tail` processes in the session's VM (logs -f).
vm_tails() { cs exec bulkhead-cli -- sh -c 'pgrep -c "^tail" || true'; }

# WslcSuccess: a session with 4 CPUs, 4096 MB and no network; loading starts its VM, where the
# plugin's checks of on_container_vm_started run (WslcProcessApi's); a container runs from the
# image, is killed, and the image is force-removed; the hooks come in the catalog's order.
case_WslcSuccess() {
  setup WslcProcessApi
  cs create wslc --cpus 4 --memory 4096 >/dev/null
  expect_eq "$(ctr image load -s wslc "$IMAGE_TAR")" "Loaded image: debian:latest" "load"
  local image_id; image_id=$(ctr image inspect -s wslc debian:latest | jq -r .Id)
  [[ $image_id =~ ^sha256:[0-9a-f]{64}$ ]] || fail "image id '$image_id'"
  local id; id=$(ctr run -s wslc -d --name wslc-plugin-container debian:latest sleep 120)
  [[ $id =~ ^[0-9a-f]{64}$ ]] || fail "container id '$id'"
  expect_eq "$(ctr ls -s wslc --json | jq -r '.[].Name')" "wslc-plugin-container" "listed"
  expect_eq "$(ctr inspect -s wslc wslc-plugin-container | jq -c '[.State.Status, .HostConfig.NanoCpus, .HostConfig.Memory, .HostConfig.NetworkMode]')" \
    '["running",4000000000,4294967296,"none"]' "its inspect JSON"
  ctr kill -s wslc wslc-plugin-container >/dev/null
  expect_eq "$(ctr inspect -s wslc "${id:0:12}" | jq -c '[.State.Status, .State.ExitCode]')" '["exited",137]' "killed"
  ctr image rm -s wslc -f debian:latest >/dev/null
  cs terminate wslc
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcProcessApi, api_version=*)
Container session created (session_id=1, name=wslc, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=wslc)
$(process_api_lines)
Image created (id=$image_id, name=debian:latest)
Container started (name=wslc-plugin-container, image=debian:latest, state=running)
Container stopping (id=$id)
Image deleted (id=$image_id)
Container VM stopping (session_id=1, name=wslc)
Container session stopping (session_id=1, name=wslc, application_pid=*, uid=0, gid=0, user_name=root)
EOF
  [ ! -e "$T/plugins/written" ] || fail "a write went through the read-only mount"
}

# WslcContainerRejected: the plugin vetoes the container in on_container_started: the run fails
# with its message, the container is stopped and removed, with no on_container_stopping.
case_WslcContainerRejected() {
  setup WslcContainerRejected
  ctr image load "$IMAGE_TAR" >/dev/null
  expect_failure_output "$FATAL. Error message: 'container rejected by test-plugin'" \
    "Error code: Bulkhead/Service/RunContainer/EPERM" ctr run --name vetoed debian:latest sleep 987
  expect_eq "$(ctr ls -a --json | jq length)" "0" "the vetoed container is gone"
  expect_eq "$(store_entries bulkhead-cli containers)" "0" "and so are its files"
  DEADLINE=10 eventually output_is 0 sleepers 987
  cs terminate bulkhead-cli
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=WslcContainerRejected, api_version=*)
Container session created (session_id=1, name=bulkhead-cli, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=bulkhead-cli)
Image created (id=sha256:*, name=debian:latest)
Container started (name=vetoed, image=debian:latest, state=running)
vetoing the container
plugin_error(message=container rejected by test-plugin) -> OK
Container VM stopping (session_id=1, name=bulkhead-cli)
Container session stopping (session_id=1, name=bulkhead-cli, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

# WslcPullImageNotification: a registry (Debian's docker-registry) runs as a container on the
# session's loopback; tag, push and untag fire nothing; pulling the pushed image back fires one
# on_image_created with the pulled reference, and the id survives the round trip. The registry
# left running gets no on_container_stopping when the session ends.
case_WslcPullImageNotification() {
  if [ ! -f "$FIXTURES/registry.tar" ]; then
    echo "note: SKIPPED: no registry image (Debian's docker-registry could not be downloaded)"
    return 0
  fi
  setup Success
  ctr image load "$IMAGE_TAR" >/dev/null
  ctr image load "$FIXTURES/registry.tar" >/dev/null
  local id rid; id=$(ctr image inspect debian:latest | jq -r .Id); rid=$(ctr image inspect registry:2 | jq -r .Id)
  ctr run -d --network host --name registry registry:2 >/dev/null
  DEADLINE=30 eventually cs exec bulkhead-cli -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null
  local remote=127.0.0.1:5000/debian:latest
  ctr image tag debian:latest "$remote"
  expect_error EIO "cannot push $remote: .*HTTP" ctr image push "$remote"
  expect_error EINVAL "only for a registry on the session's loopback" ctr image push --insecure debian:latest
  expect_error EINVAL "only for a registry on the session's loopback" ctr image pull --insecure example.com/x:1
  ctr image push --insecure "$remote"
  expect_eq "$(ctr image rm "$remote")" "Untagged: $remote" "untag only"
  expect_eq "$(ctr image pull --insecure "$remote")" "Pulled image: $remote ($id)" "pulled back, same id"
  expect_eq "$(ctr image inspect "$remote" | jq -r .Id)" "$id" "the id survived load, push and pull"
  expect_error EIO "cannot pull 127.0.0.1:5000/nothing:here" ctr image pull --insecure 127.0.0.1:5000/nothing:here
  expect_error EIO "cannot pull 127.0.0.1:5001/debian:latest" ctr image pull --insecure 127.0.0.1:5001/debian:latest
  expect_eq "$(store_entries bulkhead-cli images)" "2" "failed pulls left no image"
  cs terminate bulkhead-cli
  expect_log "$PLUGIN_LOG" <<EOF
Plugin loaded (mode=Success, api_version=*)
Container session created (session_id=1, name=bulkhead-cli, application_pid=*, uid=0, gid=0, user_name=root)
Container VM started (session_id=1, name=bulkhead-cli)
Image created (id=$id, name=debian:latest)
Image created (id=$rid, name=registry:2)
Container started (name=registry, image=registry:2, state=running)
Image created (id=$id, name=$remote)
Container VM stopping (session_id=1, name=bulkhead-cli)
Container session stopping (session_id=1, name=bulkhead-cli, application_pid=*, uid=0, gid=0, user_name=root)
EOF
}

# A load creates one image per tag it brings (one hook each); removing one of two tags deletes
# nothing; ids survive; bad archives and references fail clearly and leave nothing in the store.
case_ImageTagsAndErrors() {
  setup Success
  skopeo --insecure-policy copy --quiet "docker-archive:$IMAGE_TAR" "docker-archive:$T/two.tar:debian:stable" \
    --additional-tag debian:latest
  ctr image load "$T/two.tar" >"$T/loaded"
  expect_eq "$(sort "$T/loaded" | tr '\n' ' ')" "Loaded image: debian:latest Loaded image: debian:stable " "two tags loaded"
  local id; id=$(ctr image inspect debian:stable | jq -r .Id)
  expect_eq "$(ctr image inspect debian:latest | jq -r .Id)" "$id" "one image, two tags"
  expect_eq "$(ctr image ls --json | jq -c '[.[].RepoTags | sort]')" '[["debian:latest","debian:stable"]]' "listed once"
  expect_eq "$(ctr image rm debian:stable)" "Untagged: debian:stable" "one tag of two"
  expect_eq "$(ctr image inspect "${id:7:12}" | jq -c .RepoTags)" '["debian:latest"]' "by short id"
  # Loading the same archive again creates nothing new (the tags point where they did).
  ctr image load "$IMAGE_TAR" >/dev/null
  expect_eq "$(ctr image ls --json | jq -r '.[].Id')" "$id" "the id survived a second load"

  head -c 100000 "$IMAGE_TAR" >"$T/truncated.tar"
  expect_error EIO "cannot load the image archive" ctr image load "$T/truncated.tar"
  head -c 50000 /dev/urandom >"$T/garbage.tar"
  expect_error EIO "cannot load the image archive" ctr image load "$T/garbage.tar"
  expect_error EINVAL "not a regular file" ctr image load /dev/null
  expect_error ENOENT "cannot open the archive" ctr image load "$T/missing.tar"
  expect_error ENOENT "no such image: 'debian:unknown'" ctr run debian:unknown true
  expect_error ENOENT "no such image" ctr image rm nothing:here
  expect_error EINVAL "invalid image reference" ctr image inspect 'Bad Ref!'
  expect_eq "$(store_entries bulkhead-cli images)" "1" "failed loads left no image"
  expect_eq "$(store_entries bulkhead-cli tmp)" "0" "nor anything staged"
  expect_eq "$(ctr image ls --json | jq length)" "1" "the index holds the one image"
  expect_eq "$(grep -c '^Image created' "$PLUGIN_LOG")" "2" "one hook per tag created, none for the rest"

  # A container uses the image: removal needs -f, and never of a running one.
  ctr run -d --name user debian:latest sleep 986 >/dev/null
  expect_error EBUSY "used by the running container 'user'" ctr image rm -f debian:latest
  expect_error EBUSY "is running" ctr rm user
  expect_error EEXIST "exists already" ctr run -d --name user debian:latest true
  expect_error EINVAL "invalid container name" ctr run --name '-x' debian:latest true
  ctr rm -f user >/dev/null
  expect_eq "$(grep -c '^Container stopping' "$PLUGIN_LOG")" "1" "rm -f announced the stop"
  ctr image rm debian:latest >/dev/null
  expect_eq "$(grep -c '^Image deleted' "$PLUGIN_LOG")" "1" "deleted once"
  expect_eq "$(store_entries bulkhead-cli images)" "0" "the image's files are gone"
}

# import makes a one-layer image of a root filesystem tar, plain or compressed, device nodes and
# all (an mmdebstrap tarball has /dev/console); a bad archive is a clear error and leaves nothing.
case_ImageImport() {
  setup Success
  mkdir -p "$T/devs/dev"
  mknod "$T/devs/dev/console" c 5 1
  cp "$FIXTURES/rootfs.tar" "$T/rootfs.tar"
  tar -rf "$T/rootfs.tar" -C "$T/devs" ./dev/console
  gzip -c "$T/rootfs.tar" >"$T/rootfs.tar.gz"
  xz -T1 -c "$T/rootfs.tar" >"$T/rootfs.tar.xz"
  zstd -q -c "$T/rootfs.tar" >"$T/rootfs.tar.zst"
  chmod 644 "$T"/rootfs.tar*
  local id; id=$(bh_other container image import "$T/rootfs.tar.gz" imported:gz)
  expect_eq "$(bh_other container image inspect imported:gz | jq -r .Id)" "$id" "import prints the new id"
  expect_eq "$(grep -c "^Image created (id=$id, name=imported:gz)" "$PLUGIN_LOG")" "1" "on_image_created"
  expect_eq "$(bh_other container run imported:gz sh -c 'echo imported; id -u')" $'imported\n0' "a container of it"
  expect_error EINVAL "has no command; name one" bh_other container run imported:gz
  local suffix tag
  for suffix in .xz .zst ""; do
    tag=${suffix:-.plain}
    bh_other container image import "$T/rootfs.tar$suffix" "imported:${tag#.}" >/dev/null
    expect_eq "$(bh_other container run "imported:${tag#.}" echo "$tag")" "$tag" "imported from rootfs.tar$suffix"
  done
  expect_eq "$(bh_other container image ls --json | jq -c '[.[].RepoTags[]] | sort')" \
    '["imported:gz","imported:plain","imported:xz","imported:zst"]' "one image per import"

  head -c 300000 "$T/rootfs.tar.gz" >"$T/truncated.tar.gz"
  head -c 50000 /dev/urandom >"$T/garbage.tar"
  chmod 644 "$T/truncated.tar.gz" "$T/garbage.tar"
  expect_error EIO "cannot decompress the archive" bh_other container image import "$T/truncated.tar.gz" bad:1
  expect_error EIO "the archive is not a valid tar" bh_other container image import "$T/garbage.tar" bad:2
  expect_error EINVAL "invalid image reference" bh_other container image import "$T/rootfs.tar" 'Bad Ref!'
  expect_error EINVAL "not a regular file" bh_other container image import /dev/null bad:3
  expect_eq "$(bh_other container session exec bulkhead-cli -- sh -c 'ls /storage/images | wc -l; ls /storage/tmp | wc -l' | tr '\n' ' ')" \
    "4 0 " "failed imports left nothing in the store"
  expect_eq "$(grep -c '^Image created' "$PLUGIN_LOG")" "4" "no hook for a failed import"
}

# Long work shows progress on a terminal (script(1) gives the CLI one), and nothing otherwise.
case_ProgressOnATerminal() {
  setup Success
  ctr image load "$IMAGE_TAR" >"$T/out" 2>"$T/err"
  expect_eq "$(cat "$T/out")" "Loaded image: debian:latest" "without a terminal"
  expect_eq "$(cat "$T/err")" "" "nothing on stderr without a terminal"
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" \
    script -qec "$BIN/bulkhead container image load $IMAGE_TAR" /dev/null >"$T/tty"
  grep -qF "Loading $IMAGE_TAR: " "$T/tty" || fail "no progress line: $(cat -v "$T/tty")"
  grep -qE "of 2\.14MB.* \([0-9]+ s\)" "$T/tty" || fail "no size in the progress line: $(cat -v "$T/tty")"
  grep -qF $'\r\e[KLoaded image: debian:latest' "$T/tty" || fail "the line was not cleared: $(cat -v "$T/tty")"
  # Distributions too: register and export.
  BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" \
    script -qec "$BIN/bulkhead register shown --tar $FIXTURES/rootfs.tar; $BIN/bulkhead export shown $T/shown.tar.gz" \
    /dev/null >"$T/tty"
  grep -qE "Registering $FIXTURES/rootfs.tar: .* of 2\.1[0-9]MB" "$T/tty" || fail "no register progress: $(cat -v "$T/tty")"
  grep -qF "Exporting shown: " "$T/tty" || fail "no export progress: $(cat -v "$T/tty")"
  [ -s "$T/shown.tar.gz" ] || fail "nothing exported"
}

# Exit statuses come back; a process that ignores SIGTERM is killed after --time; a container
# left running dies with its session, and every container with a SIGKILLed service.
case_ContainerStopAndEnd() {
  setup Success
  ctr image load "$IMAGE_TAR" >/dev/null
  local rc=0
  ctr run debian:latest sh -c 'echo out; echo err >&2; read line; echo "got $line"; exit 7' \
    <<<"fed" >"$T/out" 2>"$T/err" || rc=$?
  expect_eq "$rc" "7" "the container's exit status; stderr: $(cat "$T/err")"
  expect_eq "$(cat "$T/out")" $'out\ngot fed' "its stdout and stdin"
  expect_eq "$(cat "$T/err")" "err" "its stderr"
  expect_eq "$(ctr run -e GREETING=hi debian:latest sh -c 'echo $GREETING $PATH')" \
    "hi /usr/sbin:/usr/bin:/sbin:/bin" "the image's environment and -e"

  ctr run -d --name stubborn debian:latest sh -c 'trap "" TERM; while :; do sleep 1; done' >/dev/null
  local start; start=$(now_ms)
  ctr stop --time 2 stubborn >/dev/null
  local took=$(($(now_ms) - start))
  [ "$took" -ge 2000 ] || fail "stop returned after $took ms, before its --time"
  expect_eq "$(ctr inspect stubborn | jq -c '[.State.Status, .State.ExitCode]')" '["exited",137]' "killed after --time"

  ctr run -d debian:latest sleep 985 >/dev/null
  ctr run -d --network host debian:latest sleep 985 >/dev/null
  DEADLINE=10 eventually output_is 2 sleepers 985
  cs terminate bulkhead-cli
  DEADLINE=10 eventually output_is 0 sleepers 985
  expect_eq "$(grep -c '^Container stopping' "$PLUGIN_LOG")" "1" "only the stop announced one"

  ctr image load "$IMAGE_TAR" >/dev/null
  ctr run -d debian:latest sleep 984 >/dev/null
  DEADLINE=10 eventually output_is 1 sleepers 984
  kill -KILL "$SVC_PID"
  DEADLINE=10 eventually output_is 0 sleepers 984
  SVC_PID=
}

# exec runs a program in a running container (stdin only with -i); logs prints what a detached
# container wrote.
case_ContainerExecAndLogs() {
  setup Success
  ctr image load "$IMAGE_TAR" >/dev/null
  ctr run -d --name talker debian:latest sh -c 'echo said-this; echo and-that >&2; sleep 982' >/dev/null
  expect_eq "$(ctr exec talker sh -c 'echo in $(hostname); cat')" "in talker" "exec, stdin not connected"
  expect_eq "$(echo fed | ctr exec -i talker cat)" "fed" "exec -i"
  local rc=0; ctr exec talker sh -c 'exit 5' || rc=$?
  expect_eq "$rc" "5" "exec's exit status"
  DEADLINE=10 eventually output_is 2 log_lines talker
  expect_eq "$(ctr logs talker | sort | tr '\n' ' ')" "and-that said-this " "logs"
  ctr kill talker >/dev/null
  expect_error EINVAL "is not running" ctr exec talker true

  # create, then start: created until started, detached once started, started once only.
  ctr create --name later -e WORD=later debian:latest sh -c 'echo $WORD; sleep 980' >/dev/null
  expect_eq "$(ctr inspect later | jq -r .State.Status)" "created" "created, not started"
  expect_eq "$(pgrep -fc '^sleep 980$' || true)" "0" "nothing runs yet"
  expect_eq "$(ctr start later)" "later" "start"
  DEADLINE=10 eventually output_is later ctr logs later
  expect_eq "$(ctr inspect later | jq -r .State.Status)" "running" "running"
  expect_error EINVAL "is running already" ctr start later
  expect_error ENOENT "no such container" ctr logs nobody

  # run -d --rm: the container goes once its process ended, and fires no stopping hook.
  local gone; gone=$(ctr run -d --rm debian:latest sh -c 'sleep 2')
  expect_eq "$(containers_with_id "$gone")" "1" "listed while it runs"
  DEADLINE=10 eventually output_is 0 containers_with_id "$gone"
  expect_eq "$(grep -c '^Container stopping' "$PLUGIN_LOG" || true)" "1" "only the kill announced a stop"

  # logs -f: what was written, then what comes, until the process ends.
  ctr run -d --name ticker debian:latest sh -c 'echo one; until [ -e /go ]; do sleep 0.1; done; echo two' >/dev/null
  ctr logs -f ticker >"$T/followed" &
  local follower=$!
  DEADLINE=10 eventually output_is one cat "$T/followed"
  # The exec ends with the container's PID namespace if the container ends first: 137 then.
  rc=0; ctr exec ticker touch /go || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 137 ] || fail "exec touch /go: exit status $rc"
  wait "$follower" || fail "logs -f failed"
  expect_eq "$(cat "$T/followed")" $'one\ntwo' "logs -f followed to the end"
  expect_eq "$(ctr logs -f ticker)" $'one\ntwo' "logs -f of an ended container returns"
  # A follower dropped by its user ends in the VM too.
  ctr run -d --name quiet debian:latest sleep 977 >/dev/null
  ctr logs -f quiet >/dev/null &
  follower=$!
  DEADLINE=10 eventually output_is 1 vm_tails
  stop_background "$follower"
  DEADLINE=10 eventually output_is 0 vm_tails
}

# Each container has a cgroup of its own below its session VM's (delegated to the VM's root, the
# session's user), exec'd programs too; the user cannot raise the VM's bounds through it, nor nest
# deeper than allowed; nothing of it survives terminate or a SIGKILLed service; its mounts stay
# in the VM.
case_ContainerCgroups() {
  setup Success
  local mnt; mnt=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
  [ -n "$mnt" ] || { echo "no cgroup2 mount: nothing to check"; return 0; }
  bh_other container image load "$IMAGE_TAR" >/dev/null
  bh_other container run -d --name grouped debian:latest sleep 976 >/dev/null
  local id; id=$(bh_other container inspect grouped | jq -r .Id)
  DEADLINE=10 eventually output_is 1 sleepers 976
  local path; path=$(sed -n 's/^0:://p' "/proc/$(pgrep -f '^sleep 976$')/cgroup")
  expect_eq "$(basename "$path")" "$id" "the container's own cgroup"
  local vm=$mnt$(dirname "$path")
  # The container's overlay lives in the VM's mount namespace only.
  ! grep -qF "/containers/$id/" /proc/self/mountinfo || fail "a container's mount reached the host"
  bh_other container session exec bulkhead-cli -- grep -qF "/containers/$id/rootfs" /proc/self/mountinfo ||
    fail "the container's overlay is not mounted in the VM (the check above would prove nothing)"
  case "$(basename "$vm")" in bulkhead-vm-*) ;; *) fail "not below a VM's cgroup: $path" ;; esac
  bh_other container exec grouped sleep 975 &
  local execer=$!
  DEADLINE=10 eventually output_is 1 sleepers 975
  expect_eq "$(sed -n 's/^0:://p' "/proc/$(pgrep -f '^sleep 975$')/cgroup")" "$path" "exec joins it"
  stop_background "$execer"

  # The bounds stay root's; two levels below the VM's cgroup, no more.
  local rc=0
  bh_other container session exec bulkhead-cli -- sh -c 'echo max >/sys/fs/cgroup/cgroup.max.descendants' 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "the user raised the VM's cgroup bound"
  expect_eq "$(cat "$vm/cgroup.max.descendants")" "512" "the bound held"
  bh_other container session exec bulkhead-cli -- mkdir -p /sys/fs/cgroup/a/b
  rc=0
  bh_other container session exec bulkhead-cli -- mkdir /sys/fs/cgroup/a/b/c 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "a third level was made"

  bh_other container rm -f grouped >/dev/null
  DEADLINE=10 eventually [ ! -d "$vm/$id" ]
  # The user's own host processes may write in the delegated cgroup too: one that keeps making
  # cgroups there while the session ends (it once kept the VM's cgroup, stalling the service 8 s)
  # gets it taken back first.
  timeout 30 setpriv --reuid "$OTHER_UID" --regid "$OTHER_UID" --clear-groups \
    perl -e 'while (1) { for my $i (1 .. 64) { mkdir "$ARGV[0]/r$i"; mkdir "$ARGV[0]/r$i/s" } }' "$vm" &
  local racer=$!
  DEADLINE=10 eventually [ -d "$vm/r64/s" ]
  bh_other container session terminate bulkhead-cli
  DEADLINE=10 eventually [ ! -d "$vm" ]
  kill "$racer"; wait "$racer" || true

  # A SIGKILLed service leaves the VM's cgroups (a user's below them too) to its next start.
  bh_other container image load "$IMAGE_TAR" >/dev/null
  bh_other container run -d debian:latest sleep 974 >/dev/null
  DEADLINE=10 eventually output_is 1 sleepers 974
  vm=$mnt$(dirname "$(sed -n 's/^0:://p' "/proc/$(pgrep -f '^sleep 974$')/cgroup")")
  bh_other container session exec bulkhead-cli -- mkdir -p /sys/fs/cgroup/a/b
  kill -KILL "$SVC_PID"
  SVC_PID=
  DEADLINE=10 eventually output_is 0 sleepers 974
  start_service
  DEADLINE=10 eventually [ ! -d "$vm" ]
}

# -v binds a host folder the user may read (read-write, or read-only with :ro) and inspect lists
# it; a folder the user may not open is refused by the CLI's own open, a bad destination by the
# service; the VM's mounts go with the container.
case_ContainerVolumes() {
  setup Success
  mkdir -m 777 "$T/shared" && echo "from the host" >"$T/shared/note"
  mkdir -m 700 "$T/private"
  bh_other container image load "$IMAGE_TAR" >/dev/null
  expect_eq "$(bh_other container run -v "$T/shared:/data" debian:latest sh -c 'cat /data/note; echo back >/data/reply')" \
    "from the host" "a read-write volume"
  expect_eq "$(cat "$T/shared/reply")" "back" "written through it"
  expect_eq "$(stat -c %u "$T/shared/reply")" "$OTHER_UID" "as the user"
  local rc=0
  bh_other container run -v "$T/shared:/data:ro" debian:latest sh -c 'echo x >/data/other' 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "a write went through a read-only volume"
  [ ! -e "$T/shared/other" ] || fail "the read-only volume was written"
  bh_other container run -d --name keeper -v "$T/shared:/data:ro" debian:latest sleep 981 >/dev/null
  expect_eq "$(bh_other container inspect keeper | jq -c '.Mounts')" "[{\"Destination\":\"/data\",\"RW\":false,\"Source\":\"$T/shared\"}]" "inspect lists it"
  expect_error EACCES "cannot open the volume's folder" bh_other container run -v "$T/private:/data" debian:latest true
  expect_error EINVAL "invalid volume destination" bh_other container run -v "$T/shared:/a/../etc" debian:latest true
  expect_error EINVAL "invalid volume" bh_other container run -v "relative:/data" debian:latest true
  # An ended container's volumes are unmounted by its monitor, just after its exit status went out.
  DEADLINE=10 eventually volume_mounts_are 1 # only the running container's
  bh_other container rm -f keeper >/dev/null
  DEADLINE=10 eventually volume_mounts_are 0
}
volume_mounts_are() {
  [ "$(bh_other container session exec bulkhead-cli -- sh -c 'grep -c " /volumes/" /proc/self/mountinfo || true')" = "$1" ]
}

# A user's containers run as that user on the host, in the user's own session.
case_NonRootContainers() {
  setup Success
  bh_other container image load "$IMAGE_TAR" >/dev/null
  expect_eq "$(bh_other container run debian:latest id -u)" "0" "root inside the container"
  bh_other container run -d debian:latest sleep 983 >/dev/null
  DEADLINE=10 eventually output_is 1 sleepers 983
  expect_eq "$(ps -o uid= -p "$(pgrep -f '^sleep 983$')" | tr -d ' ')" "$OTHER_UID" "the user's own uid on the host"
  expect_error ENOENT "no such image" ctr run debian:latest true
  expect_eq "$(bh container image ls --json | jq length)" "0" "root's session is not the user's"
  bh_other container session terminate bulkhead-cli
  DEADLINE=10 eventually output_is 0 sleepers 983
}

# An exited container starts again with its files as it left them, its volumes opened again by
# the CLI and mounted only while it runs, on_container_started each time; also in a VM started
# after the one it ran in (its overlay mounted again there).
container_state_of() { "$1" container inspect "${@:2}" | jq -r '.State.Status + " " + (.State.ExitCode | tostring)'; }
container_state() { container_state_of bh_other "$@"; }
case_ContainerRestart() {
  setup Success
  mkdir -m 777 "$T/vol" "$T/store"
  chown "$OTHER_UID" "$T/store"
  echo one >"$T/vol/in"
  bh_other container image load "$IMAGE_TAR" >/dev/null
  local script='cat /data/in; echo ran >>/counter; wc -l </counter; exit 3'
  bh_other container run -d --name again -v "$T/vol:/data:ro" debian:latest sh -c "$script" >/dev/null
  DEADLINE=10 eventually output_is "exited 3" container_state again
  echo two >"$T/vol/in"
  expect_eq "$(bh_other container start again)" "again" "start says its name"
  DEADLINE=10 eventually output_is "exited 3" container_state again
  expect_eq "$(bh_other container logs again | tr '\n' ' ')" "one 1 two 2 " "the second run saw its files and the volume"
  expect_eq "$(grep -c '^Container started' "$PLUGIN_LOG")" "2" "on_container_started for each start"
  DEADLINE=10 eventually volume_mounts_are 0
  # Root starting it for the user opens nothing: the user could have recorded a path behind a
  # folder only root reaches, and root's rights would mount it into the user's VM.
  expect_error EINVAL "run by the container's owner" bh --uid "$OTHER_UID" container start again
  DEADLINE=10 eventually volume_mounts_are 0
  bh_other container run -d --name long debian:latest sleep 986 >/dev/null
  expect_error EINVAL "is running already" bh_other container start long
  bh_other container rm -f long >/dev/null
  rmdir "$T/vol" 2>/dev/null || rm -rf "$T/vol"
  expect_error ENOENT "cannot open the volume's folder $T/vol" bh_other container start again
  expect_eq "$(container_state again)" "exited 3" "a failed start changes nothing"

  # In a VM started after the one it ran in (root's session: root may idle it).
  bh container session create st --storage "$T/store" --idle-timeout 0 >/dev/null
  bh container image load -s st "$IMAGE_TAR" >/dev/null
  bh container run -s st -d --name later debian:latest sh -c 'echo ran >>/counter; wc -l </counter' >/dev/null
  DEADLINE=10 eventually output_is "exited 0" container_state_of bh -s st later
  expect_eq "$(bh container session idle st)" "The VM was stopped" "the VM stops"
  bh container start -s st later >/dev/null
  DEADLINE=10 eventually output_is "exited 0" container_state_of bh -s st later
  expect_eq "$(bh container logs -s st later | tr '\n' ' ')" "1 2 " "its files in the next VM"
}

# With --storage, the images and their references outlive the session: a session made again on
# that storage (after a terminate, or a restart of the service) has them, with no hooks fired
# again. The index the store keeps there is the user's file, read back as hostile input.
case_IndexPersists() {
  setup Success
  mkdir "$T/store"
  chown "$OTHER_UID:$OTHER_UID" "$T/store"
  local s=(-s kept)
  bh_other container session create kept --storage "$T/store" >/dev/null
  bh_other container image load "${s[@]}" "$IMAGE_TAR" >/dev/null
  bh_other container image tag "${s[@]}" debian:latest mine:1
  bh_other container image tag "${s[@]}" debian:latest mine:2
  bh_other container image rm "${s[@]}" mine:2 >/dev/null
  local id listing
  id=$(bh_other container image inspect "${s[@]}" debian:latest | jq -r .Id)
  listing=$(bh_other container image ls "${s[@]}" --json | jq -c '[.[] | {Id, RepoTags: (.RepoTags | sort)}]')
  expect_eq "$listing" "[{\"Id\":\"$id\",\"RepoTags\":[\"debian:latest\",\"mine:1\"]}]" "before"
  # Saved after each change, in the background: the last one names mine:1 and not mine:2.
  DEADLINE=10 eventually grep -q '"mine:1"' "$T/store/index"
  DEADLINE=10 eventually output_is 0 grep -c '"mine:2"' "$T/store/index"
  bh_other container session terminate kept
  bh_other container session create kept --storage "$T/store" >/dev/null
  expect_eq "$(bh_other container image ls "${s[@]}" --json | jq -c '[.[] | {Id, RepoTags: (.RepoTags | sort)}]')" \
    "$listing" "the images and references read back"
  expect_eq "$(bh_other container run "${s[@]}" --rm mine:1 sh -c 'echo ran')" "ran" "a container from a read-back image"
  expect_eq "$(grep -c '^Image created' "$PLUGIN_LOG")" "1" "no hook for what was read back"
  # A service restart too (the session ends with it).
  stop_service
  start_service
  bh_other container session create kept --storage "$T/store" >/dev/null
  expect_eq "$(bh_other container image inspect "${s[@]}" mine:1 | jq -r .Id)" "$id" "after a restart of the service"
  bh_other container session terminate kept

  # Hostile indexes: each is left out with a warning, and the session works.
  cp "$T/store/index" "$T/index.good"
  printf '{"tags":{"evil:1":"%s","Bad Ref":"%s"}}\ngarbage\n' "${id#sha256:}" "${id#sha256:}" >"$T/store/index"
  chown "$OTHER_UID:$OTHER_UID" "$T/store/index"
  bh_other container session create kept --storage "$T/store" >/dev/null
  expect_eq "$(bh_other container image ls "${s[@]}" --json | jq length)" "0" "a garbage image line and references to no image"
  grep -q "0 images and 0 references read back from its storage (3 entries left out" "$T/daemon.log" ||
    fail "no warning for the garbage index: $(tail -5 "$T/daemon.log")"
  bh_other container session terminate kept
  rm "$T/store/index"
  ln -s /etc/shadow "$T/store/index"
  bh_other container session create kept --storage "$T/store" >/dev/null
  grep -q "cannot open the image index in the storage of container session 'kept'" "$T/daemon.log" ||
    fail "a symbolic link was followed"
  bh_other container session terminate kept
  rm "$T/store/index"
  cp "$T/index.good" "$T/store/index" # root's, not the user's
  bh_other container session create kept --storage "$T/store" >/dev/null
  expect_eq "$(bh_other container image ls "${s[@]}" --json | jq length)" "0" "an index that is not the user's"
  grep -q "ignoring the image index in the storage of container session 'kept': not a regular file of its user$" \
    "$T/daemon.log" || fail "no warning for root's index"
}

# What a user can make the service hold is bounded (the attacks of a review, as uid 4242): an
# image may have 64 tags (4,500 long ones once made a hook's JSON too large for the plugin host,
# which was killed for it, failing every user's container sessions); an image's JSON is at most
# 64 KiB (images with ~1 MB of labels once took the service to 900 MB); --insecure is only for
# loopback addresses, not for names that merely start with 127.
case_IndexLimits() {
  setup Success
  bh_other container image load "$IMAGE_TAR" >/dev/null
  local i
  for i in $(seq 2 64); do bh_other container image tag debian:latest "debian:t$i"; done
  expect_error ENOSPC "has 64 tags already" bh_other container image tag debian:latest debian:t65
  expect_eq "$(bh_other container image inspect debian:latest | jq '.RepoTags | length')" "64" "64 tags"

  # An image whose config carries ~100 KB of labels (umoci makes it, skopeo saves it).
  local work=$T/labels labels=()
  umoci init --layout "$work"
  umoci new --image "$work:base"
  for i in $(seq 1 100); do labels+=(--config.label "label$i=$(printf '%01000d' "$i")"); done
  umoci config --image "$work:base" --tag big --config.cmd /bin/sh "${labels[@]}"
  skopeo --insecure-policy copy --quiet "oci:$work:big" "docker-archive:$T/labels.tar:labels:big"
  chmod 644 "$T/labels.tar"
  expect_error E2BIG "at most 64 KiB is kept" bh_other container image load "$T/labels.tar"
  expect_eq "$(bh_other container session exec bulkhead-cli -- sh -c 'ls /storage/images | wc -l; ls /storage/tmp | wc -l' | tr '\n' ' ')" \
    "1 0 " "the refused image left nothing in the store"
  expect_eq "$(grep -c '^Image created' "$PLUGIN_LOG")" "1" "no hook for the refused image, nor for tags"

  expect_error EINVAL "only for a registry on the session's loopback" \
    bh_other container image pull --insecure 127.0.0.1.nip.io/library/x:1
  expect_eq "$(plugin_jq state)" "running" "the plugin host is alive"
}

"case_$CASE"
