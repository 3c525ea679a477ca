#!/usr/bin/env bash
# `make package`: the Debian packages bulkhead and bulkhead-dev (CPack DEB), built in their own
# tree configured for /usr, then checked by lintian (docs/packaging.md lists what it still says).
# make-package.sh [BUILD-DIR]; prints the paths of the .deb files last.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-package}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DBULKHEAD_SYSTEMD_UNITDIR=/lib/systemd/system -DBULKHEAD_PACKAGE_DEB=ON >/dev/null
nice cmake --build "$build" -j "${JOBS:-2}"
rm -rf "$build/packages"
(cd "$build" && cpack -G DEB >/dev/null)
debs=("$build"/packages/*.deb)
[ ${#debs[@]} -eq 2 ] || { echo "make-package: expected two packages, got: ${debs[*]}" >&2; exit 1; }
# Errors fail the build; warnings are printed (the expected ones are explained in docs/packaging.md).
lintian --fail-on error --suppress-tags-from-file dist/debian/lintian-expected "${debs[@]}"
printf '%s\n' "${debs[@]}"
