#!/usr/bin/env bash
# Fails when a file includes one of our folders that docs/architecture.md does not allow it to.
#
# Usage: scripts/check-includes.sh [ROOT]   (ROOT: the source tree, default this script's)
# The rules are the table under "## Folders and who may include whom" in ROOT/docs/architecture.md,
# whose rows read  | `src/NAME/` | what it holds | `base`, `ipc` |  (or "nothing of ours"). A row's
# name (NAME, the folder's last component) is also the first component of the include paths that
# reach it. Every .c/.cpp/.h file under a row's folder is checked, in both include forms ("" and <>);
# a folder may include itself, a name that is no row's (kj/, sys/, ...) is not ours and not ruled.
# Also fails on an include path with "..", which would step around the rules, and on a folder of
# src/ with no row. Prints one line per violation, FILE:LINE: ..., and exits 1; 2 if the table is
# missing.
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc=docs/architecture.md
cd "$root"

# One line per row: NAME PATH ALLOWED... (names without backticks).
rules=$(awk '
    /^## / { section = ($0 == "## Folders and who may include whom") }
    section && /^\| *`[^`]+` *\|/ {
        n = split($0, cell, "|")
        path = cell[2]; gsub(/[ `]/, "", path)
        name = path; sub(/\/$/, "", name); sub(/.*\//, "", name)
        allowed = cell[n - 1]; line = name " " path
        while (match(allowed, /`[^`]+`/)) {
            line = line " " substr(allowed, RSTART + 1, RLENGTH - 2)
            allowed = substr(allowed, RSTART + RLENGTH)
        }
        print line
    }' "$doc")
if [ -z "$rules" ]; then
    echo "$doc: no table of include rules under \"## Folders and who may include whom\"" >&2
    exit 2
fi

status=0
for dir in src/*/; do
    name=$(basename "$dir")
    if ! awk -v name="$name" '$1 == name { found = 1 } END { exit !found }' <<<"$rules"; then
        echo "$dir: no row in the include rules of $doc"
        status=1
    fi
done

read -r -a paths <<<"$(awk '{ printf "%s ", $2 }' <<<"$rules")"
existing=()
for path in "${paths[@]}"; do
    [ -d "$path" ] && existing+=("$path")
done

# grep prints FILE:LINE:TEXT for every include line; awk judges each against the rules.
if ! { grep -rnE --include='*.c' --include='*.cpp' --include='*.h' \
    '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]' "${existing[@]}" || true; } \
    | awk -v rules="$rules" -v doc="$doc" '
        BEGIN {
            rows = split(rules, row, "\n")
            for (i = 1; i <= rows; i++) {
                k = split(row[i], field, " ")
                ours[field[1]] = 1; path[field[1]] = field[2]
                list[field[1]] = ""
                for (j = 3; j <= k; j++) {
                    may[field[1], field[j]] = 1
                    list[field[1]] = list[field[1]] (j > 3 ? ", " : "") field[j]
                }
            }
        }
        {
            file = $0; sub(/:.*/, "", file)
            rest = substr($0, length(file) + 2); lineno = rest; sub(/:.*/, "", lineno)
            text = substr(rest, length(lineno) + 2)
            if (!match(text, /["<][^">]+[">]/)) next
            target = substr(text, RSTART + 1, RLENGTH - 2)
            # The row whose folder holds this file: the longest matching path.
            from = ""; longest = 0
            for (name in path)
                if (index(file, path[name]) == 1 && length(path[name]) > longest) {
                    from = name; longest = length(path[name])
                }
            if (target ~ /(^|\/)\.\.(\/|$)/) {
                printf "%s:%s: includes \"%s\": an include path with .. steps around the rules of %s\n", file, lineno, target, doc
                bad = 1; next
            }
            if (index(target, "/") == 0) next
            to = target; sub(/\/.*/, "", to)
            if (!(to in ours) || to == from || (from, to) in may) next
            printf "%s:%s: includes \"%s\": %s may not include %s (%s allows: %s)\n", file, lineno, target,
                path[from], path[to], doc, list[from] == "" ? "nothing of ours" : list[from]
            bad = 1
        }
        END { exit bad }'; then
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "include rules: ${#existing[@]} folders checked against $doc, no violation"
fi
exit "$status"
