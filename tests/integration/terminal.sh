#!/usr/bin/env bash
# `bulkhead run` at a real terminal: tmux runs the real CLI in a pane of a private tmux server;
# the test types keys and reads the screen. The program gets a pseudo-terminal of the
# distribution's own devpts, as session leader: job control, Ctrl-C and Ctrl-Z through the line
# discipline, the window size (initially and on resize), full-screen programs, the exit status,
# and the user's terminal settings as they were. Without a terminal (a pipeline, -T), none.
source "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "SKIP: tmux is not installed (scripts/install-deps.sh installs it)"; exit 77; }
start_service
bh register alpha --rootfs "$ROOTFS" >/dev/null

# --- Without tmux: script(1) gives the CLI a terminal; pipelines and -T get none ---
export BULKHEAD_RUNTIME_DIR="$T/run" HOME="$T/home"
# script's input stays open (a silent sleep): at its end script would type its own VEOF character,
# which is NUL where its input is no terminal.
exec 7< <(exec sleep 600 2>/dev/null)
QUIET_INPUT=$!
on_terminal() { script -qec "stty rows 37 cols 91; $*" /dev/null <&7 | tr -d '\r'; }
out=$(on_terminal "$BIN/bulkhead run -- sh -c 'tty; stty size; exit 3'; echo cli-exit=\$?")
[[ $(sed -n 1p <<<"$out") == /dev/pts/[0-9]* ]] || fail "the program's stdin is not a pseudo-terminal: $out"
expect_eq "$(sed -n 2p <<<"$out")" "37 91" "the initial window size"
expect_eq "$(sed -n 3p <<<"$out")" "cli-exit=3" "the program's exit status is the CLI's"
# The distribution's own devpts: its first terminal is 0 whatever the host has open, and the
# host's terminals are not there.
expect_eq "$(sed -n 1p <<<"$out")" "/dev/pts/0" "a terminal of the distribution's own devpts"
expect_eq "$(on_terminal "$BIN/bulkhead run -- ls -1 /dev/pts" | tr "\n" " ")" "0 ptmx " "the host's terminals in the distribution"
expect_eq "$(on_terminal "$BIN/bulkhead run -T -- sh -c 'tty || true'")" "not a tty" "run -T"
expect_eq "$(bh run -- sh -c 'tty || true' </dev/null)" "not a tty" "no terminal in a pipeline"
expect_eq "$(bh run -t -- sh -c 'tty >/dev/null && stty size' </dev/null | tr -d '\r')" "24 80" "run -t without a terminal: 24x80"
# SIGTERM to the CLI reaches the program (its foreground process group), which says so and exits.
# (A background job's stdin is /dev/null: -t.)
script -qfec "$BIN/bulkhead run -t -- sh -c 'trap \"echo got-term; exit 9\" TERM; echo ready; while :; do sleep 0.1; done' &
  cli=\$!; while ! grep -q ready $T/term.out; do sleep 0.05; done; kill -TERM \$cli; wait \$cli; echo cli-exit=\$?" \
  /dev/null <&7 >"$T/term.out" &
DEADLINE=20 eventually grep -q cli-exit "$T/term.out"
expect_eq "$(tr -d '\r' <"$T/term.out" | grep -v ready | tr '\n' ' ')" "got-term cli-exit=9 " "SIGTERM forwarded to the program"

# A program that ignores SIGTERM (a login shell does): a second SIGTERM hangs its terminal up, and
# the hangup's SIGHUP ends it (128 + 1).
script -qfec "$BIN/bulkhead run -t -- sh -c 'trap \"\" TERM; echo ready; sleep 100' &
  cli=\$!; while ! grep -q ready $T/hup.out; do sleep 0.05; done; kill -TERM \$cli; sleep 0.5; kill -TERM \$cli; wait \$cli; echo cli-exit=\$?" \
  /dev/null <&7 >"$T/hup.out" &
DEADLINE=20 eventually grep -q cli-exit "$T/hup.out"
expect_eq "$(tr -d '\r' <"$T/hup.out" | grep cli-exit)" "cli-exit=129" "a second SIGTERM hangs the terminal up"
# Redirected stderr keeps the program's stderr apart: no terminal then either.
expect_eq "$(on_terminal "$BIN/bulkhead run -- sh -c 'tty || true' 2>/dev/null")" "not a tty" "stderr redirected"

# --- In tmux: a shell, typed at ---
TMUX_SOCKET=$T/tmux.sock
tm() { tmux -S "$TMUX_SOCKET" "$@"; }
trap '__rc=$?; [ $__rc -eq 0 ] || { echo "--- the screen ---"; screen; } >&2; tm kill-server 2>/dev/null; kill $QUIET_INPUT 2>/dev/null; (exit $__rc); cleanup' EXIT
PANE=bh # the tmux session typed at
screen() { tm capture-pane -p -t "$PANE"; }
on_screen() { screen | grep -E -- "$1" >/dev/null; }
wait_screen() { DEADLINE=${2:-20} eventually on_screen "$1"; }
# Types a line and waits for the prompt after it: keys LINE PROMPT-COUNT.
prompts() { screen | grep -c '^bh#' || true; }
type_line() {
  local before; before=$(prompts)
  tm send-keys -t "$PANE" -l -- "$1"
  tm send-keys -t "$PANE" Enter
  DEADLINE=20 eventually prompt_after "$before"
}
prompt_after() { [ "$(prompts)" -gt "$1" ]; }
# Runs COMMAND in the foreground, then types KEY (C-c, C-z) at it and waits for the next prompt.
key_at() {
  tm send-keys -t "$PANE" -l "$1"
  tm send-keys -t "$PANE" Enter
  sleep 0.3
  local before; before=$(prompts)
  tm send-keys -t "$PANE" "$2"
  DEADLINE=10 eventually prompt_after "$before"
}

tm -f /dev/null new-session -d -s bh -x 100 -y 30 \
  "stty -g >$T/before; BULKHEAD_RUNTIME_DIR=$T/run HOME=$T/home $BIN/bulkhead run -- env 'PS1=bh# ' sh; echo cli-exit=\$?; stty -g >$T/after; sleep 600"
wait_screen '^bh#'
# Ctrl-C interrupts the foreground sleep, and the shell lives on.
key_at 'sleep 100' C-c
type_line 'echo interrupted=$?'
on_screen '^interrupted=130$' || fail "Ctrl-C did not interrupt sleep with SIGINT: $(screen)"
# Job control: Ctrl-Z stops a job, jobs lists it, bg and fg move it, and it is ended.
key_at 'sleep 200' C-z
type_line 'jobs'
screen | grep -E '^\[1\]\+? +Stopped +sleep 200' >/dev/null || fail "Ctrl-Z did not stop the job: $(screen)"
type_line 'bg'
type_line 'jobs'
screen | grep -E '^\[1\]\+? +Running +sleep 200' >/dev/null || fail "bg did not resume the job: $(screen)"
tm send-keys -t bh -l 'fg'
tm send-keys -t bh Enter
DEADLINE=10 eventually on_screen '^sleep 200$'
type_before=$(prompts)
tm send-keys -t bh C-c
DEADLINE=10 eventually prompt_after "$type_before"
type_line 'echo foreground=$?; jobs'
on_screen '^foreground=130$' || fail "fg did not bring the job back where Ctrl-C ends it: $(screen)"
# The window size follows a resize.
resize_followed() {
  tm resize-window -t "$PANE" -x 120 -y 40
  sleep 0.3
  type_line 'stty size'
  on_screen '^40 120$' || fail "the window size did not follow the resize in $PANE: $(screen)"
}
resize_followed
# A full-screen program: busybox vi draws its screen (tildes on empty lines) and quits on :q!.
tm send-keys -t bh -l 'vi /tmp/file'
tm send-keys -t bh Enter
wait_screen '^~ *$' 10
tm send-keys -t bh Escape
sleep 0.3 # an Escape followed at once by ':' would read as Alt-:
tm send-keys -t bh -l ':q!'
tm send-keys -t bh Enter
DEADLINE=10 eventually on_screen '^bh#'
# The last command's status is the CLI's, and the terminal is as it was.
tm send-keys -t bh -l 'exit 5'
tm send-keys -t bh Enter
wait_screen '^cli-exit=5$'
DEADLINE=10 eventually test -s "$T/after"
expect_eq "$(cat "$T/after")" "$(cat "$T/before")" "the terminal's settings after the run (stty -g)"

# --- Containers: run -t and exec -t give the container's process a console of its own (crun's,
# handed over its console socket), relayed as run's terminal is ---
bh container image load "$FIXTURES/image.tar" >/dev/null
out=$(on_terminal "$BIN/bulkhead container run --rm -t debian:latest sh -c 'tty; stty size; echo \$TERM; exit 3'; echo cli-exit=\$?")
expect_eq "$out" $'/dev/pts/0\n37 91\nxterm\ncli-exit=3' "container run -t: its console, its size, TERM and its status"
bh container run -d --name waiter debian:latest sleep 1234 >/dev/null
out=$(on_terminal "$BIN/bulkhead container exec -t waiter sh -c 'tty; stty size; exit 4'; echo cli-exit=\$?")
expect_eq "$out" $'/dev/pts/0\n37 91\ncli-exit=4' "container exec -t: a console of the container's own devpts"
expect_error EINVAL "it cannot go with -d" bh container run -d -t debian:latest true
# crun's own errors reach the CLI's stderr.
out=$(on_terminal "$BIN/bulkhead container run --rm -t debian:latest /no/such/program 2>&1; echo cli-exit=\$?")
grep -F "/no/such/program" <<<"$out" >/dev/null || fail "crun's error did not reach stderr: $out"
grep -xE "cli-exit=[1-9][0-9]*" <<<"$out" >/dev/null || fail "a failed container run -t succeeded: $out"
# SIGTERM to the CLI reaches the container's process, which says so and exits.
script -qfec "$BIN/bulkhead container run --rm -t debian:latest sh -c 'trap \"echo got-term; exit 9\" TERM; echo ready; while :; do sleep 0.1; done' &
  cli=\$!; while ! grep -q ready $T/cterm.out; do sleep 0.05; done; kill -TERM \$cli; wait \$cli; echo cli-exit=\$?" \
  /dev/null <&7 >"$T/cterm.out" &
DEADLINE=20 eventually grep -q cli-exit "$T/cterm.out"
expect_eq "$(tr -d '\r' <"$T/cterm.out" | grep -v ready | tr '\n' ' ')" "got-term cli-exit=9 " "SIGTERM forwarded to the container"

# Typed at in tmux: Ctrl-C and Ctrl-Z reach the container shell's foreground job through its
# console's line discipline, a resize its size, and the terminal is as it was after.
PANE=ctr
tm new-session -d -s ctr -x 100 -y 30 \
  "stty -g >$T/cbefore; BULKHEAD_RUNTIME_DIR=$T/run HOME=$T/home $BIN/bulkhead container run --rm -t -e 'PS1=bh# ' debian:latest sh; echo cli-exit=\$?; stty -g >$T/cafter; sleep 600"
wait_screen '^bh#'
key_at 'sleep 100' C-c
type_line 'echo interrupted=$?'
on_screen '^interrupted=130$' || fail "Ctrl-C did not interrupt sleep in the container: $(screen)"
key_at 'sleep 200' C-z
type_line 'jobs'
screen | grep -E '^\[1\]\+? +Stopped +sleep 200' >/dev/null || fail "Ctrl-Z did not stop the container's job: $(screen)"
type_line 'kill -KILL %1; wait'
resize_followed
tm send-keys -t ctr -l 'exit 6'
tm send-keys -t ctr Enter
wait_screen '^cli-exit=6$'
DEADLINE=10 eventually test -s "$T/cafter"
expect_eq "$(cat "$T/cafter")" "$(cat "$T/cbefore")" "the terminal's settings after container run -t (stty -g)"
echo "terminal: ok"
