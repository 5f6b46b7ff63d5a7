#!/usr/bin/env bash
# bench/run.sh -- `make bench`: poolrt side by side with pgbench direct,
# PgBouncer, Go database/sql + lib/pq and pgxpool, on one throwaway
# PostgreSQL in one run, then writes bench/RESULTS.md, bench/chart.png and
# the raw rows under bench/raw/.
#
# Everything listens on 127.0.0.1 only; every server and helper started
# here is stopped by the EXIT trap, also on failure or Ctrl-C; every load
# is bounded in time (pgbench -T, driver -d, and `timeout` around each).
#
# Knobs (environment): BENCH_SECS (seconds per run, default 5),
# BENCH_REPS (interleaved rounds, default 2: `make bench` stays within 20 minutes),
# BENCH_WORKERS (default "1 8 32 128"), BENCH_SKIP (space-separated parts
# to leave out: matrix conns250 micro callgrind replica spike go).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/ratios.sh
BUILD=${BUILD:-build}
SECS=${BENCH_SECS:-5}
REPS=${BENCH_REPS:-2}
WORKERS=${BENCH_WORKERS:-"1 8 32 128"}
SKIP=" ${BENCH_SKIP:-} "
MICRO_SECS=2
T0=$(date +%s)

log() { printf '[bench %4ds] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# --- set-up: packages, build ------------------------------------------------
log "dependencies (tools/deps.sh core bench)"
tools/deps.sh core bench
if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind >/dev/null ||
      log "valgrind could not be installed: callgrind counts will be left out"
  else
    log "valgrind missing (sudo apt-get install -y valgrind): callgrind counts will be left out"
  fi
fi

log "build (make all bench-bin)"
make -s all bench-bin BUILD="$BUILD" >/dev/null
DRIVER=$BUILD/bench/driver
RELAY=$BUILD/bench/relay
HOST=$BUILD/poolrt

GO_OK=0
GOBENCH=$BUILD/bench/gobench
if ! skipped go; then
  log "build the Go clients offline (GOPATH=/usr/share/gocode, GO111MODULE=off)"
  if GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE="$ROOT/$BUILD/bench/gocache" \
       timeout 600 go build -o "$GOBENCH" bench/go/gobench.go 2>"$BUILD/bench/go-build.log"; then
    GO_OK=1
  else
    log "Go clients did not build offline; left out (see $BUILD/bench/go-build.log)"
  fi
fi

# --- throwaway servers and helpers, torn down by the trap ---------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolrt-bench.XXXXXX")
chmod 755 "$WORK"   # the server user must reach the pg dirs inside
HELPERS=()
cleanup() {
  local p
  for p in "${HELPERS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${HELPERS[@]}"; do wait "$p" 2>/dev/null || true; done
  tools/pg.sh stop "$WORK/pg2" >/dev/null 2>&1 || true
  tools/pg.sh stop "$WORK/pg1" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

log "start PostgreSQL (tools/pg.sh)"
tools/pg.sh start "$WORK/pg1"
# shellcheck source=/dev/null
. "$WORK/pg1/env"
PGBIN=$POOLRT_PGBIN
PORT1=$POOLRT_PGPORT
DATA1=$POOLRT_PGDATA
CONN1="host=127.0.0.1 port=$PORT1 user=postgres dbname=postgres"
export POOLRT_CONNINFO=$CONN1

# Restart with settings for this run (command-line -o replaces pg.sh's,
# the rest comes from the data directory's postgresql.poolrt.conf).
PG_OPTS_BASE="-c shared_buffers=512MB -c max_connections=300"
pg_restart() {
  (cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$DATA1" -w -t 60 -m fast restart -o "$1" >/dev/null)
}
pg_restart "$PG_OPTS_BASE"

psql1() { "$PGBIN/psql" -X -Atq "$CONN1" -c "$1"; }

log "pgbench -i -s 10"
"$PGBIN/pgbench" -i -s 10 -q "$CONN1" >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; exit 1; }

# --- bookkeeping ---------------------------------------------------------------
RES=$WORK/results.tsv
CMDS=$WORK/commands.txt
: >"$RES"
: >"$CMDS"
# record SECTION NAME WORKERS MAX REP TPS P50_US P99_US ERRORS EXTRA
record() { local IFS=$'\t'; echo "$*" >>"$RES"; }
# remember one command line per configuration, for RESULTS.md
note_cmd() { grep -qxF -- "$1	$2" "$CMDS" 2>/dev/null || printf '%s\t%s\n' "$1" "$2" >>"$CMDS"; }
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | head -1; }
first_error() { sed -n 's/.*first_error=//p' <<<"$1" | head -1 | tr '\t' ' '; }
# Logged commands read better with names for the run's conninfo and temp dir.
show() {
  local s="$*"
  s=${s//"$CONN1"/\$CONN}; s=${s//"$WORK"/\$TMP}; s=${s//"$ROOT\/"/}
  [ -n "${PORT2:-}" ] && s=${s//"port=$PORT1,$PORT2"/port=\$PORT1,\$PORT2}
  echo "$s"
}

# runcmd LIMIT CMD...: runs CMD bounded by LIMIT seconds; sets OUT (stdout
# and stderr) and CPU (user + system seconds of CMD and its threads).
runcmd() {
  local lim=$1 TIMEFORMAT='%3U %3S'; shift
  { time timeout -k 5 "$lim" "$@" >"$WORK/out" 2>&1; } 2>"$WORK/cpu" || true
  OUT=$(cat "$WORK/out")
  CPU=$(awk 'NF == 2 {print $1 + $2}' "$WORK/cpu" | tail -1)
}

# pgbench; latency percentiles from a 10% sample of the per-transaction log.
run_pgbench() { # section name workers mode conninfo rep maxlabel
  local sec=$1 name=$2 w=$3 mode=$4 conn=$5 rep=$6 maxl=$7
  local j=$(( w < 2 ? 1 : 2 ))
  local cmd=("$PGBIN/pgbench" -n -S -M "$mode" -c "$w" -j "$j" -T "$SECS" -l --sampling-rate=0.1
             --log-prefix="$WORK/pgblog" "$conn")
  rm -f "$WORK"/pgblog.*
  runcmd $((SECS + 120)) "${cmd[@]}"
  local out=$OUT
  note_cmd "$name" "$(show "${cmd[@]}")"
  local tps p50=0 p99=0 err=0 extra=""
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -1)
  if [ -z "$tps" ]; then
    tps=0 err=1 extra=$(grep -m1 -i 'error\|fatal' <<<"$out" | tr '\t' ' ' || true)
  else
    err=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    if ls "$WORK"/pgblog.* >/dev/null 2>&1; then
      read -r p50 p99 < <(cat "$WORK"/pgblog.* | awk '{print $3}' | sort -n |
        awk '{a[NR]=$1} END {if (NR) print a[int(0.5*(NR-1))+1], a[int(0.99*(NR-1))+1]; else print 0, 0}')
    fi
  fi
  record "$sec" "$name" "$w" "$maxl" "$rep" "$tps" "$p50" "$p99" "${err:-0}" "cpu_s=$CPU $extra"
  log "  $name w=$w rep=$rep: tps=$tps p99=${p99}us errors=${err:-0}"
}

# Runs a client that prints key=value results (bench/driver.c,
# bench/select.lua) and records tps, p50, p99, errors and the listed keys.
run_kv() { # section name workers max rep "extra keys" command...
  local sec=$1 name=$2 w=$3 m=$4 rep=$5 keys=$6; shift 6
  runcmd $((SECS + 120)) "$@"
  local out=$OUT extra="" k tps
  note_cmd "$name" "$(show "$@")"
  for k in $keys; do extra+=" $k=$(kv "$k" "$out")"; done
  tps=$(kv tps "$out")
  record "$sec" "$name" "$w" "$m" "$rep" "${tps:-0}" "$(kv p50_us "$out")" "$(kv p99_us "$out")" \
    "$(kv errors "$out")" "cpu_s=$CPU$extra first_error=$(first_error "$out")"
  [ -n "$tps" ] || log "  $name: no result: $(tail -2 <<<"$out")"
  log "  $name w=$w max=$m rep=$rep: tps=${tps:-0} p99=$(kv p99_us "$out")us errors=$(kv errors "$out")"
}

run_driver() { # section name workers max rep [driver args...]
  local sec=$1 name=$2 w=$3 m=$4 rep=$5; shift 5
  run_kv "$sec" "$name" "$w" "$m" "$rep" "acq_p50_us acq_p99_us acq_max_us conns created" \
    "$DRIVER" -w "$w" -m "$m" "$@"
}

run_lua() { # section name workers max rep mode
  run_kv "$1" "$2" "$3" "$4" "$5" "late_ms" "$HOST" bench/select.lua "$3" "$4" "$SECS" "$6"
}

run_go() { # section name workers max rep driver [args...]
  local sec=$1 name=$2 w=$3 m=$4 rep=$5 drv=$6; shift 6
  [ "$GO_OK" = 1 ] || return 0
  local cmd=("$GOBENCH" -driver "$drv" -c "$CONN1" -w "$w" -m "$m" "$@")
  runcmd $((SECS + 120)) "${cmd[@]}"
  local out=$OUT
  note_cmd "$name" "$(show "${cmd[@]}")"
  local tps
  tps=$(kv tps "$out")
  record "$sec" "$name" "$w" "$m" "$rep" "${tps:-0}" "$(kv p50_us "$out")" "$(kv p99_us "$out")" \
    "$(kv errors "$out")" "cpu_s=$CPU first_error=$(first_error "$out")"
  [ -n "$tps" ] || log "  $name: no result: $(tail -2 <<<"$out")"
  log "  $name w=$w max=$m rep=$rep: tps=${tps:-0}"
}

# --- PgBouncer 1.18: transaction pooling, pool 8, loopback, trust --------------
start_pgbouncer() {
  local dir=$WORK/pgbouncer port
  mkdir -p "$dir"
  port=$(( 20000 + RANDOM % 40000 ))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PORT1 dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 400
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  echo '"postgres" ""' >"$dir/userlist.txt"
  local user=()
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; user=(-u postgres); fi
  pgbouncer "${user[@]}" "$dir/pgbouncer.ini" >/dev/null 2>&1 &
  HELPERS+=($!)
  BOUNCER_PID=$!
  local i
  for i in $(seq 50); do
    "$PGBIN/psql" -X -Atq "host=127.0.0.1 port=$port user=postgres dbname=postgres" -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  BOUNCER_CONN="host=127.0.0.1 port=$port user=postgres dbname=postgres"
  cp "$dir/pgbouncer.ini" "$WORK/pgbouncer.ini.used"
}

# --- 1. the side-by-side matrix --------------------------------------------------
# One configuration of the matrix at W workers, round REP.
matrix_step() { # name w rep
  local name=$1 w=$2 rep=$3
  case $name in
    pgbench_extended)   run_pgbench matrix "$name" "$w" extended "$CONN1" "$rep" "$w" ;;
    pgbench_prepared)   run_pgbench matrix "$name" "$w" prepared "$CONN1" "$rep" "$w" ;;
    c_direct)           run_driver matrix "$name" "$w" "$w" "$rep" -q direct -d "$SECS" ;;
    c_prepared)         run_driver matrix "$name" "$w" "$w" "$rep" -q prepared -d "$SECS" ;;
    c_unprepared)       run_driver matrix "$name" "$w" "$w" "$rep" -q unprepared -d "$SECS" ;;
    c_prepared_max8)    run_driver matrix "$name" "$w" 8 "$rep" -q prepared -d "$SECS" ;;
    c_unprepared_max8)  run_driver matrix "$name" "$w" 8 "$rep" -q unprepared -d "$SECS" ;;
    c_multiplex_max8)   run_driver matrix "$name" "$w" 8 "$rep" -x -q prepared -d "$SECS" ;;
    lua_prepared)       run_lua matrix "$name" "$w" "$w" "$rep" prepared ;;
    lua_ffi)            run_lua matrix "$name" "$w" "$w" "$rep" ffi ;;
    lua_prepared_max8)  run_lua matrix "$name" "$w" 8 "$rep" prepared ;;
    lua_multiplex_max8) run_lua matrix "$name" "$w" 8 "$rep" multiplex ;;
    lua_workers_max8)   run_lua matrix "$name" "$w" 8 "$rep" workers ;;
    pgbouncer_extended) run_pgbench matrix "$name" "$w" extended "$BOUNCER_CONN" "$rep" 8 ;;
    go_pq)              run_go matrix "$name" "$w" "$w" "$rep" pq -d "$SECS" ;;
    go_pgx)             run_go matrix "$name" "$w" "$w" "$rep" pgx -d "$SECS" ;;
    go_pq_max8)         run_go matrix "$name" "$w" 8 "$rep" pq -d "$SECS" ;;
    go_pgx_max8)        run_go matrix "$name" "$w" 8 "$rep" pgx -d "$SECS" ;;
    *) echo "run.sh: unknown matrix step $name" >&2; exit 1 ;;
  esac
}

if ! skipped matrix; then
  start_pgbouncer
  log "warm-up: pgbench -S 3 s (not recorded)"
  "$PGBIN/pgbench" -n -S -c 8 -j 2 -T 3 "$CONN1" >/dev/null 2>&1 || true
  for w in $WORKERS; do
    steps=(pgbench_extended pgbench_prepared c_direct c_prepared c_unprepared)
    if [ "$w" -gt 8 ]; then steps+=(c_prepared_max8 c_unprepared_max8 c_multiplex_max8); fi
    steps+=(lua_prepared lua_ffi)
    if [ "$w" -gt 8 ]; then steps+=(lua_prepared_max8 lua_multiplex_max8 lua_workers_max8); fi
    steps+=(pgbouncer_extended go_pq go_pgx)
    if [ "$w" -gt 8 ]; then steps+=(go_pq_max8 go_pgx_max8); fi
    for rep in $(seq "$REPS"); do
      round_order "$rep" "${steps[@]}" # A B C ... then ... C B A
      log "matrix: $w workers, round $rep of $REPS"
      for name in "${ORDER[@]}"; do matrix_step "$name" "$w" "$rep"; done
    done
  done
  kill "$BOUNCER_PID" 2>/dev/null || true
  wait "$BOUNCER_PID" 2>/dev/null || true
fi

# --- 2. 250 workers against max_connections=100 ----------------------------------
if ! skipped conns250; then
  log "250 workers vs max_connections=100"
  pg_restart "-c shared_buffers=512MB -c max_connections=100"
  record conns250 setting 0 0 0 0 0 0 0 "max_connections=$(psql1 'show max_connections')"
  run_pgbench conns250 pgbench_direct_250 250 prepared "$CONN1" 1 250
  run_driver conns250 c_prepared_250_max20 250 20 1 -q prepared -d "$SECS"
  run_lua conns250 lua_prepared_250_max20 250 20 1 prepared
  pg_restart "$PG_OPTS_BASE"
fi

# --- 3. pool-only microbenchmarks: acquire + release, 4 open connections ---------
POLICIES="builtin_mru:policies/mru.lua lua_pick:bench/pick_lua.lua builtin_lru:policies/lru.lua"
if ! skipped micro; then
  for rep in $(seq "$REPS"); do
    log "micro: acquire+release on 4 connections, round $rep"
    for t in 1 2 8 32; do
      for pp in $POLICIES; do
        SECS=$MICRO_SECS run_driver micro "${pp%%:*}" "$t" 4 "$rep" -q noop -d "$MICRO_SECS" -P "${pp#*:}"
      done
      SECS=$MICRO_SECS run_go micro go_sql_conn "$t" 4 "$rep" pq -q noop -d "$MICRO_SECS"
      SECS=$MICRO_SECS run_go micro go_pgxpool "$t" 4 "$rep" pgx -q noop -d "$MICRO_SECS"
    done
  done
fi

# Instructions per cycle: two single-thread runs of N1 and N2 cycles under
# callgrind; (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown.
if ! skipped callgrind && command -v valgrind >/dev/null 2>&1; then
  N1=20000 N2=220000
  for pp in $POLICIES; do
    log "callgrind: ${pp%%:*}"
    irs=()
    for n in $N1 $N2; do
      out=$(timeout -k 5 300 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
              "$DRIVER" -q noop -w 1 -m 4 -n "$n" -P "${pp#*:}" 2>&1 || true)
      irs+=("$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out" | tail -1)")
    done
    note_cmd "callgrind_${pp%%:*}" "valgrind --tool=callgrind $DRIVER -q noop -w 1 -m 4 -n {$N1,$N2} -P ${pp#*:}"
    if [ -n "${irs[0]}" ] && [ -n "${irs[1]}" ]; then
      per=$(( (irs[1] - irs[0]) / (N2 - N1) ))
      record callgrind "${pp%%:*}" 1 4 1 0 0 0 0 "ir_per_cycle=$per ir_n1=${irs[0]} ir_n2=${irs[1]}"
      log "  ${pp%%:*}: $per instructions per acquire+release"
    fi
  done
fi

# --- 4. replica balance: one pool over two servers ----------------------------
xacts() { "$PGBIN/psql" -X -Atq "host=127.0.0.1 port=$1 user=postgres dbname=postgres" \
            -c "select xact_commit from pg_stat_database where datname = 'postgres'"; }
start_relay() { # delay_ms backend_port... -> RELAY_PORT
  local out=$WORK/relay.$RANDOM
  "$RELAY" -D "$1" -L 900 "${@:2}" >"$out" 2>&1 &
  HELPERS+=($!)
  RELAY_PID=$!
  local i
  for i in $(seq 50); do grep -q '^port=' "$out" 2>/dev/null && break; sleep 0.05; done
  RELAY_PORT=$(sed -n 's/^port=//p' "$out")
}
if ! skipped replica; then
  log "replica balance: second server, pgbench -i, one pool over both"
  tools/pg.sh start "$WORK/pg2"
  PORT2=$(. "$WORK/pg2/env"; echo "$POOLRT_PGPORT")
  "$PGBIN/pgbench" -i -s 10 -q "host=127.0.0.1 port=$PORT2 user=postgres dbname=postgres" >/dev/null 2>&1
  # poolrt's multi-host conninfo: each new connection goes to the endpoint
  # with the fewest of the pool's connections.
  RCONN="host=127.0.0.1,127.0.0.1 port=$PORT1,$PORT2 user=postgres dbname=postgres"
  for w in 1 3; do
    for pp in mru:policies/mru.lua lru:policies/lru.lua random:policies/random.lua; do
      a1=$(xacts "$PORT1") a2=$(xacts "$PORT2")
      run_driver replica "replica_${pp%%:*}" "$w" 8 1 -c "$RCONN" -W 8 -t 1000 -q prepared -d "$SECS" -P "${pp#*:}"
      sleep 1.2   # backends flush their statistics when they exit
      b1=$(xacts "$PORT1") b2=$(xacts "$PORT2")
      record replica_servers "replica_${pp%%:*}" "$w" 8 1 0 0 0 0 "server1=$((b1 - a1)) server2=$((b2 - a2))"
      log "  ${pp%%:*} w=$w: server1=$((b1 - a1)) server2=$((b2 - a2))"
    done
  done
  tools/pg.sh stop "$WORK/pg2"
fi

# --- 5. spike: 50 workers at once, cold pool, 150 ms connects, 2 ms queries ------
if ! skipped spike; then
  log "spike: relay with 150 ms connect delay"
  start_relay 150 "$PORT1"
  SCONN="host=127.0.0.1 port=$RELAY_PORT user=postgres dbname=postgres"
  for pp in default: clamp:policies/clamp.lua; do
    pol=()
    [ -n "${pp#*:}" ] && pol=(-P "${pp#*:}")
    run_driver spike "spike_${pp%%:*}" 50 10 1 -c "$SCONN" -C -X 50 -S "select pg_sleep(0.002)" -d 2 "${pol[@]}"
  done
  kill "$RELAY_PID" 2>/dev/null || true
  wait "$RELAY_PID" 2>/dev/null || true
fi

# --- versions, machine, report ---------------------------------------------------
log "report"
ver() { "$@" 2>&1 | head -1 || true; }
dpkgv() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
{
  echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "git	$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src include lua 2>/dev/null || echo ' (+ uncommitted changes in src/include/lua)')"
  echo "poolrt	$(ver "$HOST" --version)"
  echo "postgresql	$(ver "$PGBIN/postgres" --version)"
  echo "pgbench	$(ver "$PGBIN/pgbench" --version)"
  echo "libpq	$(pkg-config --modversion libpq 2>/dev/null || echo '?')"
  echo "pgbouncer	$(ver pgbouncer --version)"
  echo "luajit	$(ver luajit -v) (package luajit2 $(dpkgv luajit2))"
  echo "go	$(ver go version)"
  echo "lib/pq	golang-github-lib-pq-dev $(dpkgv golang-github-lib-pq-dev)"
  echo "pgx	golang-github-jackc-pgx-v4-dev $(dpkgv golang-github-jackc-pgx-v4-dev) (puddle $(dpkgv golang-github-jackc-puddle-dev))"
  echo "gcc	$(ver gcc --version)"
  echo "valgrind	$(ver valgrind --version)"
  echo "gnuplot	$(ver gnuplot --version)"
  echo "os	Debian $(cat /etc/debian_version 2>/dev/null), kernel $(uname -r)"
  echo "cpu	$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  echo "nproc	$(nproc)"
  echo "ram	$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "server	PostgreSQL on 127.0.0.1, fsync=off, synchronous_commit=off, $PG_OPTS_BASE (250-worker case: max_connections=100)"
  echo "secs	$SECS"
  echo "reps	$REPS"
  echo "workers	$WORKERS"
  echo "go_ok	$GO_OK"
  echo "elapsed	$(( $(date +%s) - T0 ))"
} >"$WORK/meta.tsv"

# The raw rows stay next to the report, so it can be regenerated without a
# new run:  luajit bench/report.lua bench/raw/{meta.tsv,results.tsv,commands.txt} bench/RESULTS.md DIR
mkdir -p "$WORK/chart" bench/raw
cp "$WORK/meta.tsv" bench/raw/meta.tsv
cp "$RES" bench/raw/results.tsv
cp "$CMDS" bench/raw/commands.txt
luajit bench/report.lua bench/raw/meta.tsv bench/raw/results.tsv bench/raw/commands.txt bench/RESULTS.md "$WORK/chart"
gnuplot -e "dir='$WORK/chart'; out='bench/chart.png'" bench/chart.gp
log "done in $(( $(date +%s) - T0 )) s: bench/RESULTS.md, bench/chart.png, bench/raw/"
