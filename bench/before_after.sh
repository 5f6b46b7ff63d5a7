#!/usr/bin/env bash
# bench/before_after.sh -- part of `make bench-sim`: the acquire + release
# cycle of this tree against the code before the simulator refactor (issue
# 13, item 4: "production keeps its speed ... within 3%").
#
# Builds libpoolrt.a of BEFORE_REF (default d17cf01, main before issue 13)
# from `git archive` into $BUILD/bench/tree-<sha> (kept: later runs reuse
# it), and of AFTER_REF the same way (default: none, i.e. this tree's own
# $BUILD/libpoolrt.a).  The one bench/driver.c of this tree is compiled
# against each (with that tree's include/poolrt.h), and the pool-only cycle
# (driver -q noop: acquire + release, no query, 4 open connections, the
# built-in default policy) runs at T threads, before and after back to back
# in each round, in reverse order every other round, so drift on this
# shared machine hits both alike.  Two summaries: the ratio of each
# side's best round (other sessions' load can only slow a run down, so
# the fastest of many short runs is the closest to the code's own speed;
# this is the verdict), and the median of the per-round ratios.  Then the
# instructions per acquire + release of each (bench/acquire_instr.sh,
# callgrind), which no load moves.  Prints a markdown section on stdout (bench/sim.sh puts
# it into bench/RESULTS-sim.md).  Needs POOLRT_CONNINFO (tools/with-pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/ratios.sh

BUILD=${BUILD:-build}
BEFORE_REF=${BEFORE_REF:-d17cf01}
AFTER_REF=${AFTER_REF:-}
ROUNDS=${BA_ROUNDS:-9}
SECS=${BA_SECS:-0.5}
THREADS=${BA_THREADS:-"1 8"}
[ -n "${POOLRT_CONNINFO:-}" ] || { echo "before_after.sh: POOLRT_CONNINFO is not set (use tools/with-pg.sh)" >&2; exit 2; }

# The directory holding include/ and build/libpoolrt.a of git ref $1,
# building it on first use.
tree_of() {
  local sha dir
  sha=$(git rev-parse --short "$1^{commit}")
  dir=$BUILD/bench/tree-$sha
  if [ ! -f "$dir/build/libpoolrt.a" ]; then
    echo "before_after.sh: building libpoolrt.a of $1 ($sha) in $dir" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    git archive "$sha" | tar -x -C "$dir"
    make -s -C "$dir" -j2 build/libpoolrt.a >&2
  fi
  echo "$dir"
}

# driver_for INCLUDE_DIR LIBRARY OUT: bench/driver.c against that header and library.
driver_for() {
  # shellcheck disable=SC2046
  ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -g -pthread -I"$1" $(pkg-config --cflags luajit libpq) \
    -o "$3" bench/driver.c "$2" $(pkg-config --libs luajit libpq) -lm -pthread
}

before_dir=$(tree_of "$BEFORE_REF")
after_inc=include after_lib=$BUILD/libpoolrt.a
after_name="this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include 2>/dev/null || echo ' + uncommitted changes'))"
if [ -n "$AFTER_REF" ]; then
  after_dir=$(tree_of "$AFTER_REF")
  after_inc=$after_dir/include after_lib=$after_dir/build/libpoolrt.a
  after_name="$AFTER_REF ($(git rev-parse --short "$AFTER_REF^{commit}"))"
fi
[ -f "$after_lib" ] || { echo "before_after.sh: $after_lib missing (run make first)" >&2; exit 2; }
BEFORE=$BUILD/bench/driver-before AFTER=$BUILD/bench/driver-after
driver_for "$before_dir/include" "$before_dir/build/libpoolrt.a" "$BEFORE"
driver_for "$after_inc" "$after_lib" "$AFTER"

# One run of driver $1 at T = $2: "cycles/s cycles-per-CPU-second".  The
# second divides the cycles by the process's user + system time, which
# other sessions' load inflates far less than the wall clock.
cycles() {
  local out cpu
  cpu=$(mktemp)
  out=$(timeout -k 5 60 /usr/bin/time -o "$cpu" -f "%U %S" "$1" -q noop -w "$2" -m 4 -d "$SECS")
  awk -v tps="$(sed -n 's/.*\btps=\([0-9.]*\).*/\1/p' <<<"$out")" -v ops="$(sed -n 's/.*\bops=\([0-9]*\).*/\1/p' <<<"$out")" \
    '{ printf "%.0f %.0f\n", tps, ($1 + $2 > 0 ? ops / ($1 + $2) : 0) }' "$cpu"
  rm -f "$cpu"
}

rows=()
for t in $THREADS; do
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then b=$(cycles "$BEFORE" "$t"); a=$(cycles "$AFTER" "$t")
    else a=$(cycles "$AFTER" "$t"); b=$(cycles "$BEFORE" "$t"); fi
    rows+=("$t $r ${a% *} ${b% *} ${a#* } ${b#* }")
    echo "T=$t round $r: before ${b% *}, after ${a% *} cycles/s; per CPU second before ${b#* }, after ${a#* }" >&2
  done
done
# rows "round after before" at T = $1: wall clock ($2 = wall) or CPU time ($2 = cpu)
rounds_at() { printf '%s\n' "${rows[@]}" | awk -v t="$1" -v k="$2" '$1 == t { print $2, (k == "cpu" ? $5 : $3), (k == "cpu" ? $6 : $4) }'; }

echo "## Acquire + release before and after the refactor (item 4)"
echo
echo "Before: $BEFORE_REF ($(git rev-parse --short "$BEFORE_REF^{commit}")); after: $after_name."
echo "The same bench/driver.c built against each library; each round runs, back to back on one"
echo "throwaway PostgreSQL (reverse order every other round), $ROUNDS rounds of $SECS s:"
echo
echo "    $BEFORE -q noop -w T -m 4 -d $SECS    # before"
echo "    $AFTER  -q noop -w T -m 4 -d $SECS    # after"
echo
echo "Target: within 3%. Judged two ways: instructions per acquire + release (callgrind, below:"
echo "deterministic, after / before <= 1.03), and cycles/s, after / before >= 0.97 at every T on the"
echo "ratio of each side's best round (the fastest of $ROUNDS short runs: other sessions share this"
echo "$(nproc)-core machine, and their load can only slow a run down). Also given: the median of the"
echo "per-round ratios, and both per CPU second (cycles over the process's user + system time,"
echo "/usr/bin/time), which that load disturbs less than the wall clock."
echo
for t in $THREADS; do
  echo "T = $t, cycles per wall second:"
  echo
  echo "| round | after | before | after / before |"
  echo "|---:|---:|---:|---:|"
  rounds_at "$t" wall | ratio_table
  echo
  echo "T = $t, cycles per CPU second:"
  echo
  echo "| round | after | before | after / before |"
  echo "|---:|---:|---:|---:|"
  rounds_at "$t" cpu | ratio_table
  echo
done
# Instructions per acquire + release, counted by callgrind
# (bench/acquire_instr.sh): deterministic, whatever the load.
instr=$(bench/acquire_instr.sh "$BEFORE" "$AFTER")
ib=$(sed -n "s|^$BEFORE: \([0-9]*\) .*|\1|p" <<<"$instr") ia=$(sed -n "s|^$AFTER: \([0-9]*\) .*|\1|p" <<<"$instr")
echo "Instructions per uncontended acquire + release (callgrind, bench/acquire_instr.sh: driver -q noop -w 1"
echo "-m 4 -P policies/mru.lua, 300k cycles minus 100k cycles): deterministic, so load does not move it."
echo
echo "    bench/acquire_instr.sh $BEFORE $AFTER"
echo
sed 's/^/    /' <<<"$instr"
echo
awk -v a="$ia" -v b="$ib" 'BEGIN { r = b > 0 ? a / b : 0
  printf "- instructions: after / before %.3f (%d / %d) -- target <= 1.03 %s\n", r, a, b, (r > 0 && r <= 1.03 ? "met" : "MISSED") }'

# best_ratio WHAT: "- WHAT: best after / best before = r (a / b) -- target ... met|MISSED", rows on stdin.
best_ratio() {
  awk -v what="$1" '{ if ($2 > a) a = $2; if ($3 > b) b = $3 } END {
    r = b > 0 ? a / b : 0
    printf "- %s: best after / best before %.3f (%.0f / %.0f) -- target >= 0.97 %s\n", what, r, a, b, (r >= 0.97 ? "met" : "MISSED") }'
}
for t in $THREADS; do
  rounds_at "$t" wall | best_ratio "T = $t, per wall second"
  rounds_at "$t" cpu | best_ratio "T = $t, per CPU second"
  rounds_at "$t" wall | ratio_verdict "T = $t, per wall second, median of the rounds: after / before"
  rounds_at "$t" cpu | ratio_verdict "T = $t, per CPU second, median of the rounds: after / before"
done
