#!/usr/bin/env bash
# A throwaway primary + streaming standby on loopback, for specs of
# failover and target_session_attrs (issue 21).
#   tools/pg-pair.sh start DIR           primary in DIR/primary (tools/pg.sh),
#                                        standby in DIR/standby (pg_basebackup
#                                        -X stream -R), waits until it streams,
#                                        writes shell exports to DIR/env
#   tools/pg-pair.sh wait-streaming DIR  waits until the current standby streams
#                                        from the current primary
#   tools/pg-pair.sh switchover DIR      clean switchover: stop the primary
#                                        (-m fast), promote the standby, restart
#                                        the old primary as a standby of the new
#                                        one; rewrites DIR/env with the new roles
#   tools/pg-pair.sh stop DIR            stop both servers and remove DIR
# DIR/env defines POOLRT_PRIMARY_PORT, POOLRT_STANDBY_PORT,
# POOLRT_PRIMARY_PGDATA, POOLRT_STANDBY_PGDATA, POOLRT_PRIMARY_NODE and
# POOLRT_STANDBY_NODE (the node directory names: "primary" and "standby",
# swapped after a switchover), POOLRT_PRIMARY_CONNINFO,
# POOLRT_STANDBY_CONNINFO, POOLRT_PAIR_CONNINFO (libpq's multi-host form,
# primary first), POOLRT_PGBIN and POOLRT_PGUSER_RUN.
# Every wait is bounded by POOLRT_PAIR_TIMEOUT seconds (default 30).
# With POOLRT_PAIR_WATCH_PID set, `start` also leaves a guard that runs
# `stop DIR` once that process is gone (a spec runner killed before its
# teardown); `stop` ends the guard.
# As root, the servers and pg_basebackup run as user postgres (as in pg.sh).
set -euo pipefail

usage() { echo "usage: $0 {start|stop|switchover|wait-streaming} DIR | {halt|resume} DIR {primary|standby}" >&2; exit 2; }
[ "$#" -eq 2 ] || { [ "$#" -eq 3 ] && { [ "$1" = halt ] || [ "$1" = resume ]; }; } || usage
cmd=$1 dir=$2
here=$(cd "$(dirname "$0")" && pwd)
timeout=${POOLRT_PAIR_TIMEOUT:-30}

# Same server discovery and user switch as tools/pg.sh.
# shellcheck source=tools/pg-env.sh
. "$here/pg-env.sh"

die() { echo "pg-pair.sh: $*" >&2; exit 1; }

# q PORT SQL: the first value of SQL's result on the node at PORT ("" if
# the node does not answer).
q() {
  PGCONNECT_TIMEOUT=3 "$pgbin/psql" -X -Atq -h 127.0.0.1 -p "$1" -U postgres -d postgres \
    -c "$2" 2>/dev/null | head -n 1 || true
}

node_port() { sed -n "s/^port = \([0-9]*\)$/\1/p" "$dir/$1/data/postgresql.poolrt.conf"; }

pg_ctl_node() {   # pg_ctl_node NODE ARGS...
  local node=$1; shift
  (cd "$dir" && as_pg "$pgbin/pg_ctl" -w -t "$timeout" -D "$dir/$node/data" "$@")
}

# write_env PRIMARY_NODE STANDBY_NODE
write_env() {
  local pn=$1 sn=$2 pp sp
  pp=$(node_port "$pn") sp=$(node_port "$sn")
  cat > "$dir/env.tmp" <<ENV
export POOLRT_PRIMARY_NODE='$pn'
export POOLRT_STANDBY_NODE='$sn'
export POOLRT_PRIMARY_PORT='$pp'
export POOLRT_STANDBY_PORT='$sp'
export POOLRT_PRIMARY_PGDATA='$dir/$pn/data'
export POOLRT_STANDBY_PGDATA='$dir/$sn/data'
export POOLRT_PRIMARY_CONNINFO='host=127.0.0.1 port=$pp dbname=postgres user=postgres'
export POOLRT_STANDBY_CONNINFO='host=127.0.0.1 port=$sp dbname=postgres user=postgres'
export POOLRT_PAIR_CONNINFO='host=127.0.0.1,127.0.0.1 port=$pp,$sp dbname=postgres user=postgres'
export POOLRT_PGBIN='$pgbin'
export POOLRT_PGUSER_RUN='$runas'
ENV
  mv "$dir/env.tmp" "$dir/env"
}

load_env() {
  [ -f "$dir/env" ] || die "$dir/env not found (not started by pg-pair.sh start?)"
  # shellcheck source=/dev/null
  . "$dir/env"
}

# follow NODE PRIMARY_PORT: make NODE (stopped) a standby streaming from
# the server at PRIMARY_PORT, with NODE as its application_name (so the
# primary's pg_stat_replication names it).  primary_conninfo goes to
# postgresql.auto.conf, where pg_basebackup -R writes it; the last line wins,
# but we drop the old ones to keep the file readable.
follow() {
  local data=$dir/$1/data
  sed -i '/^primary_conninfo/d' "$data/postgresql.auto.conf"
  echo "primary_conninfo = 'host=127.0.0.1 port=$2 user=postgres application_name=$1'" \
    >> "$data/postgresql.auto.conf"
  touch "$data/standby.signal"
  chown "$runas" "$data/postgresql.auto.conf" "$data/standby.signal" 2>/dev/null || true
}

# wait_streaming: polls (bounded) until the standby is in recovery with its
# WAL receiver streaming, and the primary is not in recovery and lists the
# standby in pg_stat_replication as streaming.
wait_streaming() {
  load_env
  local deadline=$((SECONDS + timeout)) pr sr recv repl
  while :; do
    pr=$(q "$POOLRT_PRIMARY_PORT" "select pg_is_in_recovery()")
    sr=$(q "$POOLRT_STANDBY_PORT" "select pg_is_in_recovery()")
    recv=$(q "$POOLRT_STANDBY_PORT" "select status from pg_stat_wal_receiver")
    repl=$(q "$POOLRT_PRIMARY_PORT" "select count(*) from pg_stat_replication
            where application_name = '$POOLRT_STANDBY_NODE' and state = 'streaming'")
    if [ "$pr" = f ] && [ "$sr" = t ] && [ "$recv" = streaming ] && [ "${repl:-0}" -ge 1 ]; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "pg-pair.sh: standby $POOLRT_STANDBY_NODE (port $POOLRT_STANDBY_PORT) not streaming from" \
           "$POOLRT_PRIMARY_NODE (port $POOLRT_PRIMARY_PORT) after ${timeout}s:" \
           "primary in recovery '$pr', standby in recovery '$sr', wal receiver '$recv'," \
           "streaming senders '$repl'; tail of $dir/$POOLRT_STANDBY_NODE/server.log:" >&2
      tail -n 20 "$dir/$POOLRT_STANDBY_NODE/server.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

start_guard() {
  local pid=${POOLRT_PAIR_WATCH_PID:-}
  [ -n "$pid" ] || return 0
  # setsid: a runner's timeout kills its process group; the guard must outlive it.
  setsid -f bash -c '
    echo $$ > "$2/guard.pid"
    while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
    [ -d "$2" ] && exec "$3" stop "$2"
  ' guard "$pid" "$dir" "$here/pg-pair.sh" </dev/null >/dev/null 2>&1
}

start() {
  [ ! -e "$dir/env" ] || die "$dir already holds a pair (stop it first)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # The server user must traverse DIR (mktemp -d makes it 0700).
  [ "$runas" != postgres ] || chmod 755 "$dir"
  # On failure, leave nothing running (the logs are printed first).
  trap 'on_start_failure' EXIT

  "$here/pg.sh" start "$dir/primary"
  local pport
  pport=$(node_port primary)
  start_guard

  mkdir -p "$dir/standby"
  [ "$runas" != postgres ] || chown postgres: "$dir/standby"
  # -c fast: don't wait for a spread checkpoint; -N: fsync is off anyway.
  local out
  if ! out=$(cd "$dir" && as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres \
               -X stream -R -c fast -N -D "$dir/standby/data" 2>&1); then
    printf '%s\n' "$out" >&2
    die "pg_basebackup failed"
  fi
  follow standby "$pport"

  # pg_basebackup copied the primary's postgresql.poolrt.conf: the standby
  # needs its own port and socket directory.
  local conf=$dir/standby/data/postgresql.poolrt.conf log=$dir/standby/server.log sport _try
  for _try in 1 2 3 4 5; do
    sport=$("$here/free-port.sh")
    sed -i -e "s/^port = .*/port = $sport/" \
           -e "s|^unix_socket_directories = .*|unix_socket_directories = '$dir/standby'|" "$conf"
    rm -f "$log"
    if pg_ctl_node standby -l "$log" start >/dev/null; then
      write_env primary standby
      wait_streaming
      trap - EXIT
      return 0
    fi
    grep -qi 'could not bind\|address already in use' "$log" || break
    echo "pg-pair.sh: port $sport taken, retrying" >&2
  done
  echo "pg-pair.sh: standby failed to start; tail of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

on_start_failure() {
  local rc=$?
  trap - EXIT
  [ "$rc" -ne 0 ] || return 0
  echo "pg-pair.sh: start failed; stopping what was started in $dir" >&2
  stop >/dev/null 2>&1 || true
  exit "$rc"
}

switchover() {
  dir=$(cd "$dir" && pwd)
  wait_streaming   # loads the env; a standby that lags would lose writes
  local old=$POOLRT_PRIMARY_NODE new=$POOLRT_STANDBY_NODE
  local oldport=$POOLRT_PRIMARY_PORT newport=$POOLRT_STANDBY_PORT ckpt got deadline

  # A fast shutdown keeps the WAL senders until the standby has the
  # shutdown checkpoint; check that the standby did receive it.
  pg_ctl_node "$old" -m fast stop >/dev/null
  echo "pg-pair.sh: stopped $old (port $oldport)" >&2
  ckpt=$(as_pg "$pgbin/pg_controldata" -D "$dir/$old/data" |
         sed -n 's/^Latest checkpoint location: *//p')
  deadline=$((SECONDS + timeout))
  until [ "$(q "$newport" "select pg_last_wal_receive_lsn() > '$ckpt'::pg_lsn")" = t ]; do
    [ "$SECONDS" -lt "$deadline" ] ||
      die "standby $new never received the old primary's shutdown checkpoint $ckpt"
    sleep 0.1
  done

  pg_ctl_node "$new" promote >/dev/null
  echo "pg-pair.sh: promoted $new (port $newport)" >&2
  follow "$old" "$newport"
  pg_ctl_node "$old" -l "$dir/$old/server.log" start >/dev/null
  write_env "$new" "$old"
  wait_streaming
  echo "pg-pair.sh: $new (port $newport) is primary, $old (port $oldport) streams from it" >&2
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/env" ] && [ ! -e "$dir/primary" ] &&
     [ ! -e "$dir/standby" ]; then
    die "$dir does not look like a pg-pair.sh directory; not removing it"
  fi
  local gpid
  gpid=$(cat "$dir/guard.pid" 2>/dev/null || true)
  # Not when the guard itself (exec'd into us) is the one stopping.
  if [ -n "$gpid" ] && [ "$gpid" != "$$" ]; then kill "$gpid" 2>/dev/null || true; fi
  local node
  for node in standby primary; do
    [ ! -e "$dir/$node" ] || "$here/pg.sh" stop "$dir/$node"
  done
  rm -rf "$dir"
}

# halt DIR ROLE / resume DIR ROLE: stops (-m fast) or starts again the node
# that has ROLE (primary or standby) now, keeping its data: a server that
# refuses connections for a while.
halt_resume() {
  dir=$(cd "$dir" && pwd)
  # shellcheck source=/dev/null
  . "$dir/env"
  local node
  case "$role" in
    primary) node=$POOLRT_PRIMARY_NODE ;;
    standby) node=$POOLRT_STANDBY_NODE ;;
    *) die "role must be primary or standby, not '$role'" ;;
  esac
  if [ "$cmd" = halt ]; then
    pg_ctl_node "$node" -m fast stop >/dev/null
  else
    pg_ctl_node "$node" -l "$dir/$node/server.log" start >/dev/null
  fi
}

case "$cmd" in
  start) start ;;
  halt|resume) role=${3:-}; halt_resume ;;
  stop) stop ;;
  switchover) switchover ;;
  wait-streaming) dir=$(cd "$dir" && pwd); wait_streaming ;;
  *) usage ;;
esac
