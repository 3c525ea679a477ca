#!/usr/bin/env bash
# Logging under systemd: with JOURNAL_STREAM naming its stderr, bulkheadd sends structured entries
# to the journal's native socket (here a stand-in, bh-test-helper journal, at
# /run/systemd/journal/socket on a private tmpfs in a private mount namespace) and nothing to
# stderr: priorities, SYSLOG_IDENTIFIER, and PLUGIN=, PLUGIN_PID=, SESSION_UID= on what a plugin
# did (folder-share vetoing a VM). A JOURNAL_STREAM that is not its stderr keeps plain lines, and
# --log-level drops what is below it.
if [ -z "${BH_JOURNAL_HIDDEN:-}" ] && [ "$(id -u)" -eq 0 ]; then
  exec unshare --mount --propagation private env BH_JOURNAL_HIDDEN=1 "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

mount -t tmpfs -o mode=0755 journal-stand-in /run
mkdir -p /run/systemd/journal
# Its stderr is not ctest's: ctest would wait for it to end. It ends at its deadline or below.
exec {journal}< <(exec "$HELPER" journal /run/systemd/journal/socket "$T/journal" 30 2>/dev/null)
journal_pid=$!
read -r -u "$journal" line || true
[ "$line" = listening ] || fail "the journal stand-in did not bind its socket"
# One line per entry: "KEY=VALUE | KEY=VALUE | ...".
entries() { awk 'BEGIN { RS = ""; FS = "\n" } { line = $1; for (i = 2; i <= NF; i++) line = line " | " $i; print line }' "$T/journal"; }

# folder-share, asked to share a folder that does not exist: it vetoes every VM.
mkdir -p "$T/plugins" "$T/cfg/plugins.d"
cp "$BIN/../plugins/folder-share.so" "$T/plugins/"
printf 'folder=%s\nmountpoint=/mnt/share\n' "$T/no-such-folder" >"$T/plugins/folder-share.conf"
printf 'name = "share"\npath = "%s"\n' "$T/plugins/folder-share.so" >"$T/cfg/plugins.d/10-share.toml"

touch "$T/daemon.log"
start_service_with_env JOURNAL_STREAM="$(stat -c %d:%i "$T/daemon.log")"
bh register busybox --rootfs "$ROOTFS" >/dev/null
! bh run -d busybox -- /bin/true 2>/dev/null || fail "folder-share did not veto the VM"
"$HELPER" wait-grep "$T/journal" 1 "^MESSAGE=plugin 'share' vetoed" 10 || fail "no veto entry in the journal"

all=$(entries)
grep -qE "^MESSAGE=bulkheadd .* listening on $T/run/control.sock \| PRIORITY=6 \| SYSLOG_IDENTIFIER=bulkheadd$" <<<"$all" \
  || fail "no info entry for the start: $all"
grep -qE "^MESSAGE=plugin 'share': host started \(pid [0-9]+\) \| PRIORITY=6 \| SYSLOG_IDENTIFIER=bulkheadd \| PLUGIN=share \| PLUGIN_PID=[0-9]+$" <<<"$all" \
  || fail "no PLUGIN= and PLUGIN_PID= on the host's start: $all"
grep -qE "^MESSAGE=plugin 'share' vetoed on_vm_started: .* \| PRIORITY=4 \| SYSLOG_IDENTIFIER=bulkheadd \| PLUGIN=share \| PLUGIN_PID=[0-9]+ \| SESSION_UID=0$" <<<"$all" \
  || fail "the veto is not a warning with PLUGIN=, PLUGIN_PID= and SESSION_UID=: $all"
grep -qE "^MESSAGE=plugin share: .* \| PRIORITY=6 \| SYSLOG_IDENTIFIER=bulkheadd \| PLUGIN=share$" <<<"$all" \
  || fail "the plugin's own output has no PLUGIN=: $all"
! grep -q "listening on" "$T/daemon.log" || fail "under the journal, bulkheadd still wrote lines to stderr"
stop_service

# JOURNAL_STREAM inherited but not naming stderr (another file): plain lines on stderr.
: >"$T/journal"
start_service_with_env JOURNAL_STREAM=0:0
stop_service
grep -q "^<6>bulkheadd .* listening on" "$T/daemon.log" || fail "with a foreign JOURNAL_STREAM, no line on stderr"
[ ! -s "$T/journal" ] || fail "with a foreign JOURNAL_STREAM, entries went to the journal: $(entries)"

# --log-level warning: the start-up's info line is dropped.
: >"$T/daemon.log"
SERVICE_ARGS=(--log-level warning)
start_service
stop_service
! grep -q "listening on" "$T/daemon.log" || fail "--log-level warning still logged an info line"
kill "$journal_pid" 2>/dev/null || true
echo "PASS: structured journal entries under systemd, plain lines otherwise"
