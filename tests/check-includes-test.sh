#!/usr/bin/env bash
# Shows that scripts/check-includes.sh can fail: on a private copy of the tree it must pass, then
# fail on each planted violation, naming the file, the line and the folder.
#   check-includes-test.sh SOURCE-DIR
set -euo pipefail
source_dir=${1:?usage: check-includes-test.sh SOURCE-DIR}
check=$source_dir/scripts/check-includes.sh
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

copy_tree() {
    rm -rf "${tree:?}"/*
    mkdir -p "$tree/docs"
    cp -r "$source_dir/src" "$source_dir/include" "$tree/"
    cp "$source_dir/docs/architecture.md" "$tree/docs/"
}

# expect_violation FILE LINE-TO-APPEND EXPECTED-OUTPUT: the check fails and prints EXPECTED.
expect_violation() {
    local file=$1 line=$2 expected=$3 output rc=0
    copy_tree
    echo "$line" >>"$tree/$file"
    output=$("$check" "$tree") || rc=$?
    [ "$rc" -eq 1 ] || fail "planting '$line' in $file: exit status $rc, not 1; output: $output"
    grep -qF -- "$expected" <<<"$output" || fail "planting '$line' in $file: no '$expected' in: $output"
    echo "=== $file: $line: caught"
}

copy_tree
"$check" "$tree" >/dev/null || fail "the unchanged tree does not pass"

lines=$(($(wc -l <"$source_dir/src/cli/commands.h") + 1))
expect_violation src/cli/commands.h '#include "service/service.h"' \
    "src/cli/commands.h:$lines: includes \"service/service.h\": src/cli/ may not include src/service/"
lines=$(($(wc -l <"$source_dir/src/base/uuid.h") + 1))
expect_violation src/base/uuid.h '#  include <plugin/plugin-runtime.h>' \
    "src/base/uuid.h:$lines: includes \"plugin/plugin-runtime.h\": src/base/ may not include src/plugin/"
expect_violation src/plugin/stub-route.h '#include "config/config.h"' \
    "src/plugin/stub-route.h:"
expect_violation src/vm/mounts.h '#include "../service/config.h"' "an include path with .."

# A folder without a row, and a document without the table.
copy_tree
mkdir "$tree/src/newfolder"
rc=0
output=$("$check" "$tree") || rc=$?
[ "$rc" -eq 1 ] && grep -qF "src/newfolder/: no row" <<<"$output" || fail "a folder without a row passed: $output"
copy_tree
sed -i 's/^## Folders and who may include whom/## Folders/' "$tree/docs/architecture.md"
rc=0
"$check" "$tree" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "a document without the table: exit status $rc, not 2"
echo "=== check-includes: PASS"
