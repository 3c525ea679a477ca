#!/usr/bin/env bash
# Builds the read-only fixtures every integration test of a run shares, into DIR (replaced whole):
#   DIR/rootfs        the busybox distribution root (tests/rootfs/make-test-rootfs.sh)
#   DIR/rootfs.tar    the same as a tar archive, readable by everyone
#   DIR/image.tar     an OCI image of that root as a docker-archive named debian:latest
#   DIR/registry.tar  Debian's docker-registry as an image named registry:2 (when it can be had)
#   DIR/keys/NAME.pem        Ed25519 private keys "team" and "stranger" (only root reads them)
#   DIR/keys/NAME.pub.pem    their public halves
# ctest runs it once per run (the "fixtures" test); lib.sh runs it when DIR is missing (a test run
# by hand). make-test-fixtures.sh DIR
set -euo pipefail
dir=${1:?usage: make-test-fixtures.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
new=$(mktemp -d "$dir.new.XXXXXX")
trap 'rm -rf "$new"' EXIT
chmod 755 "$new"
"$here/rootfs/make-test-rootfs.sh" "$new/rootfs" "$new/rootfs.tar"
chmod 644 "$new/rootfs.tar"
"$here/make-test-image.sh" "$new/rootfs" debian:latest "$new/image.tar"
# The registry image needs Debian's docker-registry: without it (offline, no cache) the registry
# case says why it skips.
rc=0
"$here/make-registry-image.sh" "$(dirname "$dir")/deb-cache" "$new/registry.tar" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || exit "$rc"
mkdir -m 700 "$new/keys"
for key in team stranger; do
  openssl genpkey -algorithm ed25519 -out "$new/keys/$key.pem" 2>/dev/null
  openssl pkey -in "$new/keys/$key.pem" -pubout -out "$new/keys/$key.pub.pem"
done
touch "$new/complete"
rm -rf "$dir"
mv "$new" "$dir"
trap - EXIT
echo "fixtures: built in $dir"
