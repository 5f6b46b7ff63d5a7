#!/usr/bin/env bash
# bench/acquire_instr.sh -- instructions per uncontended acquire + release
# (driver -q noop -w 1 -m 4), counted by callgrind: deterministic, so it
# compares builds on a loaded shared machine where wall-clock ratios swing
# by 2x.  Per cycle = (Ir of 300k cycles - Ir of 100k cycles) / 200k, which
# cancels start-up (connect, Lua).  Usage, through tools/with-pg.sh:
#   tools/with-pg.sh bench/acquire_instr.sh [DRIVER ...]   (default build/bench/driver)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${POOLRT_CONNINFO:-}" ] || { echo "acquire_instr.sh: POOLRT_CONNINFO is not set (use tools/with-pg.sh)" >&2; exit 2; }
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
         sed -n 's/.*Collected : \([0-9]*\).*/\1/p'; }
for d in "${@:-build/bench/driver}"; do
  lo=$(ir "$d" -q noop -w 1 -m 4 -n 100000 -P policies/mru.lua)
  hi=$(ir "$d" -q noop -w 1 -m 4 -n 300000 -P policies/mru.lua)
  echo "$d: $(( (hi - lo) / 200000 )) instructions per acquire + release"
done
