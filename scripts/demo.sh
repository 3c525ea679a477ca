#!/usr/bin/env bash
# make demo: a private service in a temporary directory, a test distribution, its isolation, a
# plugin sharing a folder with the VM, images and containers watched by a plugin, and a crashing
# plugin contained in its own process.
set -euo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd)
plugins=$(cd "$build/plugins" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "demo: bulkheadd needs root (namespaces); run 'sudo make demo'" >&2; exit 1; }
dir=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
chmod 755 "$dir"
svc=
cleanup() { stop_service; rm -rf "$dir"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
export BULKHEAD_RUNTIME_DIR=$dir/run
# Every CLI call has a deadline, so a fault shows up as a failed demo instead of a hung one.
bh() { echo "\$ bulkhead $*"; timeout --foreground 60 "$bin/bulkhead" "$@"; }

# Whether pid $1 is running: unlike `kill -0`, an exited child not yet reaped (a zombie) is not.
alive() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Starts bulkheadd on the private directories (its log appended to service.log) and waits until it
# answers; 10 s deadline.
start_service() {
  "$bin/bulkheadd" --config-dir "$dir/cfg" --state-dir "$dir/state" --runtime-dir "$dir/run" \
    2>>"$dir/service.log" &
  svc=$!
  for _ in $(seq 200); do
    timeout 5 "$bin/bulkhead" list >/dev/null 2>&1 && return
    alive "$svc" || die "bulkheadd exited during start-up; see $dir/service.log"
    sleep 0.05
  done
  die "bulkheadd did not answer within 10 s"
}

# SIGTERM, then SIGKILL if the service has not exited within 10 s.
stop_service() {
  [ -n "$svc" ] || return 0
  kill -TERM "$svc" 2>/dev/null || true
  for _ in $(seq 200); do alive "$svc" || break; sleep 0.05; done
  alive "$svc" && kill -KILL "$svc" && echo "demo: bulkheadd ignored SIGTERM for 10 s; killed it" >&2
  wait "$svc" 2>/dev/null || true
  svc=
}

# plugin FILE NAME SO: configures a plugin (isolation defaults to "process": its own host process).
plugin() {
  printf 'name = "%s"\npath = "%s"\n' "$2" "$3" >"$dir/cfg/plugins.d/$1.toml"
  echo "$dir/cfg/plugins.d/$1.toml:"; sed 's/^/  /' "$dir/cfg/plugins.d/$1.toml"
}

plugin_log() { grep -F "plugin $1:" "$dir/service.log" | sed 's/^/  /' || echo "  (no lines from plugin $1)"; }

step "Configure the folder-share example plugin, then start bulkheadd with private directories under $dir"
mkdir -p "$dir/cfg/plugins.d" "$dir/state" "$dir/plugins" "$dir/plugin-share"
# The plugin reads folder-share.conf beside its .so, so it gets a private copy next to its own config.
cp "$plugins/folder-share.so" "$plugins/crash-on-start.so" "$plugins/container-audit.so" "$dir/plugins/"
printf 'folder=%s\nmountpoint=/mnt/folder-share\n' "$dir/plugin-share" >"$dir/plugins/folder-share.conf"
echo "shared by the folder-share plugin" >"$dir/plugin-share/README"
echo "$dir/plugins/folder-share.conf:"; sed 's/^/  /' "$dir/plugins/folder-share.conf"
plugin 10-folder-share folder-share "$dir/plugins/folder-share.so"
plugin 15-container-audit container-audit "$dir/plugins/container-audit.so"
start_service

step "Build a tiny distribution from busybox and register it"
"$(dirname "$0")/../tests/rootfs/make-test-rootfs.sh" "$dir/rootfs"
bh register demo --rootfs "$dir/rootfs" --package busybox-static
bh list

step "Run commands inside it: its own hostname, its own PID 1, its own mounts"
echo "host: hostname=$(hostname), pid 1 is $(cat /proc/1/comm)"
bh run -- sh -c 'echo "distribution: hostname=$(hostname), pid 1 is $(cat /proc/1/cmdline | tr "\0" " ")"; echo "its mounts:"; cut -d" " -f5 /proc/self/mountinfo | sed "s/^/  /"'
bh run -- sh -c 'grep PRETTY /etc/os-release; id'

step "At a terminal, a program gets a pseudo-terminal of the distribution's own (script(1) types here)"
echo "\$ bulkhead run -- sh     # with a terminal, as 'bulkhead' alone gives your login shell"
# One line every half second, so each is typed at the shell's prompt as a person would.
{
  sleep 1
  for line in 'tty' 'stty size' 'sleep 30 &' 'jobs' 'kill %1' 'exit 3'; do
    printf '%s\r' "$line"
    sleep 0.5
  done
} | timeout 30 script -qec "stty rows 24 cols 80; $bin/bulkhead run -- env 'PS1=demo# ' sh; echo \"(bulkhead exited with \$?)\"" /dev/null |
  sed 's/\r$//; s/\x1b\[6n//g' # busybox sh asks the terminal where its cursor is: not for this page

step "The folder-share plugin mounted $dir/plugin-share read-only into the VM when it started"
bh vm exec -- /bin/ls -l /mnt/folder-share
# `vm exec` connects only the program's stdin and stdout (as the plugin API's execute_binary does)
# and does not report its exit status, so the demo checks what it printed.
bh vm exec -- /bin/cat /mnt/folder-share/README | tee "$dir/out"
grep -q "shared by the folder-share plugin" "$dir/out" || die "the plugin's folder is not visible in the VM"
bh vm exec -- /bin/sh -c 'touch /mnt/folder-share/new-file 2>&1'
echo "the plugin's lines in the service log:"
plugin_log folder-share

step "Images and containers, with the container-audit plugin watching (it refuses untrusted-* names)"
# An OCI image of the busybox root, made here with umoci and skopeo (offline), as docker save would.
"$(dirname "$0")/../tests/make-test-image.sh" "$dir/rootfs" debian:latest "$dir/image.tar"
bh container image load "$dir/image.tar"
bh container image ls
bh container run debian sh -c 'echo "hello from container $(hostname), pid $$"; exit 3' || echo "(exit status $?)"
bh container run -d --name web debian sleep 600
bh container ls
bh container run --name untrusted-1 debian true || true
bh container stop --time 1 web
bh container ls -a
bh container image rm -f debian
bh container session terminate bulkhead-cli
echo "the container-audit plugin's lines in the service log:"
plugin_log container-audit

step "Mount a host folder into the VM and read it back through the VM"
mkdir -p "$dir/share" && echo "hello from the host" > "$dir/share/greeting"
bh vm mount --read-only "$dir/share" /mnt/share
bh vm exec -- /bin/cat /mnt/share/greeting

step "Errors say what failed, on what, and why"
bh run -- /no/such/program || true
bh run -d missing -- true || true

step "Status lists the plugin and its host process, then shut down"
bh status
bh shutdown

step "Containment: add crash-on-start, a plugin that dereferences NULL when a VM starts; restart bulkheadd"
stop_service
plugin 20-crash-on-start crash-on-start "$dir/plugins/crash-on-start.so"
start_service
echo "bulkheadd is pid $svc"
bh start demo || true
echo "the crash is latched until bulkheadd restarts: the host is not restarted, and a retry fails the same way"
bh start demo || true
bh status
alive "$svc" || die "bulkheadd (pid $svc) died with the plugin: no containment"
echo "bulkheadd is still pid $svc ($(cat "/proc/$svc/comm")), and still serves requests:"
bh list
echo "the crashing plugin's lines in the service log:"
plugin_log crash-on-start

step "Remove crash-on-start and restart bulkheadd: starting works again"
rm "$dir/cfg/plugins.d/20-crash-on-start.toml"
stop_service
start_service
bh start demo
bh list --running
bh status
bh shutdown
bh unregister demo
stop_service
echo; echo "demo finished; the service log was:"; sed 's/^/  /' "$dir/service.log"
