#!/usr/bin/env bash
# VM networking (vm.network): "nat", the default, connects the VM through pasta, a user-mode
# stack: the VM is 10.0.2.15, the host's loopback services answer at 10.0.2.2, pasta forwards DNS
# from 10.0.2.3 (each distribution's /etc/resolv.conf says so). For a user's VM pasta runs as that
# user, inside the VM's user namespace: nothing the VM sends leaves the host as root. "none" gives
# the loopback only; "host" needs the admin's consent. pasta ends with its VM.
source "$(dirname "$0")/lib.sh"
command -v pasta >/dev/null || { echo "SKIP: pasta is not installed (scripts/install-deps.sh installs passt)"; exit 77; }

# A web server on the host's loopback only, serving one line.
PORT=$((20000 + $$ % 20000))
mkdir "$T/www"
echo hello-from-host >"$T/www/hello"
busybox httpd -f -p "127.0.0.1:$PORT" -h "$T/www" &
SERVER=$!
# The tun device's mode, restored at the end: pasta running as a user needs it open to users,
# as udev makes it on a standard host (this machine's may be 0600).
TUN_MODE=$(stat -c %a /dev/net/tun)
trap '__rc=$?; set +e; kill $SERVER 2>/dev/null; chmod "$TUN_MODE" /dev/net/tun; (exit $__rc); cleanup' EXIT
eventually bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"

start_service
bh register alpha --rootfs "$ROOTFS" >/dev/null
# The pasta the service started (pasta re-executes itself under another name: found by argument).
pasta_pids() { pgrep -P "$SVC_PID" -f -- '--config-net' || true; }
# GETs /hello from 10.0.2.2 in the VM with busybox nc: the request's side stays open for a second
# (pasta 2023.03 loses the end of a connection whose client shuts its side down before the answer).
reach_host() {
  "$@" -- sh -c "(printf 'GET /hello HTTP/1.0\r\n\r\n'; sleep 1) | nc -w 5 10.0.2.2 $PORT 2>/dev/null | tail -n 1 | grep . || echo unreachable"
}

# --- nat is the default: outbound, the host's loopback at 10.0.2.2, DNS through pasta ---
expect_eq "$(reach_host bh run)" hello-from-host "a root VM reaching the host's loopback at 10.0.2.2"
expect_eq "$(bh run -- ip route | sed -n 1p | tr -s ' ')" "default via 10.0.2.2 dev eth0 " "the VM's default route"
expect_eq "$(bh run -- ip addr show eth0 | grep -o 'inet [0-9./]*')" "inet 10.0.2.15/24" "the VM's address"
expect_eq "$(bh run -- grep nameserver /etc/resolv.conf)" "nameserver 10.0.2.3" "the distribution's resolv.conf"
# Only in the distribution's mount namespace: the registered tree holds an empty file.
uuid=$(bh list --json | jq -r '.[] | select(.name == "alpha") | .uuid')
expect_eq "$(stat -c %s "$T/state/distributions/$uuid/rootfs/etc/resolv.conf")" 0 "resolv.conf on disk"
expect_eq "$(status_field '.sessions[0].network')" nat "status: the session's network"
expect_eq "$(status_field '.sessions[0].network_problem')" "" "status: no network problem"
bh status | grep "network nat" >/dev/null || fail "bulkhead status does not show the network: $(bh status)"
# Nothing is forwarded from the host into the VM: a VM's server is not on the host's ports, where
# any local user could reach it (pasta's default would forward it within a second).
bh run -- sh -c "nc -l -p $((PORT + 1)) -e true & sleep 3; kill \$! 2>/dev/null; true" &
sleep 2
expect_eq "$(busybox nc -w 1 127.0.0.1 $((PORT + 1)) </dev/null 2>/dev/null || echo closed)" closed "a VM's port on the host"
wait $!
echo "=== network NatByDefault: PASS"

# --- pasta ends with its VM ---
pid=$(pasta_pids)
[ -n "$pid" ] || fail "no pasta under the service while the VM runs"
expect_eq "$(awk '/^Uid:/ {print $2}' /proc/$pid/status)" 0 "root's pasta runs as root (its VM has no user namespace)"
bh shutdown >/dev/null
wait_gone 10 "$pid"
echo "=== network PastaEndsWithTheVm: PASS"

# --- a user's VM: pasta runs as the user, in the VM's user namespace ---
chmod 666 /dev/net/tun
bh_other register beta --rootfs "$ROOTFS" >/dev/null
expect_eq "$(reach_host bh_other run)" hello-from-host "a user's VM reaching the host's loopback"
pid=$(pasta_pids)
[ -n "$pid" ] || fail "no pasta for the user's VM"
expect_eq "$(awk '/^Uid:/ {print $2, $3, $4, $5}' /proc/$pid/status)" "$OTHER_UID $OTHER_UID $OTHER_UID $OTHER_UID" \
  "the host ids of the user's pasta"
vm_pid=$(bh status --json | jq -r ".sessions[] | select(.uid == $OTHER_UID) | .vm_init_pid")
expect_eq "$(readlink /proc/$pid/ns/user)" "$(readlink /proc/$vm_pid/ns/user)" "the user namespace of the user's pasta"
bh_other shutdown >/dev/null
wait_gone 10 "$pid"
echo "=== network UserPastaIsTheUser: PASS"

# --- without a tun device open to users, the user's VM runs with its loopback, and says why ---
chmod 600 /dev/net/tun
expect_eq "$(reach_host bh_other run)" unreachable "a user's VM without pasta"
expect_eq "$(bh_other status --json | jq -r ".sessions[] | select(.uid == $OTHER_UID) | .network_problem")" \
  "/dev/net/tun is not open to users (mode 0600): pasta, which runs as the VM's user, cannot make the VM's interface; standard hosts have it 0666 (udev)" \
  "the reason a user's VM has no network"
bh_other shutdown >/dev/null
chmod "$TUN_MODE" /dev/net/tun
echo "=== network NoTunDevice: PASS"

# --- none: loopback only; host: only with the admin's consent ---
mkdir -p "$T/home/.config/bulkhead"
printf '[vm]\nnetwork = "none"\n' >"$T/home/.config/bulkhead/bulkhead.toml"
expect_eq "$(reach_host bh run)" unreachable "network = none"
expect_eq "$(status_field '.sessions[0].network')" none "status: network none"
[ -z "$(pasta_pids)" ] || fail "a pasta for a VM with network = none"
bh shutdown >/dev/null
printf '[vm]\nnetwork = "host"\n' >"$T/home/.config/bulkhead/bulkhead.toml"
bh_other run -- true
expect_eq "$(bh_other status --json | jq -r ".sessions[] | select(.uid == $OTHER_UID) | .network")" nat \
  "a user's network = host without the admin's consent"
bh_other shutdown >/dev/null
expect_error EPERM "allow_user_network" bh_other container session create web --network host
printf '[vm]\nnetwork = "bridge"\n' >"$T/home/.config/bulkhead/bulkhead.toml"
expect_error EINVAL "'vm.network' must be \"none\", \"nat\" or \"host\", not 'bridge'" bh run -- true
echo "=== network NoneAndHostPolicy: PASS"
