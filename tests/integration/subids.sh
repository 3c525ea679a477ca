#!/usr/bin/env bash
# Users inside a distribution: a user with a range in /etc/subuid and /etc/subgid gets a VM that
# maps root to them and 1..N to that range, registrations keep the archive's owners inside it, and
# `run -u` works; a user without one keeps a VM of one id and is told why `run -u` cannot work.
# The test's own /etc/subuid and /etc/subgid are bind-mounted in a private mount namespace.
if [ "${BH_SUBIDS_NS:-}" != 1 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: this test needs root" >&2; exit 77; }
  [ -f /etc/subuid ] && [ -f /etc/subgid ] ||
    { echo "SKIP: no /etc/subuid or /etc/subgid to bind-mount over (install the passwd package)" >&2; exit 77; }
  exec env BH_SUBIDS_NS=1 unshare --mount --propagation private "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
RANGE_START=300000
echo "$OTHER_UID:$RANGE_START:65536" >"$T/subuid"
echo "$OTHER_UID:$RANGE_START:65536" >"$T/subgid"
mount --bind "$T/subuid" /etc/subuid
mount --bind "$T/subgid" /etc/subgid
start_service

# The busybox root, plus alice's home owned by alice (1000:1000 in its /etc/passwd).
cp "$ROOTFS_TAR" "$T/home/alice.tar"
mkdir -p "$T/extra/home/alice"; echo hello >"$T/extra/home/alice/note"
tar -C "$T/extra" --owner=1000 --group=1000 -rf "$T/home/alice.tar" ./home/alice
chmod 644 "$T/home/alice.tar"
bh_other register sub --tar "$T/home/alice.tar" >/dev/null
uuid=$(bh_other list --json | jq -r '.[] | select(.name == "sub") | .uuid')
root=$T/state/distributions/$uuid/rootfs
expect_eq "$(stat -c %u:%g "$root/home/alice/note")" "$((RANGE_START + 999)):$((RANGE_START + 999))" \
  "host owner of a file alice owns in the archive"
expect_eq "$(stat -c %u:%g "$root/bin")" "$OTHER_UID:$OTHER_UID" "host owner of a file root owns in the archive"

expect_eq "$(bh_other run -d sub -- cat /proc/self/uid_map | tr -s ' ' | tr '\n' '/')" \
  " 0 $OTHER_UID 1/ 1 $RANGE_START 65536/" "the VM's uid map"
expect_eq "$(bh_other run -d sub -u alice -- id -u)" 1000 "run -u alice"
expect_eq "$(bh_other run -d sub -u alice -- cat /home/alice/note)" hello "alice reads her own file"
expect_eq "$(bh_other run -d sub -- su -s /bin/sh alice -c 'id -u; id -g')" "$(printf '1000\n1000')" \
  "su to alice from the distribution's root"

# A user's export runs with their VM's ids: registered again, alice's file is alice's again.
mkdir "$T/out"; chown "$OTHER_UID" "$T/out"
bh_other export sub "$T/out/sub.tar.gz"
bh_other register sub2 --tar "$T/out/sub.tar.gz" >/dev/null
uuid2=$(bh_other list --json | jq -r '.[] | select(.name == "sub2") | .uuid')
expect_eq "$(stat -c %u:%g "$T/state/distributions/$uuid2/rootfs/home/alice/note")" \
  "$((RANGE_START + 999)):$((RANGE_START + 999))" "host owner of alice's file after export and register"
bh_other unregister sub2

# An owner beyond the range is refused whole, and names the entry.
mkdir -p "$T/far/srv"; echo x >"$T/far/srv/far"
tar -C "$T/far" --owner=70000 --group=0 -cf "$T/home/far.tar" ./srv
chmod 644 "$T/home/far.tar"
expect_error EINVAL "'./srv/' is owned by uid 70000, gid 0, beyond the ids of the distribution's user namespace (uids 0 to 65536" bh_other register far --tar "$T/home/far.tar"

# Another user, without a range: one id in the VM, and `run -u` says why it cannot work.
as_third() {
  setpriv --reuid 4243 --regid 4243 --clear-groups env BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead" "$@"
}
as_third register single --tar "$T/home/alice.tar" >/dev/null
expect_eq "$(as_third run -d single -- cat /proc/self/uid_map | tr -s ' ')" " 0 4243 1" "uid map without a range"
expect_error EINVAL "maps only root; a range for the VM's user in the host's /etc/subuid" as_third run -d single -u alice -- id
as_third shutdown

# A range holding the user's own uid is an admin's mistake the service refuses to map.
bh_other shutdown
echo "$OTHER_UID:4000:1000" >"$T/subuid"
expect_error EINVAL "holds their own id" bh_other run -d sub -- true
echo "subids: ok"
