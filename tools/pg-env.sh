# tools/pg-env.sh -- sourced by tools/pg.sh and tools/pg-pair.sh: where the
# PostgreSQL server binaries are (pgbin) and the user they run as (runas,
# as_pg).  Debian's pg_config reports the libpq-dev client bindir, not the
# server's; the server binaries live under /usr/lib/postgresql/<ver>/bin.
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/pg_ctl" ]; then
  echo "$(basename "$0"): no PostgreSQL server found under /usr/lib/postgresql (tools/deps.sh core)" >&2
  exit 1
fi

# PostgreSQL refuses to run as root, so as root everything runs as 'postgres'.
if [ "$(id -u)" -eq 0 ]; then
  runas=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  runas=$(id -un)
  as_pg() { "$@"; }
fi
