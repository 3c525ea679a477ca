#!/usr/bin/env bash
# The man pages' synopses match the programs' --help: for every command of `bulkhead` (walked
# through its Subcommands) and for `bulkheadd`, the options --help lists are exactly those of
# the command's SYNOPSIS lines in docs/man/*.md, and every synopsis line names a real command.
# Then the bash completion offers every command and option. cli-docs-test.sh BIN-DIR SOURCE-DIR
set -euo pipefail
bin=$1 src=$2
failures=0
complain() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# The words of SECTION of `PROGRAM ARGS... --help`: subcommand names, or option names (-h and
# --help left out), one per line, sorted.
help_words() {
  local section=$1
  shift
  "$@" --help | section_words "$section"
}
# The same of a --help text on stdin.
section_words() {
  awk -v section="$1:" '
    $0 == section { on = 1; next }
    /^[A-Z][A-Za-z]*:$/ { on = 0 }
    on && /^  [^ ]/ { n = split($1, names, ","); for (i = 1; i <= n; i++) print names[i] }' \
    | grep -vxE -- '-h|--help' | sort -u || true
}

# The SYNOPSIS lines of a Markdown man page, without emphasis: "bulkhead register [--rootfs DIR ...".
synopsis() { awk '/^# SYNOPSIS/ { on = 1; next } /^# / { on = 0 } on && /^\*\*/' "$1" | tr -d '*'; }
# The command path of a synopsis line: the lower-case words after the program name.
line_path() { awk '{ p = ""; for (i = 2; i <= NF && $i ~ /^[a-z][a-z-]*$/; i++) p = p " " $i; print substr(p, 2) }'; }
# Every synopsis line of PAGE after its command path and a tab, in $paged (one awk per page, not
# one per line and command).
index_page() { paged=$(synopsis "$1" | awk '{ p = ""; for (i = 2; i <= NF && $i ~ /^[a-z][a-z-]*$/; i++) p = p " " $i; print substr(p, 2) "\t" $0 }'); }
# The options on synopsis lines: words starting with - or -- after a space, "[" or "|".
line_options() { grep -oE '(^|[][ |])--?[A-Za-z][a-z-]*' | sed 's/^[][ |]//' | sort -u || true; }

# check PAGE PROGRAM [COMMAND...]: the options of PROGRAM COMMAND... --help against the page.
check() {
  local page=$1 program=$2
  shift 2
  local path="$*" lines subcommands
  lines=$(awk -F'\t' -v path="$path" '$1 == path { print $2 }' <<<"$paged")
  local help want got
  help=$("$program" "$@" --help)
  subcommands=$(section_words Subcommands <<<"$help")
  want=$(section_words Options <<<"$help")
  got=$(line_options <<<"$lines")
  if [ -n "$want" ] || [ -z "$subcommands" ]; then
    [ -n "$lines" ] || complain "$(basename "$page"): no synopsis line for '$(basename "$program") $path'"
    [ "$want" = "$got" ] || complain "$(basename "$page"): '$(basename "$program") $path' --help has options [$(echo $want)], the synopsis [$(echo $got)]"
  fi
  seen+=("$path")
  local sub
  for sub in $subcommands; do check "$page" "$program" "$@" "$sub"; done
}

seen=()
index_page "$src/docs/man/bulkhead.1.md"
check "$src/docs/man/bulkhead.1.md" "$bin/bulkhead"
while read -r path; do
  # Not grep -q: it would stop reading at the match, and printf's SIGPIPE fail the pipeline.
  printf '%s\n' "${seen[@]}" | grep -xF -- "$path" >/dev/null || complain "bulkhead.1.md: a synopsis for '$path', which is no command"
done < <(synopsis "$src/docs/man/bulkhead.1.md" | line_path | sort -u)
seen=()
index_page "$src/docs/man/bulkheadd.8.md"
check "$src/docs/man/bulkheadd.8.md" "$bin/bulkheadd"

# Completion: every command at its level, every option of a command.
source "$src/dist/bash-completion/bulkhead"
complete_words() { COMP_WORDS=("$bin/bulkhead" "$@"); COMP_CWORD=$(($# )); COMPREPLY=(); _bulkhead; printf '%s\n' "${COMPREPLY[@]}" | sort -u; }
expect_completion() { # WANTED-WORDS WORDS...: each wanted word is offered
  local wanted=$1 offered
  shift
  offered=$(complete_words "$@")
  for w in $wanted; do grep -qxF -- "$w" <<<"$offered" || complain "completion of '$*' does not offer $w (offers: $(echo $offered))"; done
}
expect_completion "$(help_words Subcommands "$bin/bulkhead")" ""
expect_completion "$(help_words Subcommands "$bin/bulkhead" vm)" vm ""
expect_completion "$(help_words Options "$bin/bulkhead" list)" list -
expect_completion "$(help_words Options "$bin/bulkhead" vm exec)" vm exec -
expect_completion "--distribution" --uid 0 run --d
expect_completion "$(help_words Options "$bin/bulkhead")" -

[ $failures -eq 0 ] || exit 1
echo "PASS: every command's --help matches its synopsis; completion offers every command and option"
