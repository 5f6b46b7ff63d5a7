#!/usr/bin/env bash
# bench/cpu_cost.sh -- `make bench-cpu`: the client's own CPU per
# transaction (issue 14, item 3) at W = 128, side by side in one run on one
# PostgreSQL: pgbench -S -M prepared -c 128 -j 2, the C driver (max = 128
# and max = 8; and 2 threads x batches of W/2 multiplexed on max = 8,
# prt_pool_query_batch), the control (the driver's threads, each with a libpq
# connection of its own, no pool) and the Lua host (max = 128 and 8,
# 2 threads x pool:query_batch of W/2 multiplexed on max = 8, and 2 threads
# x W/2 poolrt.workers coroutines, each looping pool:query, on max = 8).
#
# CPU is user + system time of the client process and all its threads
# (bash's `time`), divided by the transactions it completed, start-up
# included (as bench/run.sh and bench/report count it).  It is far less
# sensitive to other load on the machine than TPS, but not immune: the
# rounds are interleaved (A B C ... then ... C B A) and every figure is a
# median with its range.  Writes bench/RESULTS-cpu.md; everything in that
# file from the line "<!-- kept -->" on is carried over from the old file
# (the hand-written notes).
#
# Knobs: CPU_SECS (per run, 5), CPU_ROUNDS (3), CPU_WORKERS (128),
# CPU_BASE=DIR: also run the poolrt configurations from another built tree
# (DIR/build/bench/driver, DIR/build/poolrt with DIR's lua/ and bench/),
# interleaved, for a before/after comparison in one run; CPU_ONLY="name
# ..." runs only those configurations; CPU_OUT (bench/RESULTS-cpu.md,
# "-" for stdout only); CPU_CALLGRIND=0 leaves out the instruction counts
# (CPU_N1, CPU_N2 queries; also left out without valgrind).  Needs
# POOLRT_CONNINFO (tools/with-pg.sh) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/ratios.sh

SECS=${CPU_SECS:-5}
ROUNDS=${CPU_ROUNDS:-3}
W=${CPU_WORKERS:-128}
BASE=${CPU_BASE:-}
OUT=${CPU_OUT:-bench/RESULTS-cpu.md}
[ -n "${POOLRT_CONNINFO:-}" ] || { echo "cpu_cost.sh: POOLRT_CONNINFO is not set (use tools/with-pg.sh)" >&2; exit 2; }
PGBIN=${POOLRT_PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/pgbench" ] || { echo "cpu_cost.sh: pgbench not found (postgresql package)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "cpu_cost.sh: needs GNU time (apt-get install time; tools/deps.sh bench)" >&2; exit 2; }
T0=$(date +%s)
log() { printf '[bench-cpu %4ds] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolrt-cpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The configurations: name, then the command (run from the tree in $tree).
STEPS=(pgbench c_direct c_prepared c_prepared_max8 c_batch_max8 pgbench_pipe lua_prepared lua_prepared_max8 lua_batch_max8 lua_workers_max8)
[ -z "${CPU_ONLY:-}" ] || read -r -a STEPS <<<"$CPU_ONLY"
step_cmd() { # name tree -> CMD array
  local name=$1 tree=$2
  case $name in
    pgbench)           CMD=("$PGBIN/pgbench" -n -S -M prepared -c "$W" -j 2 -T "$SECS" "$POOLRT_CONNINFO") ;;
    c_direct)          CMD=("$tree/build/bench/driver" -w "$W" -q direct -d "$SECS") ;;
    c_prepared)        CMD=("$tree/build/bench/driver" -w "$W" -m "$W" -q prepared -d "$SECS") ;;
    c_prepared_max8)   CMD=("$tree/build/bench/driver" -w "$W" -m 8 -q prepared -d "$SECS") ;;
    c_batch_max8)      CMD=("$tree/build/bench/driver" -w 2 -b $((W / 2)) -x -m 8 -q prepared -d "$SECS") ;;
    pgbench_pipe)      CMD=("$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -f "$WORK/pipe.sql" -T "$SECS" "$POOLRT_CONNINFO") ;;
    lua_prepared)      CMD=("$tree/build/poolrt" "$tree/bench/select.lua" "$W" "$W" "$SECS" prepared) ;;
    lua_prepared_max8) CMD=("$tree/build/poolrt" "$tree/bench/select.lua" "$W" 8 "$SECS" prepared) ;;
    lua_batch_max8)    CMD=("$tree/build/poolrt" "$tree/bench/select.lua" 2 8 "$SECS" batch 10 $((W / 2))) ;;
    lua_workers_max8)  CMD=("$tree/build/poolrt" "$tree/bench/select.lua" "$W" 8 "$SECS" workers 10 2) ;;
    lua_ffi)           CMD=("$tree/build/poolrt" "$tree/bench/select.lua" "$W" "$W" "$SECS" ffi) ;;
    lua_ffi_max8)      CMD=("$tree/build/poolrt" "$tree/bench/select.lua" "$W" 8 "$SECS" ffi) ;;
    *) echo "cpu_cost.sh: unknown configuration $name" >&2; exit 2 ;;
  esac
}
# With CPU_BASE every poolrt configuration also runs from that tree as base:NAME.
RUNS=()
for s in "${STEPS[@]}"; do
  RUNS+=("$s")
  [ -z "$BASE" ] || [[ $s == pgbench* ]] || [ "$s" = c_direct ] || RUNS+=("base:$s")
done

# One run: appends "name round cpu_s ops tps cswitches" to $WORK/rows.
# GNU time reports the child's rusage, all its threads included: CPU and
# context switches (voluntary + involuntary).
run_one() { # run round
  local run=$1 round=$2 tree=$ROOT name=$1 out ops tps cpu cs
  if [[ $run == base:* ]]; then tree=$BASE name=${run#base:}; fi
  step_cmd "$name" "$tree"
  /usr/bin/time -o "$WORK/cpu" -f '%U %S %w %c' timeout -k 5 $((SECS + 120)) "${CMD[@]}" >"$WORK/out" 2>&1 || true
  out=$(cat "$WORK/out")
  read -r cpu cs < <(awk 'NF == 4 { print $1 + $2, $3 + $4 }' "$WORK/cpu" | tail -1)
  if [[ $name == pgbench* ]]; then
    ops=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -1)
    if [ "$name" = pgbench_pipe ] && [ -n "$ops" ]; then # a transaction of its script is W/2 statements
      ops=$((ops * (W / 2)))
      tps=$(awk -v t="$tps" -v b=$((W / 2)) 'BEGIN { printf "%.1f", t * b }')
    fi
  else
    ops=$(sed -n 's/.*\bops=\([0-9]*\).*/\1/p' <<<"$out" | head -1)
    tps=$(sed -n 's/.*\btps=\([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  fi
  if [ -z "$ops" ] || [ "$ops" = 0 ]; then
    log "  $run: no result: $(tail -2 <<<"$out")"
    return 0
  fi
  echo "$run $round $cpu $ops $tps $cs" >>"$WORK/rows"
  log "  $run round $round: $(awk -v c="$cpu" -v o="$ops" -v s="$cs" 'BEGIN { printf "%.1f us/txn, %.2f switches/txn", c / o * 1e6, s / o }'), tps=$tps"
  # the command as run, for the report (the conninfo and trees by name)
  local shown="${CMD[*]}"
  shown=${shown//"$POOLRT_CONNINFO"/\"\$CONN\"}; shown=${shown//"$ROOT/"/}
  [ -z "$BASE" ] || shown=${shown//"$BASE"/\$BASE}
  grep -qxF -- "$shown" "$WORK/cmds" 2>/dev/null || echo "$shown" >>"$WORK/cmds"
}

if ! "$PGBIN/psql" -X -Atq "$POOLRT_CONNINFO" -c 'select 1 from pgbench_accounts where aid = 1000000' 2>/dev/null | grep -q 1; then
  log "pgbench -i -s 10"
  timeout -k 5 600 "$PGBIN/pgbench" -i -s 10 -q "$POOLRT_CONNINFO" >/dev/null 2>&1
fi
# pgbench_pipe's script: W/2 selects of pgbench -S in one pipeline (pgbench
# sends one Sync, at \endpipeline), the like-for-like event-driven client.
{
  for i in $(seq $((W / 2))); do echo "\\set aid$i random(1, 100000 * :scale)"; done
  echo '\startpipeline'
  for i in $(seq $((W / 2))); do echo "SELECT abalance FROM pgbench_accounts WHERE aid = :aid$i;"; done
  echo '\endpipeline'
} >"$WORK/pipe.sql"
log "warm-up: pgbench -S 2 s (not recorded)"
"$PGBIN/pgbench" -n -S -c 8 -j 2 -T 2 "$POOLRT_CONNINFO" >/dev/null 2>&1 || true
: >"$WORK/rows"
for r in $(seq "$ROUNDS"); do
  round_order "$r" "${RUNS[@]}"
  log "round $r of $ROUNDS"
  for run in "${ORDER[@]}"; do run_one "$run" "$r"; done
done

# --- report ---------------------------------------------------------------------
# A per-run quantity of a row: FIELD us = CPU µs per transaction, cs =
# context switches per transaction, tps.
VALUE='function val(f) { return f == "us" ? $3 / $4 * 1e6 : f == "cs" ? $6 / $4 : $5 }'
# stats RUN FIELD: "median min max" of FIELD over the rounds
stats() {
  awk -v run="$1" -v f="$2" "$VALUE"' $1 == run { print val(f) }' "$WORK/rows" | sort -g |
    awk '{ v[NR] = $1 } END { if (!NR) { print "- - -"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
# ratio A B FIELD: median (min-max) over the rounds of A's FIELD / B's FIELD in the same round
ratio() {
  awk -v a="$1" -v b="$2" -v f="$3" "$VALUE"' { x = val(f) }
    $1 == a { A[$2] = x } $1 == b { B[$2] = x }
    END { for (r in A) if ((r in B) && B[r] > 0) print A[r] / B[r] }' "$WORK/rows" | sort -g |
    awk '{ v[NR] = $1 } END { if (!NR) { print "- - -"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
fmt3() { awk -v d="$2" '{ if ($1 == "-") print "–"; else printf "%." d "f (%." d "f–%." d "f)\n", $1, $2, $3 }' <<<"$1"; }
verdict() { # label "median min max" op target
  awk -v l="$1" -v op="$3" -v t="$4" '{ if ($1 == "-") { print "- " l ": not run"; exit }
    ok = (op == "<=" ? $1 <= t : $1 >= t)
    printf "- %s: median %.2f (%.2f–%.2f) -- target %s %s %s\n", l, $1, $2, $3, op, t, ok ? "met" : "MISSED" }' <<<"$2"
}
label() {
  case ${1#base:} in
    pgbench) echo "pgbench -M prepared -c $W -j 2 (direct)" ;;
    c_direct) echo "control: $W threads, a libpq connection each, no pool" ;;
    c_prepared) echo "poolrt C driver, max = $W" ;;
    c_prepared_max8) echo "poolrt C driver, max = 8" ;;
    c_batch_max8) echo "poolrt C driver, 2 threads x batches of $((W / 2)), multiplex max = 8" ;;
    pgbench_pipe) echo "pgbench -M prepared -c 2 -j 2, pipelines of $((W / 2)) (one Sync each; direct)" ;;
    lua_prepared) echo "poolrt Lua host (pool:query), max = $W" ;;
    lua_prepared_max8) echo "poolrt Lua host (pool:query), max = 8" ;;
    lua_batch_max8) echo "poolrt Lua host, 2 threads x pool:query_batch of $((W / 2)), multiplex max = 8" ;;
    lua_workers_max8) echo "poolrt Lua host, 2 threads x $((W / 2)) poolrt.workers (pool:query each), multiplex max = 8" ;;
    lua_ffi) echo "poolrt Lua host, raw FFI calls, max = $W" ;;
    lua_ffi_max8) echo "poolrt Lua host, raw FFI calls, max = 8" ;;
  esac
}

report() {
  echo "# Client CPU per transaction"
  echo
  echo "Generated by \`make bench-cpu\` (bench/cpu_cost.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'), poolrt at"
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src include lua bench 2>/dev/null || echo ' (+ uncommitted changes)')$([ -z "$BASE" ] || echo ", against base = $BASE at $(cat "$BASE/.commit" 2>/dev/null || git -C "$BASE" rev-parse --short HEAD 2>/dev/null || echo '?')"),"
  echo "$(nproc) cores shared with the server$([ -n "${CPU_NOTE:-}" ] && echo " ($CPU_NOTE)"). $ROUNDS interleaved rounds of $SECS s"
  echo "at W = $W; client CPU = user + system time of the client process (all threads,"
  echo "start-up included) / its transactions. Median (min–max) over the rounds:"
  echo
  echo "| client | CPU µs per transaction | context switches per transaction | TPS |"
  echo "|---|---:|---:|---:|"
  for run in "${RUNS[@]}"; do
    local pre=""
    [[ $run == base:* ]] && pre="base: "
    echo "| $pre$(label "$run") | $(fmt3 "$(stats "$run" us)" 1) | $(fmt3 "$(stats "$run" cs)" 2) | $(fmt3 "$(stats "$run" tps)" 0) |"
  done
  echo
  echo "Ratios, median (min–max) of the per-round ratios:"
  echo
  verdict "C driver max = $W: CPU / pgbench's" "$(ratio c_prepared pgbench us)" "<=" 1.2
  verdict "Lua host max = $W: CPU / pgbench's" "$(ratio lua_prepared pgbench us)" "<=" 1.2
  verdict "C driver max = 8: CPU / pgbench's" "$(ratio c_prepared_max8 pgbench us)" "<=" 1.2
  verdict "Lua host max = 8: CPU / pgbench's" "$(ratio lua_prepared_max8 pgbench us)" "<=" 1.2
  verdict "C driver, 2 threads x batches of $((W / 2)), multiplex max = 8: CPU / pgbench's" "$(ratio c_batch_max8 pgbench us)" "<=" 1.2
  verdict "C driver, 2 threads x batches of $((W / 2)), multiplex max = 8: TPS / pgbench's" "$(ratio c_batch_max8 pgbench tps)" ">=" 1.0
  echo "- the same against pgbench pipelining $((W / 2)) per client (like for like, no target): CPU $(fmt3 "$(ratio c_batch_max8 pgbench_pipe us)" 2), TPS $(fmt3 "$(ratio c_batch_max8 pgbench_pipe tps)" 2)"
  echo "- control (no pool): CPU / pgbench's: $(fmt3 "$(ratio c_direct pgbench us)" 2); C driver max = $W / control: $(fmt3 "$(ratio c_prepared c_direct us)" 2)"
  verdict "Lua host / C driver, max = 8, TPS" "$(ratio lua_prepared_max8 c_prepared_max8 tps)" ">=" 0.9
  verdict "Lua host / C driver, max = $W, TPS" "$(ratio lua_prepared c_prepared tps)" ">=" 0.9
  verdict "Lua host, 2 threads x pool:query_batch of $((W / 2)), multiplex max = 8: CPU / pgbench's" "$(ratio lua_batch_max8 pgbench us)" "<=" 1.2
  verdict "Lua host / C driver, both 2 threads x batches of $((W / 2)), multiplex max = 8, TPS" "$(ratio lua_batch_max8 c_batch_max8 tps)" ">=" 0.9
  verdict "Lua host, 2 threads x $((W / 2)) poolrt.workers, multiplex max = 8: CPU / pgbench's" "$(ratio lua_workers_max8 pgbench us)" "<=" 1.2
  verdict "Lua host, 2 threads x $((W / 2)) poolrt.workers on max = 8 / C driver max = 8 (a thread per worker), TPS" "$(ratio lua_workers_max8 c_prepared_max8 tps)" ">=" 0.9
  verdict "Lua host, 2 threads x $((W / 2)) poolrt.workers / C driver, 2 threads x batches of $((W / 2)), both multiplex max = 8, TPS" "$(ratio lua_workers_max8 c_batch_max8 tps)" ">=" 0.9
  echo "- Lua host / C driver, CPU per transaction: max = 8 $(fmt3 "$(ratio lua_prepared_max8 c_prepared_max8 us)" 2), max = $W $(fmt3 "$(ratio lua_prepared c_prepared us)" 2)"
  if [ -n "$BASE" ]; then
    echo
    echo "This tree against base, CPU per transaction (new / base, same round):"
    echo
    for s in "${STEPS[@]}"; do
      [[ $s == pgbench* ]] || [ "$s" = c_direct ] && continue
      echo "- $(label "$s"): $(fmt3 "$(ratio "$s" "base:$s" us)" 3); TPS new / base $(fmt3 "$(ratio "$s" "base:$s" tps)" 3)"
    done
  fi
  ir_report
  echo
  echo "Commands (\$CONN: the throwaway server's conninfo, from tools/with-pg.sh):"
  echo
  sed 's/^/    /' "$WORK/cmds"
}

# User-space instructions per query, one worker, no other thread: what the
# client's own code costs, free of the machine's noise (callgrind, two runs
# of N1 and N2 queries, start-up cancelled).  Skipped without valgrind or
# with CPU_CALLGRIND=0.
N1=${CPU_N1:-5000} N2=${CPU_N2:-25000}
per_query_ir() { # tree cmd... (N is appended)
  local tree=$1 n irs=(); shift
  for n in $N1 $N2; do
    irs+=("$(timeout -k 5 900 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" "$n" 2>&1 |
             sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1)")
  done
  [ -n "${irs[0]}" ] && [ -n "${irs[1]}" ] && echo $(( (irs[1] - irs[0]) / (N2 - N1) ))
}
: >"$WORK/ir"
if [ "${CPU_CALLGRIND:-1}" != 0 ] && command -v valgrind >/dev/null 2>&1; then
  trees=("$ROOT")
  [ -z "$BASE" ] || trees+=("$BASE")
  for tree in "${trees[@]}"; do
    log "callgrind: instructions per query ($tree)"
    c=$(per_query_ir "$tree" "$tree/build/bench/driver" -w 1 -m 1 -q prepared -n || true)
    l=$(per_query_ir "$tree" "$tree/build/poolrt" "$ROOT/bench/query_loop.lua" || true)
    echo "$([ "$tree" = "$ROOT" ] && echo this || echo base) ${c:--} ${l:--}" >>"$WORK/ir"
  done
fi

ir_report() {
  [ -s "$WORK/ir" ] || return 0
  echo
  echo "User-space instructions per query, one worker (callgrind; (Ir(N2) - Ir(N1)) / (N2 - N1),"
  echo "N = $N1, $N2; libpq, libc and LuaJIT included, the kernel not):"
  echo
  echo "| tree | C driver, \`driver -w 1 -m 1 -q prepared -n N\` | Lua host, \`poolrt bench/query_loop.lua N\` |"
  echo "|---|---:|---:|"
  awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$WORK/ir"
}

report >"$WORK/report.md"
if [ "$OUT" = - ]; then
  cat "$WORK/report.md"
else
  if [ -f "$OUT" ] && grep -q '^<!-- kept -->' "$OUT"; then
    { echo; sed -n '/^<!-- kept -->/,$p' "$OUT"; } >>"$WORK/report.md"
  fi
  cp "$WORK/report.md" "$OUT"
  sed -n '/^Ratios/,/^Commands/p' "$OUT" | sed '$d'
fi
log "done: $OUT"
