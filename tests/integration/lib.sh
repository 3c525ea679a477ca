# Shared helpers for the integration tests: a private service per test, real binaries, real namespaces.
set -euo pipefail

BIN=${BULKHEAD_BIN:?set BULKHEAD_BIN to the directory holding bulkheadd and bulkhead}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OTHER_UID=4242

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: this test needs root (it creates namespaces and runs a second user); run it as root" >&2
  exit 77
fi

T=$(mktemp -d /tmp/bulkhead-test.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/cfg" "$T/state" "$T/run" "$T/home"
chmod 777 "$T/home"
SVC_PID=

cleanup() {
  local rc=$?
  if [ -n "$SVC_PID" ] && kill -0 "$SVC_PID" 2>/dev/null; then
    kill -TERM "$SVC_PID" 2>/dev/null || true
    wait "$SVC_PID" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$T/daemon.log" ]; then
    echo "--- service log ---" >&2; cat "$T/daemon.log" >&2
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Starts bulkheadd on the private directories and waits for its sd_notify READY=1 (10 s deadline).
start_service() {
  rm -f "$T/notify.sock"
  python3 "$HERE/wait-ready.py" "$T/notify.sock" 10 & local waiter=$!
  while [ ! -S "$T/notify.sock" ]; do sleep 0.01; done
  NOTIFY_SOCKET="$T/notify.sock" "$BIN/bulkheadd" --config-dir "$T/cfg" --state-dir "$T/state" \
    --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
  SVC_PID=$!
  wait $waiter || fail "bulkheadd did not report READY=1 within 10 s"
}

stop_service() {
  kill -TERM "$SVC_PID"
  wait "$SVC_PID" || fail "bulkheadd exited with $? on SIGTERM"
  SVC_PID=
}

bh() { BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead" "$@"; }
# The same CLI, run as another user (uid $OTHER_UID).
bh_other() {
  setpriv --reuid $OTHER_UID --regid $OTHER_UID --clear-groups \
    env BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home" "$BIN/bulkhead" "$@"
}

make_rootfs() { "$HERE/../rootfs/make-test-rootfs.sh" "$@"; }

expect_eq() { [ "$1" = "$2" ] || fail "expected '$2', got '$1' ($3)"; }

# Runs a command that must fail with a given "Error code:" line; its stderr must name the problem.
expect_error() {
  local code=$1 pattern=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ $rc -ne 0 ] || fail "'$*' succeeded; expected $code"
  echo "$out" | grep -q "^Error code: .*/$code\$" || fail "'$*': no 'Error code: .../$code' line in: $out"
  echo "$out" | grep -q -- "$pattern" || fail "'$*': message does not match '$pattern': $out"
}

# Waits until "$@" succeeds, polling every 50 ms, for at most $DEADLINE seconds (default 10).
eventually() {
  local end=$((SECONDS + ${DEADLINE:-10}))
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

status_field() { bh status --json | python3 -c "import json,sys; print(eval(sys.argv[1], {'s': json.load(sys.stdin)}))" "$1"; }

distro_dirs() { find "$T/state/distributions" -mindepth 1 -maxdepth 1 | wc -l; }
