#!/usr/bin/env bash
# Installs the Debian packages Bulkhead needs to build, test, demo and benchmark; idempotent.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang-format
  clang # make check-thread-safety: Clang's -Wthread-safety (the build itself is g++)
  capnproto libcapnp-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libarchive-dev libsystemd-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  busybox-static bubblewrap util-linux bsdutils procps jq openssl tmux
  systemd go-md2man
  crun skopeo umoci
  passt # vm.network = "nat": pasta, the VMs' user-mode network stack
  xz-utils zstd # container image import of compressed tars (gzip is essential)
  mmdebstrap uidmap # `bulkhead install` and `make test-debian` (uidmap: mmdebstrap's unshare mode)
)
# `make package` and `make package-test` need these too (install-deps.sh package).
if [ "${1:-}" = package ]; then
  packages+=(lintian fakeroot dpkg-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
