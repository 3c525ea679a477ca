#!/usr/bin/env bash
# Two users: each sees and acts on their own session only; root may act on any through --uid.
source "$(dirname "$0")/lib.sh"
start_service
bh register rootdist --rootfs "$ROOTFS" >/dev/null
bh_other register mine --tar "$ROOTFS_TAR" >/dev/null

expect_eq "$(bh_other list --json | jq -c '[.[].name]')" '["mine"]' "the user's list"
expect_eq "$(bh list --json | jq -c '[.[].name]')" '["rootdist"]' "root's own list"
expect_eq "$(bh list --all --json | jq -c '[.[].name] | sort')" '["mine","rootdist"]' "root lists all"

# The user's VM maps root to the user's own uid.
expect_eq "$(bh_other run -- cat /proc/self/uid_map | tr -s ' ')" " 0 $OTHER_UID 1" "uid map"
expect_eq "$(bh_other run -- id -u)" "0" "root inside"
bh start rootdist
expect_error ENOENT "no distribution with the supplied name 'rootdist'" bh_other terminate rootdist
expect_error ENOENT "no distribution with the supplied name 'rootdist'" bh_other run -d rootdist -- true
expect_error EPERM "only root may act on another user's session" bh_other --uid 0 list
expect_error EPERM "only root" bh_other shutdown --all
expect_eq "$(bh list --running --json | jq length)" "1" "root's distribution still runs"

# A user's status shows only their own session.
expect_eq "$(bh_other status --json | jq -c '[.sessions[].uid]')" "[$OTHER_UID]" "user's status"
# Root acts on the user's session explicitly.
bh --uid $OTHER_UID terminate mine
expect_eq "$(bh_other list --running --json)" "[]" "root terminated the user's distribution"
bh_other shutdown
expect_eq "$(bh list --running --json | jq length)" "1" "the user's shutdown spared root"

# Root stops every VM; the service serves on, for both users.
bh_other run -- true
bh shutdown --all
expect_eq "$(running_vms)" 0 "VMs running after shutdown --all"
expect_eq "$(bh run -- echo again)" again "root's run after shutdown --all"
expect_eq "$(bh_other run -- echo again)" again "the user's run after shutdown --all"
echo "users: ok"
