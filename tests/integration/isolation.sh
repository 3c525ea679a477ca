#!/usr/bin/env bash
# The VM and distribution are isolated: own hostname, own PID 1, own mounts; VM operations work.
source "$(dirname "$0")/lib.sh"
start_service
bh register iso --rootfs "$ROOTFS" >/dev/null

expect_eq "$(bh run -- hostname)" "bulkhead" "hostname inside"
[ "$(hostname)" != "bulkhead" ] || fail "the host's hostname changed"
expect_eq "$(bh run -- sh -c 'cat /proc/1/cmdline | tr "\0" " "')" "bulkhead-vminit distribution iso " "PID 1"
expect_eq "$(bh run -- sh -c 'ip link 2>/dev/null | grep -c "^[0-9]"')" "2" "loopback and eth0 (vm.network = nat)"

# mount_folder: a host folder into the VM's root namespace, read-only; not visible on the host.
mkdir -p "$T/share"; echo OK > "$T/share/file"
bh vm mount --read-only --name test "$T/share" /test-plugin/deep/folder
expect_eq "$(bh vm exec -- /bin/cat /test-plugin/deep/folder/file)" "OK" "cat through execute_binary"
expect_eq "$(bh vm exec -- /bin/sh -c 'touch /test-plugin/deep/folder/x 2>/dev/null; echo $?')" "1" "read-only"
! grep -q /test-plugin /proc/self/mountinfo || fail "the VM's mount is visible on the host"
[ ! -e /test-plugin ] || fail "the VM path exists on the host"
bh run -- test ! -e /test-plugin || fail "the VM's root mount is visible inside the distribution"
expect_eq "$(bh run -- cat /proc/self/mountinfo | awk '{print $5}' | sort | tr '\n' ' ')" "/ /dev /dev/full /dev/null /dev/pts /dev/random /dev/tty /dev/urandom /dev/zero /etc/resolv.conf /proc " "the distribution's mount points (resolv.conf: vm.network = nat)"
# execute_binary_in_distribution, with stdin and stdout on the socket.
expect_eq "$(echo ping | bh vm exec -d iso -- /bin/cat)" "ping" "exec in the distribution"
expect_error ENOENT "cannot execute '/no/such/program'" bh vm exec -- /no/such/program
expect_error ENOENT "cannot execute '/no/such'" bh run -- /no/such
expect_error EINVAL "must be absolute" bh vm mount "$T/share" relative/path
expect_error ENOENT "cannot open the folder" bh vm mount "$T/missing" /x
expect_error BH_E_DISTRO_NOT_RUNNING "not running" bh vm exec -d nope -- /bin/true
bh shutdown
expect_error BH_E_VM_NOT_RUNNING "not running" bh vm exec -- /bin/true
echo "isolation: ok"
