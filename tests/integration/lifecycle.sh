#!/usr/bin/env bash
# Register, start, run, terminate, unregister; UUID stable across a restart; exit codes; defaults.
source "$(dirname "$0")/lib.sh"
start_service

out=$(bh register alpha --rootfs "$ROOTFS" --package test-pkg)
grep -q "^Registered 'alpha' (" <<<"$out" || fail "register said: $out"
uuid=$(bh list --json | jq -r '.[0].uuid')
expect_eq "$(bh list --json | jq -r '.[0] | "\(.flavor) \(.version) \(.package) \(.default) \(.running)"')" \
  "bulkhead-test 1.0 test-pkg true false" "list fields"

expect_eq "$(bh run -- echo hello)" "hello" "run output"
rc=0; bh run -- sh -c 'exit 7' || rc=$?
expect_eq "$rc" "7" "exit status"
rc=0; bh run -- sh -c 'kill -9 $$' || rc=$?
expect_eq "$rc" "137" "death by signal"
expect_eq "$(echo piped | bh run -- cat)" "piped" "stdin is the caller's"
expect_eq "$(bh run -u alice -- id -u)" "1000" "run -u"
# No program: the user's login shell (from the distribution's /etc/passwd), in their home; so is
# `bulkhead` alone, in the default distribution, as `wsl` is.
rc=0; out=$(echo 'echo $0 $PWD; exit 6' | bh run -u alice) || rc=$?
expect_eq "$out $rc" "-sh /home/alice 6" "run without a program"
rc=0; out=$(echo 'echo $0 $PWD; exit 6' | bh) || rc=$?
expect_eq "$out $rc" "-sh /root 6" "bulkhead alone"
# A distribution's /etc/bulkhead.conf names its default user, whom `run` without -u and
# `bulkhead` alone run as, and a command run as root when it starts.
cp -a "$ROOTFS" "$T/confd"
printf '[user]\ndefault = "alice"\n\n[boot]\ncommand = "echo booted-as-$(id -u) >/tmp/boot-mark"\n' >"$T/confd/etc/bulkhead.conf"
bh register confd --rootfs "$T/confd" >/dev/null
expect_eq "$(bh run -d confd -- id -un)" "alice" "the default user of /etc/bulkhead.conf"
expect_eq "$(bh run -d confd -u root -- id -un)" "root" "-u over the default user"
expect_eq "$(echo 'echo $0 $PWD' | bh run -d confd)" "-sh /home/alice" "the default user's login shell"
expect_eq "$(bh run -d confd -u root -- cat /tmp/boot-mark)" "booted-as-0" "the boot command ran, as root"
bh terminate confd
# An invalid one: run without -u says why, -u still works, and the distribution starts.
printf '[user]\ndefualt = "alice"\n' | bh run -d confd -u root -- sh -c 'cat >/etc/bulkhead.conf'
bh terminate confd
expect_error EINVAL "invalid /etc/bulkhead.conf: unknown key 'user.defualt' (it names the default user" bh run -d confd -- id -un
expect_eq "$(bh run -d confd -u root -- id -un)" "root" "-u with an invalid /etc/bulkhead.conf"
printf '[user]\ndefault = "nobody-here"\n' | bh run -d confd -u root -- sh -c 'cat >/etc/bulkhead.conf'
expect_error ENOENT "no user 'nobody-here' in the distribution's /etc/passwd (/etc/bulkhead.conf names it as the default user)" bh run -d confd -- true
bh unregister confd
expect_eq "$(bh run --cd /etc -- pwd)" "/etc" "run --cd"
expect_error EINVAL "--cd 'etc' is not an absolute path" bh run --cd etc -- true
expect_error ENOENT "cannot start in '/nonexistent': No such file or directory" bh run --cd /nonexistent -- true
expect_eq "$(bh list --running --json | jq length)" "1" "running"

bh start alpha
pid1=$(bh list --json | jq -r '.[0].init_pid')
[ "$pid1" -gt 0 ] || fail "no init pid"
bh terminate alpha
expect_eq "$(bh list --json | jq -r '.[0].running')" "false" "terminated"

# A distribution terminated under a running program: the CLI says so, in the usual error form,
# and exits as the program died (128 + SIGKILL).
bh run -- sh -c 'echo started; exec sleep 100' >"$T/orphan.out" 2>"$T/orphan.err" &
orphan=$!
eventually grep -q started "$T/orphan.out"
bh terminate alpha
rc=0; wait $orphan || rc=$?
expect_eq "$rc" 137 "the exit code of a program whose distribution was terminated"
expect_eq "$(cat "$T/orphan.err")" "distribution 'alpha' was terminated while the program ran
Error code: Bulkhead/Service/RunProgram/BH_E_DISTRO_NOT_RUNNING" "what the CLI says"

# A second distribution, and the default.
bh register beta --tar <(cat "$ROOTFS_TAR") >/dev/null
expect_eq "$(bh run -d beta -- cat /etc/hostname 2>/dev/null || true)" "" "beta has no /etc/hostname"
bh set-default beta
expect_eq "$(bh list --json | jq -c '[.[] | select(.default) | .name]')" '["beta"]' "default"

# Export, then register the export: the same tree (names, types, modes, owners, sizes, link targets,
# link counts and contents), compressed as the file name says, readable by its owner only. A
# failed export leaves nothing behind.
tree_listing() {
  (cd "$1" && find . -printf '%p %y %m %U %G %s %n %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 md5sum)
}
rootfs_of() { echo "$T/state/distributions/$(bh list --json | jq -r --arg n "$1" '.[] | select(.name == $n) | .uuid')/rootfs"; }
bh export alpha "$T/alpha.tar.zst"
expect_eq "$(stat -c %a "$T/alpha.tar.zst")" 600 "mode of the exported archive"
[ "$(head -c 4 "$T/alpha.tar.zst" | od -An -tx1 | tr -d ' ')" = 28b52ffd ] || fail "the export is not zstd"
bh register gamma --tar "$T/alpha.tar.zst" >/dev/null
original=$(tree_listing "$(rootfs_of alpha)"); copy=$(tree_listing "$(rootfs_of gamma)")
[ "$(wc -l <<<"$original")" -gt 50 ] || fail "too short a listing of alpha (test ineffective): $original"
expect_eq "$copy" "$original" "the registered export's tree"
bh unregister gamma
bh export alpha - >"$T/alpha.tar"
tar -tf "$T/alpha.tar" | grep -x './etc/os-release' >/dev/null || fail "the exported tar has no ./etc/os-release"
expect_error ENOENT "no distribution with the supplied name 'missing'" bh export missing "$T/missing.tar"
ls "$T"/missing.tar* >/dev/null 2>&1 && fail "a failed export left a file behind"

# register --in-place (root only): the folder is the distribution's root, where it is; export
# then register of the export gives the same tree; unregister leaves the folder unless --delete.
mkdir -m 755 "$T/adopt"
cp -a "$ROOTFS" "$T/adopt/root"
bh register adopted --in-place "$T/adopt/root" >/dev/null
expect_eq "$(bh list --json | jq -r '.[] | select(.name == "adopted") | .in_place')" "$T/adopt/root" "list names the folder"
bh run -d adopted -- sh -c 'echo written-inside >/etc/adopted-note'
expect_eq "$(cat "$T/adopt/root/etc/adopted-note")" "written-inside" "no copy: the folder itself"
bh export adopted "$T/adopted.tar"
bh unregister adopted
[ -f "$T/adopt/root/etc/adopted-note" ] || fail "unregister removed an adopted folder"
bh register copied --tar "$T/adopted.tar" >/dev/null
expect_eq "$(tree_listing "$(rootfs_of copied)")" "$(tree_listing "$T/adopt/root")" "the export of an adopted folder, registered"
bh unregister copied
expect_error EPERM "only root may register a folder in place" bh_other register mine --in-place "$T/adopt/root"
expect_error EINVAL "not an absolute path" bh register bad --in-place no/such/dir
expect_error EINVAL "it is /, or holds or is inside the service's state" bh register bad --in-place /
ln -s "$T/adopt/root" "$T/adopt/link"
bh register vialink --in-place "$T/adopt/link/." >/dev/null # the CLI names the folder itself
expect_eq "$(bh list --json | jq -r '.[] | select(.name == "vialink") | .in_place')" "$T/adopt/root" "a link resolved"
bh unregister vialink
chmod 777 "$T/adopt/root"
expect_error EPERM "writable by root alone" bh register bad --in-place "$T/adopt/root"
chmod 755 "$T/adopt/root"
bh register adopted --in-place "$T/adopt/root" >/dev/null
expect_error EEXIST "adopted '$T/adopt/root' already" bh register twice --in-place "$T/adopt/root"
bh unregister adopted --delete
[ ! -e "$T/adopt/root" ] || fail "unregister --delete left the adopted folder"
expect_eq "$(bh list --json | jq length)" "2" "alpha and beta are left"

# The UUID survives a restart of the service.
stop_service
start_service
expect_eq "$(bh list --json | jq -r '[.[] | select(.name == "alpha") | .uuid][0]')" "$uuid" "uuid after restart"

# A distribution whose init dies on its own (here its user kills it from inside their VM, as
# they may): the service lives on, lists it as stopped, and starts it again.
bh start alpha
bh vm exec -- kill -9 "$(status_field '[.distributions[] | select(.name == "alpha") | .init_pid][0]')"
running_alpha() { bh list --running --json | jq -c '[.[].name]'; }
alpha_stopped() { [ "$(running_alpha)" = "[]" ]; } # a function: eventually re-runs the query
eventually alpha_stopped
kill -0 "$SVC_PID" || fail "bulkheadd died with a distribution"
bh start alpha
expect_eq "$(running_alpha)" '["alpha"]' "alpha started again after its init died"
expect_eq "$(bh run -d alpha -- echo back)" back "a run in the restarted distribution"

bh unregister alpha
bh unregister beta
expect_eq "$(bh list --json)" "[]" "list after unregister"
expect_eq "$(distro_dirs)" "0" "no directory left after unregister"
echo "lifecycle: ok"
