#!/usr/bin/env bash
# A real Debian: a minbase bookworm root filesystem built by mmdebstrap (once, cached outside the
# clone in $BULKHEAD_TEST_CACHE, default /var/cache/bulkhead-test) is registered from its tar by
# root and by a user with a subordinate id range, and works there: dpkg -l, apt-get check,
# useradd + run -u, su, and (root's, with the archive reachable) apt-get update through nat. `bulkhead install` is tested for real (mmdebstrap from the apt sources,
# as root, and as the user in unshare mode), and on its error paths: an unknown distribution,
# mmdebstrap failing (an unknown suite), a name already taken; none leaves a registration.
# Skipped (exit 77) with a message when there is no cached tar and the archive cannot be reached.
# Each case prints "=== debian CASE: PASS (S s)".
if [ "${BH_DEBIAN_NS:-}" != 1 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: this test needs root" >&2; exit 77; }
  [ -f /etc/subuid ] && [ -f /etc/subgid ] ||
    { echo "SKIP: no /etc/subuid or /etc/subgid to bind-mount over (install the passwd package)" >&2; exit 77; }
  for tool in mmdebstrap newuidmap; do
    command -v $tool >/dev/null || { echo "SKIP: no $tool (scripts/install-deps.sh installs it)" >&2; exit 77; }
  done
  # The test's own /etc/subuid and /etc/subgid, bind-mounted in a private mount namespace.
  exec env BH_DEBIAN_NS=1 unshare --mount --propagation private "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
CACHE=${BULKHEAD_TEST_CACHE:-/var/cache/bulkhead-test}
TARBALL=$CACHE/debian-$SUITE-minbase.tar
RANGE_START=300000
# The user gets a name (mmdebstrap looks its range up by name) and a range: this namespace's own
# /etc/passwd, /etc/group, /etc/subuid and /etc/subgid.
OTHER_NAME=bh-debian-test
{ grep -v "^$OTHER_NAME:" /etc/passwd; echo "$OTHER_NAME:x:$OTHER_UID:$OTHER_UID::/nonexistent:/bin/sh"; } >"$T/passwd"
{ grep -v "^$OTHER_NAME:" /etc/group; echo "$OTHER_NAME:x:$OTHER_UID:"; } >"$T/group"
echo "$OTHER_NAME:$RANGE_START:65536" >"$T/subuid"
echo "$OTHER_NAME:$RANGE_START:65536" >"$T/subgid"
chmod 644 "$T/passwd" "$T/group" "$T/subuid" "$T/subgid"
for f in passwd group subuid subgid; do mount --bind "$T/$f" "/etc/$f"; done

reachable() { timeout 15 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null; }

# Runs the case function NAME and prints its time.
run_case() {
  local start=$EPOCHREALTIME ms
  "$1"
  ms=$(((${EPOCHREALTIME/[.,]/} - ${start/[.,]/}) / 1000))
  printf '=== debian %s: PASS (%d.%03d s)\n' "$1" $((ms / 1000)) $((ms % 1000))
}

no_registration() {
  expect_eq "$(bh list --json | jq length)" 0 "$1: root's distributions"
  expect_eq "$(bh_other list --json | jq length)" 0 "$1: the user's distributions"
  expect_eq "$(distro_dirs)" 0 "$1: directories left in the state directory"
}

InstallErrors() {
  expect_error EINVAL "the distributions install builds are: debian\[:SUITE\]" bh install ubuntu
  expect_error EINVAL "invalid suite 'Bad/Suite'" bh install debian:Bad/Suite
  # mmdebstrap fails (no such suite, online or not): its own last lines say why, nothing stays.
  local out rc=0
  out=$(bh_within 120 install debian:no-such-suite 2>&1) || rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "install of an unknown suite: exit $rc: $out"
  grep -q "^mmdebstrap failed (exit status [0-9]*):" <<<"$out" || fail "install of an unknown suite said: $out"
  grep -q "^Error code: Bulkhead/Cli/InstallDistribution/EIO$" <<<"$out" || fail "no error code in: $out"
  no_registration "after mmdebstrap failed"
  # The name is taken: the service refuses at once, mmdebstrap is stopped, the first stays.
  bh register debian --tar "$ROOTFS_TAR" >/dev/null
  local t0; t0=$(now_ms)
  out=$(bh_within 60 install debian 2>&1) && fail "install over an existing name succeeded: $out"
  grep -q "^Error code: Bulkhead/Service/RegisterDistribution/EEXIST$" <<<"$out" || fail "install over 'debian': $out"
  [ $(($(now_ms) - t0)) -lt 20000 ] || fail "install over an existing name took $(($(now_ms) - t0)) ms"
  expect_eq "$(processes_mentioning mmdebstrap no-such-suite)$(processes_mentioning mmdebstrap "$SUITE -")" "" \
    "mmdebstrap processes left"
  expect_eq "$(bh list --json | jq -r '[.[].flavor] | join(",")')" "bulkhead-test" "the distribution kept"
  bh unregister debian
  no_registration "after the refused install"
}

# The cached tar: built once (written to a temporary name and renamed: never half a tar).
ensure_tarball() {
  [ -f "$TARBALL" ] && return 0
  reachable || return 1
  mkdir -p "$CACHE"
  local t0; t0=$(now_ms)
  mmdebstrap --variant=minbase --format=tar --include=passwd "$SUITE" "$TARBALL.tmp.$$" \
    "deb $MIRROR $SUITE main" >"$T/mmdebstrap.log" 2>&1 ||
    { rm -f "$TARBALL.tmp.$$"; cat "$T/mmdebstrap.log" >&2; fail "mmdebstrap could not build $TARBALL"; }
  chmod 644 "$TARBALL.tmp.$$"
  mv "$TARBALL.tmp.$$" "$TARBALL"
  echo "note: built $TARBALL in $(($(now_ms) - t0)) ms"
}

# The working Debian of one user: bh or bh_other. check_debian CLI NAME
check_debian() {
  local as=$1 d=$2
  $as run -d "$d" -- dpkg -l >"$T/dpkg.out"
  grep -E '^ii +(dpkg|apt|base-files) ' "$T/dpkg.out" >"$T/dpkg.some" || fail "$as: dpkg -l lists no dpkg, apt, base-files"
  expect_eq "$(wc -l <"$T/dpkg.some")" 3 "$as: dpkg -l (dpkg, apt, base-files installed)"
  $as run -d "$d" -- apt-get check >"$T/check.out" 2>&1 || fail "$as: apt-get check: $(cat "$T/check.out")"
  $as run -d "$d" -- useradd -m -s /bin/bash alice
  expect_eq "$($as run -d "$d" -u alice -- sh -c 'id -un; id -u; pwd')" "$(printf 'alice\n1000\n/home/alice')" \
    "$as: run -u alice"
  expect_eq "$($as run -d "$d" -u alice -- sh -c 'touch ~/mine; stat -c %U ~/mine')" alice "$as: alice's file"
  # nobody's shell is nologin: su runs id through sh.
  expect_eq "$($as run -d "$d" -- su -s /bin/sh nobody -c id)" \
    "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)" "$as: su nobody"
  expect_eq "$($as run -d "$d" -- cat /etc/debian_version | cut -d. -f1)" 12 "$as: /etc/debian_version"
}

RegisterAsRoot() {
  bh register deb --tar "$TARBALL" >/dev/null
  check_debian bh deb
  # The VM's network is nat by default: apt reaches the archive through pasta, names resolved by
  # the DNS forwarder the distribution's resolv.conf names.
  if reachable; then
    bh run -d deb -- apt-get update -q -o Acquire::Languages=none >"$T/update.out" 2>&1 ||
      fail "apt-get update in the distribution (vm.network = nat): $(tail -n 5 "$T/update.out")"
    grep -E "^(Get|Hit):[0-9]+ $MIRROR $SUITE InRelease" "$T/update.out" >/dev/null ||
      fail "apt-get update did not reach $MIRROR: $(cat "$T/update.out")"
  fi
  bh unregister deb
}

RegisterAsUser() {
  bh_other register deb --tar "$TARBALL" >/dev/null
  local uuid; uuid=$(bh_other list --json | jq -r '.[] | select(.name == "deb") | .uuid')
  check_debian bh_other deb
  # Owned on the host by the user's range: alice is 1000 inside.
  expect_eq "$(stat -c %u "$T/state/distributions/$uuid/rootfs/home/alice")" $((RANGE_START + 999)) \
    "host owner of alice's home"
  bh_other unregister deb
}

# install for real: mmdebstrap from this host's apt sources, as root (root mode) and as the user
# (unshare mode, with the range above), the first distribution of each, and so its default.
Install() {
  local out
  out=$(bh install debian 2>"$T/install.err") || fail "install as root: $(cat "$T/install.err")"
  grep -q "^Registered 'debian' (" <<<"$out" || fail "install said: $out"
  grep -q "^'debian' is your default distribution" <<<"$out" || fail "install said: $out"
  # Piped, nothing but the result: no progress line, no mmdebstrap output.
  expect_eq "$(cat "$T/install.err")" "" "install's stderr when it is not a terminal"
  expect_eq "$(bh list --json | jq -r '.[] | "\(.name) \(.default) \(.package)"')" "debian true debian:$SUITE" \
    "root's list after install"
  expect_eq "$(bh run -- cat /etc/debian_version | cut -d. -f1)" 12 "bulkhead run in the default"
  bh unregister debian
  bh_other install debian:"$SUITE" >"$T/install.out" 2>"$T/install.err" ||
    fail "install as uid $OTHER_UID: $(cat "$T/install.err")"
  expect_eq "$(bh_other list --json | jq -r '.[] | "\(.name) \(.default)"')" "debian-$SUITE true" \
    "the user's list after install"
  expect_eq "$(bh_other run -- id -u)" 0 "the user's default distribution"
  bh_other unregister "debian-$SUITE"
}

start_service
run_case InstallErrors
if ! ensure_tarball; then
  echo "SKIP: debian: cannot reach $MIRROR and there is no cached $TARBALL: no real Debian test" >&2
  BULKHEAD_CASE_RUNNER=1 # a skip, not a failure: no "=== debian: FAIL" line
  exit 77
fi
run_case RegisterAsRoot
run_case RegisterAsUser
if reachable; then
  run_case Install
else
  echo "note: cannot reach $MIRROR: install was not tested for real"
fi
echo "debian: ok"
