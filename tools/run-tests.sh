#!/usr/bin/env bash
# Test driver for `make test` (normally run inside tools/with-pg.sh).
# Runs each suite, streams its TAP output, and tallies the results.
#   CTESTS  glob of cmocka test binaries (default: build/test_*)
#   BUSTED  busted command              (default: luajit /usr/bin/busted)
#   SPECS   busted spec dirs/files      (default: spec; empty: no specs)
#   VALGRIND command prefix for the C tests (e.g. valgrind ...; default none)
# Last line printed is always "N passed, N failed"; exit 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."   # lpath and default globs are relative to the repo root

CTESTS=${CTESTS:-build/test_*}
BUSTED=${BUSTED:-luajit /usr/bin/busted}
SPECS=${SPECS-spec}
VALGRIND=${VALGRIND:-}

passed=0 failed=0 skipped=0
tmp=$(mktemp -d)
# Specs write their temporary files (policies, scripts, outputs) here.
export POOLRT_SPEC_TMP="$tmp/spec"
mkdir -p "$POOLRT_SPEC_TMP"
tpid=
trap 'rm -rf "$tmp"' EXIT
# timeout puts the test in its own process group (so a hung test's children
# are killed with it), which also hides it from the terminal's Ctrl-C and
# from signals aimed at us: forward them. timeout relays TERM to the group.
trap '[ -z "$tpid" ] || kill -TERM "$tpid" 2>/dev/null; exit 130' INT
trap '[ -z "$tpid" ] || kill -TERM "$tpid" 2>/dev/null; exit 143' TERM

# run_suite NAME SECONDS CMD...
run_suite() {
  local name=$1 secs=$2 out=$tmp/out rc=0 p=0 f=0 s=0 line
  shift 2
  echo "# ---- $name"
  rm -f "$tmp/fifo" && mkfifo "$tmp/fifo"
  tee "$out" < "$tmp/fifo" &
  local teepid=$!
  timeout -k 10 "$secs" "$@" > "$tmp/fifo" &
  tpid=$!
  wait "$tpid" || rc=$?
  tpid=
  wait "$teepid" || true

  # TAP directives: "# SKIP"/"# TODO" results are neither passes nor failures.
  # This matters for cmocka 1.1.5, which prints skipped tests as
  # "not ok N # SKIP name", and busted, which prints "ok N - # SKIP name".
  while IFS= read -r line; do
    case "$line" in
      "ok "*|"not ok "*|ok|"not ok") ;;
      *) continue ;;
    esac
    shopt -s nocasematch
    if [[ $line =~ \#[[:space:]]*(skip|todo)([^[:alnum:]]|$) ]]; then s=$((s + 1))
    elif [[ $line == ok* ]]; then p=$((p + 1))
    else f=$((f + 1))
    fi
    shopt -u nocasematch
  done < "$out"

  # A crash, timeout or load error can leave no "not ok" behind: still a failure.
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    local why="exit status $rc"
    case $rc in
      124|137) why="timed out after ${secs}s" ;;   # 137: timeout -k had to SIGKILL
      12[5-7]) why="could not be run (status $rc)" ;;
      1[3-9]?|2??) why="killed by signal $((rc - 128))" ;;
    esac
    echo "not ok - $name: $why without reporting a failing test"
    f=1
  fi
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# cmocka only emits TAP when asked via the environment.
export CMOCKA_MESSAGE_OUTPUT=TAP
for t in $CTESTS; do   # unquoted on purpose: CTESTS is a glob
  [ -f "$t" ] && [ -x "$t" ] || continue
  # shellcheck disable=SC2086
  run_suite "$t" 300 $VALGRIND "$t"
done

# BUSTED and SPECS are word-split on purpose (command + args, list of dirs).
# shellcheck disable=SC2086
[ -z "$SPECS" ] || run_suite "busted $SPECS" 600 $BUSTED \
  --lpath='./lua/?.lua;./lua/?/init.lua;./policies/?.lua' -o TAP $SPECS

[ "$skipped" -eq 0 ] || echo "# $skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
