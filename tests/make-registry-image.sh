#!/usr/bin/env bash
# Builds the registry test image offline: Debian's docker-registry (the binary is taken from its
# package without installing it, which would start a registry on the host's port 5000), the
# libraries it needs, and a configuration listening on 127.0.0.1:5000 with no authentication, as a
# docker-archive named registry:2. The package is downloaded once into CACHE-DIR when the host
# does not have the binary.
#   make-registry-image.sh CACHE-DIR OUT.tar      (exit 77: no docker-registry to be had)
set -euo pipefail
cache=${1:?usage: make-registry-image.sh CACHE-DIR OUT.tar}
out=${2:?}
here=$(cd "$(dirname "$0")" && pwd)
bin=/usr/bin/docker-registry
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  deb=$(find "$cache" -maxdepth 1 -name 'docker-registry_*.deb' | head -1)
  if [ -z "$deb" ]; then
    (cd "$cache" && timeout 120 apt-get download -q docker-registry >/dev/null 2>&1) || exit 77
    deb=$(find "$cache" -maxdepth 1 -name 'docker-registry_*.deb' | head -1)
  fi
  rm -rf "$cache/unpacked"
  dpkg-deb -x "$deb" "$cache/unpacked"
  bin=$cache/unpacked/usr/bin/docker-registry
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc/docker/registry" "$root/var/lib/registry" "$root/tmp"
cp "$bin" "$root/bin/registry"
for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cat >"$root/etc/docker/registry/config.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
EOF
"$here/make-test-image.sh" "$root" registry:2 "$out" /bin/registry serve /etc/docker/registry/config.yml
