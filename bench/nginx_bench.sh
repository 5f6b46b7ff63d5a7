#!/usr/bin/env bash
# nginx + resty.poolrt vs pgbench direct on the same one-row query, in one run.
#
#   bench/nginx_bench.sh            (make bench-nginx; starts a throwaway
#                                    PostgreSQL unless POOLRT_CONNINFO is set)
#
# nginx (examples/nginx, access log off) serves /query with W workers, each
# with a pool of M connections: W*M server connections.  wrk drives it with
# C keep-alive HTTP connections.  pgbench then runs the very same SQL with
# -M prepared (poolrt prepares statements too) and -c W*M, i.e. the same
# number of server connections.  /ping (no database) shows what nginx + wrk
# alone cost on this machine.  Writes bench/RESULTS-nginx.md (BENCH_OUT).
#
# Knobs: BENCH_SECONDS (10), BENCH_NGINX_WORKERS (2), BENCH_POOL_MAX (4),
# BENCH_HTTP_CONNS (64), BENCH_THREADS (2: wrk and pgbench threads),
# BENCH_CONF (nginx.conf template, default examples/nginx/nginx.conf).
# Needs: nginx libnginx-mod-http-lua lua-resty-core (tools/deps.sh nginx),
# wrk, pgbench (postgresql-contrib / postgresql-client), a built libpoolrt.so.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${POOLRT_CONNINFO:-}" ] || exec tools/with-pg.sh "$0" "$@"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
secs=${BENCH_SECONDS:-10}
workers=${BENCH_NGINX_WORKERS:-2}
pool_max=${BENCH_POOL_MAX:-4}
conns=${BENCH_HTTP_CONNS:-64}
threads=${BENCH_THREADS:-2}
out=${BENCH_OUT:-bench/RESULTS-nginx.md}
server_conns=$((workers * pool_max))
app=poolrt-nginx-bench

for tool in wrk pgbench psql; do
  command -v "$tool" >/dev/null || { echo "nginx_bench: $tool not found (apt-get install -y wrk postgresql-client)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/poolrt-nginx-bench.XXXXXX")
chmod 755 "$tmp"
prefix=
cleanup() {
  [ -z "$prefix" ] || examples/nginx/run.sh stop "$prefix" >/dev/null 2>&1 || true
  rm -rf "$tmp" ${prefix:+"$prefix"}
}
trap cleanup EXIT

sql="select :n::int + 1 as n, current_setting('application_name') as app, pg_backend_pid() as pid from pg_sleep(0)"

# --- nginx + poolrt ---------------------------------------------------------
sed 's|^\( *\)access_log .*|\1access_log off;|' ${BENCH_CONF:-examples/nginx/nginx.conf} > "$tmp/nginx.conf"
chmod 644 "$tmp/nginx.conf"
started=$(NGINX_CONF="$tmp/nginx.conf" NGINX_WORKERS=$workers POOLRT_NGINX_POOL_MAX=$pool_max \
          POOLRT_CONNINFO="$POOLRT_CONNINFO application_name=$app" examples/nginx/run.sh start)
prefix=$(sed -n 's/^prefix=//p' <<<"$started")
url=$(sed -n 's/^url=//p' <<<"$started")
for _ in $(seq 100); do curl -fsS "$url/ping" >/dev/null 2>&1 && break; sleep 0.05; done

# wrk's text output -> "rps p50 p90 p99 errors" (latencies in ms).
wrk_run() {
  local path=$1 res
  res=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$url$path")
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { for (i = 3; i <= NF; i += 2) err += $(i + 1) }
    END { printf "%.0f %.3f %.3f %.3f %d\n", rps, p50, p90, p99, err }' <<<"$res"
}

echo "nginx_bench: warming up ($url, $workers workers x pool $pool_max)" >&2
wrk -t"$threads" -c"$conns" -d2s "$url/query?n=41" >/dev/null
echo "nginx_bench: wrk /query ${secs}s, $conns connections" >&2
read -r q_rps q_p50 q_p90 q_p99 q_err < <(wrk_run "/query?n=41")
nginx_server_conns=$(psql "$POOLRT_CONNINFO" -Atc "select count(*) from pg_stat_activity where application_name = '$app'")
echo "nginx_bench: wrk /ping ${secs}s" >&2
read -r p_rps p_p50 p_p90 p_p99 p_err < <(wrk_run "/ping")
examples/nginx/run.sh stop "$prefix" >/dev/null
rm -rf "$prefix"
prefix=

# --- pgbench direct ------------------------------------------------------------
printf '\\set n 41\n%s;\n' "$sql" > "$tmp/query.sql"
echo "nginx_bench: pgbench -M prepared -c $server_conns ${secs}s" >&2
pgb=$(cd "$tmp" && pgbench -n -M prepared -c "$server_conns" -j "$threads" -T "$secs" -f query.sql -l \
        --log-prefix=pgb "$POOLRT_CONNINFO application_name=$app-pgbench" 2>&1)
d_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$pgb" | head -1)
# Per-transaction log: field 3 is the latency in microseconds.
read -r d_p50 d_p90 d_p99 < <(cat "$tmp"/pgb.* | awk '{ print $3 }' | sort -n | awk '
  { v[NR] = $1 } END { printf "%.3f %.3f %.3f\n", v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.90) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }')
d_failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$pgb")

ratio=$(awk -v a="$q_rps" -v b="$d_tps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
pgver=$(psql "$POOLRT_CONNINFO" -Atc "show server_version")
ngxver=$(nginx -v 2>&1 | sed 's/^nginx version: //')

cat > "$out" <<MD
## nginx + resty.poolrt vs pgbench direct (bench/nginx_bench.sh)

One-row query, the same SQL on both sides (prepared):
\`${sql//:n/\$1}\`
with the same number of server connections: $server_conns
($workers nginx workers x pool max $pool_max; pgbench \`-M prepared -c $server_conns -j $threads\`).
HTTP: \`wrk -t$threads -c$conns -d${secs}s --latency\`, keep-alive, access log off.
Machine: $(nproc) CPU(s) ($cpu), PostgreSQL $pgver, $ngxver + lua-nginx-module 0.10.23,
everything (client, nginx, PostgreSQL) on the same host over loopback; $(date -u +%Y-%m-%d),
load average before the run: $load_start.

| path | requests/s | p50 ms | p90 ms | p99 ms | errors |
|---|---:|---:|---:|---:|---:|
| nginx + poolrt \`/query\` ($conns HTTP conns, $nginx_server_conns server conns seen) | $q_rps | $q_p50 | $q_p90 | $q_p99 | $q_err |
| pgbench direct \`-M prepared -c $server_conns\` | ${d_tps%.*} | $d_p50 | $d_p90 | $d_p99 | ${d_failed:-0} |
| nginx \`/ping\` (no database: HTTP + Lua only) | $p_rps | $p_p50 | $p_p90 | $p_p99 | $p_err |

nginx + poolrt serves **${ratio}x** of pgbench's direct rate here.  Latencies are
not like for like: wrk's include HTTP and queueing of $conns clients for
$server_conns connections, pgbench's only its $server_conns clients' round trips.
Each request crosses the event loop -> ngx.run_worker_thread -> a Lua VM on an
OS thread -> libpq and back (two thread hand-offs and two copies of the
values per query).  Client, nginx and PostgreSQL share $(nproc) cores, so the
run is CPU-bound; with other work on the machine (see the load average) the
tails in particular move a lot between runs.
MD
cat "$out"
