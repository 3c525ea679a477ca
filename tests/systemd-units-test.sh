#!/usr/bin/env bash
# systemd-analyze verify on the installed bulkhead.service and bulkhead.socket: installed into a
# scratch root beside a copy of the host's units (what they depend on), then checked there; a
# planted broken copy must fail the same check. systemd-units-test.sh BUILD-DIR UNIT-DIR
set -euo pipefail
build=$1 units=$2
command -v systemd-analyze >/dev/null \
  || { echo "SKIP: systemd-analyze is missing (Debian package systemd); the units are not verified" >&2; exit 77; }
root=$(mktemp -d /tmp/bulkhead-units.XXXXXX)
trap 'rm -rf "$root"' EXIT
DESTDIR=$root cmake --install "$build" --component bulkhead >/dev/null
mkdir -p "$root/usr/lib/systemd/system"
cp -r /lib/systemd/system/. "$root/usr/lib/systemd/system/"
[ -f "$root$units/bulkhead.service" ] && [ -f "$root$units/bulkhead.socket" ] || { echo "FAIL: units not installed in $units" >&2; exit 1; }
verify() { systemd-analyze verify --man=no --root="$root" "$@" 2>&1; }
out=$(verify "$units/bulkhead.socket" "$units/bulkhead.service") || { echo "FAIL: systemd-analyze verify: $out" >&2; exit 1; }
[ -z "$out" ] || { echo "FAIL: systemd-analyze verify warns: $out" >&2; exit 1; }
sed 's|^ExecStart=.*|ExecStart=no/such/bulkheadd|' "$root$units/bulkhead.service" >"$root$units/broken.service"
if verify "$units/broken.service" >/dev/null; then echo "FAIL: verify accepted a broken unit" >&2; exit 1; fi
echo "PASS: bulkhead.service and bulkhead.socket verify"
