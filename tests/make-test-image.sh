#!/usr/bin/env bash
# Builds an OCI test image offline from a root filesystem: umoci makes an image of ROOTFS with
# COMMAND (default /bin/sh) as its command, skopeo writes it as a docker-archive named REF
# (docker's `save` format, what `bulkhead container image load` reads).
#   make-test-image.sh ROOTFS REF OUT.tar [COMMAND [ARGS...]]
set -euo pipefail
rootfs=${1:?usage: make-test-image.sh ROOTFS REF OUT.tar}
ref=${2:?}
out=${3:?}
shift 3
[ $# -gt 0 ] || set -- /bin/sh
cmd=()
for arg in "$@"; do cmd+=(--config.cmd "$arg"); done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:base"
umoci unpack --rootless --image "$work/oci:base" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$work/oci:base" "$work/bundle"
umoci config --image "$work/oci:base" --tag latest "${cmd[@]}" \
  --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.workingdir / \
  --config.label org.bulkhead.test=1 --author bulkhead-tests
rm -f "$out"
skopeo copy --quiet "oci:$work/oci:latest" "docker-archive:$out:$ref"
chmod 644 "$out"
