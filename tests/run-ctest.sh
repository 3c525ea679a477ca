#!/usr/bin/env bash
# Runs ctest in BUILD with the given arguments, then prints the suite's budget: its total time,
# its five slowest cases and any test that took more than a third of its timeout. The cases are
# the "=== NAME: PASS (S s)" lines the integration scripts print (tests/integration/lib.sh,
# plugins-run-cases.sh), read back from ctest's Testing/Temporary/LastTest.log; a test that
# prints none (the unit tests) counts as one case.
#   run-ctest.sh BUILD [CTEST-ARGUMENT...]      exits with ctest's status
set -uo pipefail
build=${1:?usage: run-ctest.sh BUILD [CTEST-ARGUMENT...]}
shift
cd "$build" || exit 2
start=${EPOCHREALTIME/[.,]/}
ctest "$@"
rc=$?
ms=$(((${EPOCHREALTIME/[.,]/} - start) / 1000))
timeout=300
for ((i = 1; i <= $#; i++)); do
  [ "${!i}" != --timeout ] || { j=$((i + 1)); timeout=${!j}; }
done

log=Testing/Temporary/LastTest.log
cases=$(mktemp)
trap 'rm -f "$cases"' EXIT
echo
printf '=== Suite: %d.%03d s in all (ctest %s)\n' $((ms / 1000)) $((ms % 1000)) "$*"
[ -f "$log" ] || { echo "(no $log: no per-case times)"; exit $rc; }
awk -v timeout="$timeout" '
  /^[0-9]+\/[0-9]+ Testing: / { test = $0; sub(/^[0-9]+\/[0-9]+ Testing: /, "", test); cases = 0; next }
  /^=== .*: (PASS|FAIL).* \([0-9.]+ s\)$/ {
    t = $0; sub(/.*\(/, "", t); sub(/ s\)$/, "", t)
    name = $0; sub(/^=== /, "", name); sub(/: (PASS|FAIL).*$/, "", name)
    printf "%s\t%s\t%s\n", t, test, name > "/dev/stderr"; cases++; next
  }
  /^Test time = / {
    t = $4
    if (cases == 0) printf "%s\t%s\t(whole test)\n", t, test > "/dev/stderr"
    if (t > timeout / 3) printf "BUDGET: %s took %s s, more than a third of its %s s timeout\n", test, t, timeout
    tests++
  }
' "$log" 2>"$cases" || true
echo "=== Five slowest cases:"
sort -t$'\t' -k1,1 -rn "$cases" | head -n 5 | awk -F'\t' '{ printf "  %8.3f s  %-40s %s\n", $1, $2, $3 }'
exit $rc
