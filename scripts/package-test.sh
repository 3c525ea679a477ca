#!/usr/bin/env bash
# `make package-test`: installs the bulkhead .deb into a clean Debian 12 root (mmdebstrap, with
# apt resolving its dependencies) and checks it from inside that root: the files are where the
# package says, systemd-analyze verifies the units, and the installed bulkheadd, started through
# its socket by systemd-socket-activate, answers `bulkhead status`, registers a distribution and
# runs a program (systemd is included: mmdebstrap installs no Recommends). Skipped (exit 77) with
# a message when the apt sources cannot be reached.
# package-test.sh [PACKAGE-BUILD-DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-package}
deb=$(ls "$build"/packages/bulkhead_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "package-test: no $build/packages/bulkhead_*.deb (make package)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "package-test: needs root (mmdebstrap in root mode)" >&2; exit 1; }
mirror=http://deb.debian.org/debian
if ! timeout 15 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null; then
  echo "SKIP: package-test: cannot reach $mirror; the .deb was not installed into a clean root" >&2
  exit 77
fi
root=$(mktemp -d /tmp/bulkhead-deb-root.XXXXXX)
trap 'rm -rf "$root"' EXIT

# What runs inside the root, after the package is installed (mmdebstrap mounts /proc, /sys, /dev;
# the root is bind-mounted onto itself in a private mount namespace first, because a VM makes its
# mount namespace a slave of the service's, which needs "/" to be a mount point).
cat >"$root.check" <<'CHECK'
set -eu
for f in /usr/bin/bulkhead /usr/sbin/bulkheadd /usr/libexec/bulkhead/bulkhead-vminit \
  /usr/libexec/bulkhead/bulkhead-pluginhost /usr/libexec/bulkhead/bulkhead-unpack \
  /etc/bulkhead/bulkhead.toml /lib/systemd/system/bulkhead.service /lib/systemd/system/bulkhead.socket \
  /usr/lib/tmpfiles.d/bulkhead.conf /usr/share/man/man1/bulkhead.1.gz /usr/share/bash-completion/completions/bulkhead; do
  [ -e "$f" ] || { echo "FAIL: $f is not installed" >&2; exit 1; }
done
grep -qx /etc/bulkhead/bulkhead.toml /var/lib/dpkg/info/bulkhead.conffiles || { echo "FAIL: bulkhead.toml is no conffile" >&2; exit 1; }
systemd-analyze verify --man=no /lib/systemd/system/bulkhead.socket /lib/systemd/system/bulkhead.service
mkdir -p /tmp/bh/run /tmp/bh/state /tmp/rootfs/bin
cp /bin/busybox /tmp/rootfs/bin/ 2>/dev/null || cp "$(command -v busybox)" /tmp/rootfs/bin/
systemd-socket-activate -l /tmp/bh/run/control.sock /usr/sbin/bulkheadd --runtime-dir /tmp/bh/run \
  --state-dir /tmp/bh/state >/tmp/bh/log 2>&1 &
svc=$!
for _ in $(seq 100); do [ -S /tmp/bh/run/control.sock ] && break; sleep 0.1; done
export BULKHEAD_RUNTIME_DIR=/tmp/bh/run
ok=1
timeout 30 bulkhead status || ok=0
timeout 60 bulkhead register tiny --rootfs /tmp/rootfs || ok=0
[ "$(timeout 60 bulkhead run -d tiny -- /bin/busybox echo from-the-package)" = from-the-package ] || ok=0
kill -TERM $svc; wait $svc || true
[ $ok -eq 1 ] || { echo "FAIL: the installed service did not serve; its log:" >&2; cat /tmp/bh/log >&2; exit 1; }
echo "PASS: the package installs into a clean Debian 12 root and its service serves there"
CHECK
trap 'rm -rf "$root" "$root.check"' EXIT
mmdebstrap --mode=root --variant=apt --include=busybox-static,systemd \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/$(basename "$deb")" \
  --customize-hook="copy-in $root.check /tmp" \
  --customize-hook="unshare --mount --propagation private --fork sh -c 'mount --rbind \"\$1\" \"\$1\" && chroot \"\$1\" bash /tmp/$(basename "$root.check")' sh \"\$1\"" \
  bookworm "$root" "$mirror"
echo "PASS: package-test"
