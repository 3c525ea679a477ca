#!/usr/bin/env bash
# bench/run.sh BUILD_DIR [--smoke]: runs every benchmark binary in BUILD_DIR/bench, merges their
# JSON into results.json and writes results.md (benchmark, value, the value in the results.json
# it replaces, floor, ratio, target, met?).
#
# Full run: writes bench/results.json and bench/results.md beside this script.
# --smoke:  every benchmark for a tiny min_time, results in BUILD_DIR/bench-smoke/, and fails
#           unless every result is sane (no error, value and floor finite and above zero). It
#           checks that the benchmarks work, never how fast: no timing is asserted anywhere.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR [--smoke]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
build=$(cd "$1" && pwd)
smoke=0
if [ $# -eq 2 ]; then
  [ "$2" = --smoke ] || usage
  smoke=1
fi
[ "$(id -u)" -eq 0 ] || { echo "run.sh: plugin hosts need root (cgroups); run as root" >&2; exit 1; }
command -v jq >/dev/null || { echo "run.sh: needs jq (scripts/install-deps.sh installs it)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
if [ $smoke -eq 1 ]; then
  out="$build/bench-smoke"
  args=(--benchmark_min_time=0.001)
  export BULKHEAD_BENCH_SMOKE=1 # bench-containers: an 8 MB image instead of 100 MB
else
  out="$here"
  args=()
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

binaries=()
for binary in "$build"/bench/bench-*; do
  [ -x "$binary" ] && [ -f "$binary" ] && [[ "$binary" != *.so ]] && binaries+=("$binary")
done
[ ${#binaries[@]} -gt 0 ] || { echo "run.sh: no benchmark binaries in $build/bench" >&2; exit 1; }

# The service-side log of each binary (host start-up lines, plugin output) goes to a file, so
# stdout stays the JSON.
for binary in "${binaries[@]}"; do
  name=$(basename "$binary")
  echo "run.sh: $name" >&2
  if ! "$binary" --benchmark_format=json "${args[@]}" >"$work/$name.json" 2>"$out/$name.log"; then
    echo "run.sh: $name failed; its log: $out/$name.log" >&2
    tail -5 "$out/$name.log" >&2
    exit 1
  fi
done

# The results.json this run replaces (the last full run; for --smoke, the last smoke run), for the
# table's "before" column. Without one (or with one jq cannot read) that column is all "—".
before="$work/before" # not *.json: only the binaries' output is merged below
if ! jq -e '.benchmarks | type == "array"' "$out/results.json" >/dev/null 2>&1 \
    || ! cp "$out/results.json" "$before"; then
  echo '{"benchmarks": []}' >"$before"
fi

jq -s '{context: .[0].context, benchmarks: [.[].benchmarks[]]}' "$work"/*.json >"$out/results.json"

# One table row per benchmark. Ratios above 1 cost more than the floor (bench/README.md).
# "before": the value of the same benchmark (same name) in the previous results.json, "—" if none.
jq -r --slurpfile before "$before" '
  ($before[0].benchmarks | map(select(.name | type == "string") | {key: .name, value: (.value | numbers)})
   | from_entries) as $previous |
  def num: if . == null then "—" elif . >= 100 then (round | tostring)
           elif . >= 1 then ((. * 100 | round) / 100 | tostring)
           else ((. * 1000 | round) / 1000 | tostring) end;
  def target: if .target_max_ratio then "ratio ≤ \(.target_max_ratio | num)"
              elif .target_max_value then "≤ \(.target_max_value | num)"
              elif .target_min_value then "≥ \(.target_min_value | num)" else "—" end;
  def met: if .target_max_ratio then (.ratio <= .target_max_ratio)
           elif .target_max_value then (.value <= .target_max_value)
           elif .target_min_value then (.value >= .target_min_value) else null end
           | if . == null then "—" elif . then "yes" else "**no**" end;
  "| benchmark | value | before | floor (same unit) | ratio | target | met? |",
  "| --- | ---: | ---: | ---: | ---: | --- | --- |",
  (.benchmarks[] | "| \(.name | sub("/(real_time|manual_time|iterations:1)$"; "")) | \(.value | num) \(.label // "") | \($previous[.name] | num) | \(.floor | num) | \(.ratio | num) | \(target) | \(met) |")
' "$out/results.json" >"$out/results.md"

if [ $smoke -eq 1 ]; then
  insane=$(jq -r '.benchmarks[] | select((.error_occurred // false)
      or ([.value, .floor, .ratio] | any(. == null or type != "number" or . <= 0))) | .name' "$out/results.json")
  if [ -n "$insane" ]; then
    echo "run.sh: results that are not sane (error, missing, zero or not finite):" >&2
    echo "$insane" >&2
    exit 1
  fi
  echo "run.sh: smoke pass: $(jq '.benchmarks | length' "$out/results.json") benchmarks ran, every result sane" >&2
fi
cat "$out/results.md"
