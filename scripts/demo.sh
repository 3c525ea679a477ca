#!/usr/bin/env bash
# make demo: a private service in a temporary directory, a test distribution, and its isolation shown.
set -euo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "demo: bulkheadd needs root (namespaces); run 'sudo make demo'" >&2; exit 1; }
dir=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
chmod 755 "$dir"
cleanup() { [ -n "${svc:-}" ] && kill -TERM "$svc" 2>/dev/null && wait "$svc" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
export BULKHEAD_RUNTIME_DIR=$dir/run
bh() { echo "\$ bulkhead $*"; "$bin/bulkhead" "$@"; }

step "Start bulkheadd with private directories under $dir"
mkdir -p "$dir/cfg" "$dir/state"
"$bin/bulkheadd" --config-dir "$dir/cfg" --state-dir "$dir/state" --runtime-dir "$dir/run" 2>"$dir/service.log" &
svc=$!
for _ in $(seq 100); do [ -S "$dir/run/control.sock" ] && break; sleep 0.05; done

step "Build a tiny distribution from busybox and register it"
"$(dirname "$0")/../tests/rootfs/make-test-rootfs.sh" "$dir/rootfs"
bh register demo --rootfs "$dir/rootfs" --package busybox-static
bh list

step "Run commands inside it: its own hostname, its own PID 1, its own mounts"
echo "host: hostname=$(hostname), pid 1 is $(cat /proc/1/comm)"
bh run -- sh -c 'echo "distribution: hostname=$(hostname), pid 1 is $(cat /proc/1/cmdline | tr "\0" " ")"; echo "its mounts:"; cut -d" " -f5 /proc/self/mountinfo | sed "s/^/  /"'
bh run -- sh -c 'grep PRETTY /etc/os-release; id'

step "Mount a host folder into the VM and read it back through the VM"
mkdir -p "$dir/share" && echo "hello from the host" > "$dir/share/greeting"
bh vm mount --read-only "$dir/share" /mnt/share
bh vm exec -- /bin/cat /mnt/share/greeting

step "Errors say what failed, on what, and why"
bh run -- /no/such/program || true
bh run -d missing -- true || true

step "Status, then shut down"
bh status
bh shutdown
bh unregister demo
echo; echo "demo finished; the service log was:"; sed 's/^/  /' "$dir/service.log"
