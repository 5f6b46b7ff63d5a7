#!/usr/bin/env bash
# Throwaway PostgreSQL server for tests.
#   tools/pg.sh start DIR   initdb DIR/data, start on a free 127.0.0.1 port,
#                           write shell exports to DIR/env
#   tools/pg.sh stop DIR    stop it (if running) and remove DIR
# DIR/env defines POOLRT_CONNINFO, POOLRT_PGDATA, POOLRT_PGBIN, POOLRT_PGPORT,
# POOLRT_PGUSER_RUN (the OS user the server runs as, for tests that restart it).
# POOLRT_PG_MAX_CONNECTIONS overrides the server's max_connections (200).
# Role poolrt_pw (if a test creates it) must log in with a password.
set -euo pipefail

usage() { echo "usage: $0 {start|stop} DIR" >&2; exit 2; }
[ "$#" -eq 2 ] || usage
cmd=$1 dir=$2

# shellcheck source=tools/pg-env.sh
. "$(dirname "$0")/pg-env.sh"

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local data=$dir/data log=$dir/server.log
  if [ "$runas" = postgres ]; then
    chown -R postgres: "$dir"
    chmod 755 "$dir"   # mktemp -d creates 0700
  fi
  # Catch an untraversable parent (e.g. a dir under /root) with a clear message.
  if ! as_pg test -w "$dir"; then
    echo "pg.sh: $dir is not writable by user $runas (check parent dir permissions)" >&2
    exit 1
  fi
  # Run from DIR: the server user may not be allowed into the caller's cwd.
  cd "$dir"

  # --locale=C: the host's LANG may name a locale that isn't generated.
  if ! out=$(as_pg "$pgbin/initdb" -D "$data" --auth=trust -U postgres \
               --encoding=UTF8 --locale=C --no-sync 2>&1); then
    printf '%s\n' "$out" >&2
    echo "pg.sh: initdb failed" >&2
    exit 1
  fi
  # One role authenticates by password (specs of wrong-password errors);
  # pg_hba.conf is read top down, so this line wins for that role only.
  sed -i '1i host all poolrt_pw 127.0.0.1/32 scram-sha-256' "$data/pg_hba.conf"

  local _try port p opts
  for _try in 1 2 3 4 5; do
    # Random start so parallel runs don't all probe the same ports.
    port=
    p=$((20000 + RANDOM % 40000))
    for _ in $(seq 200); do
      # Connecting succeeds only if something already listens there.
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
      p=$(( p >= 60000 ? 20000 : p + 1 ))
    done
    [ -n "$port" ] || { echo "pg.sh: no free port found" >&2; exit 1; }

    local maxconn=${POOLRT_PG_MAX_CONNECTIONS:-200}
    opts="-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c max_connections=$maxconn"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    # Also persist the settings so a test that does a plain `pg_ctl stop` +
    # `pg_ctl start` (no -o) comes back on the same port and socket dir.
    cat > "$data/postgresql.poolrt.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = $maxconn
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    grep -q "^include_if_exists = 'postgresql.poolrt.conf'" "$data/postgresql.conf" ||
      echo "include_if_exists = 'postgresql.poolrt.conf'" >> "$data/postgresql.conf"
    chown "$runas" "$data/postgresql.poolrt.conf" 2>/dev/null || true

    rm -f "$log"   # one attempt per log (recreated by the server user) for the port-race check
    if as_pg "$pgbin/pg_ctl" -w -t 30 -D "$data" -l "$log" -o "$opts" start >/dev/null; then
      {
        echo "export POOLRT_CONNINFO='host=127.0.0.1 port=$port user=postgres dbname=postgres'"
        echo "export POOLRT_PGDATA='$data'"
        echo "export POOLRT_PGBIN='$pgbin'"
        echo "export POOLRT_PGPORT='$port'"
        echo "export POOLRT_PGUSER_RUN='$runas'"
      } > "$dir/env"
      return 0
    fi
    # Someone grabbed the port between our probe and the bind: try another.
    grep -qi 'could not bind\|address already in use' "$log" || break
    echo "pg.sh: port $port taken, retrying" >&2
  done
  echo "pg.sh: PostgreSQL failed to start; tail of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

stop() {
  [ -d "$dir" ] || return 0
  # Refuse to rm -rf something that doesn't look like one of our dirs.
  if [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/data/PG_VERSION" ] &&
     [ ! -e "$dir/env" ] && [ ! -e "$dir/server.log" ]; then
    echo "pg.sh: $dir does not look like a pg.sh directory; not removing it" >&2
    exit 1
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then
    (cd / && as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop) >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "$cmd" in
  start) start ;;
  stop)  stop ;;
  *) usage ;;
esac
