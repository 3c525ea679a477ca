#!/usr/bin/env bash
# Builds a tiny distribution root from Debian's busybox-static, offline, in well under a second.
# Usage: make-test-rootfs.sh DIR [TAR]   (TAR: also write DIR as a tar archive there)
set -euo pipefail
root=${1:?usage: make-test-rootfs.sh DIR [TAR]}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "make-test-rootfs: $busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

mkdir -p "$root"/{bin,sbin,etc,root,home/alice,tmp,proc,dev,usr/bin,usr/sbin}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/os-release" <<'OS'
NAME="Bulkhead Test Linux"
ID=bulkhead-test
VERSION_ID="1.0"
PRETTY_NAME="Bulkhead Test Linux 1.0"
OS
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nalice:x:1000:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
if [ $# -ge 2 ]; then
  tar -C "$root" -cf "$2" .
fi
