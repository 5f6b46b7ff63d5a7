#!/usr/bin/env bash
# Start/stop examples/nginx/nginx.conf on loopback as a non-root user.
#
#   examples/nginx/run.sh start [PREFIX]   render the config into PREFIX (default: a new
#                                          temp dir), start nginx, print PREFIX and URL
#   examples/nginx/run.sh stop PREFIX      `nginx -s quit` (graceful) and wait for the exit
#   examples/nginx/run.sh reload PREFIX    `nginx -s reload` (new workers, old ones drain)
#   examples/nginx/run.sh fg [PREFIX]      run in the foreground until Ctrl-C
#
# Environment: POOLRT_CONNINFO (required), NGINX_PORT (default: a free port),
# NGINX_WORKERS (2), NGINX_CONF (template, default: nginx.conf next to this
# script), NGINX_USER (default when root: www-data, else nobody; ignored when
# not root), POOLRT_NGINX_POLICY, POOLRT_NGINX_POOL_MAX, POOLRT_NGINX_MAX_CONNECTIONS.
# As root, nginx (master and workers) runs as NGINX_USER; the prefix is
# chowned to it.  nginx loads poolrt from a copy staged in PREFIX/poolrt
# (lua/, policies/, build/libpoolrt.so), never from the repository itself, so
# a clone that NGINX_USER cannot read (e.g. under /root) works as well.  Needs: nginx libnginx-mod-http-lua lua-resty-core
# (tools/deps.sh nginx) and a built libpoolrt.so (make).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cmd=${1:-}
nginx_bin=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}

die() { echo "run.sh: $*" >&2; exit 1; }

as_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

pick_user() {
  user=$(id -un)
  if [ "$(id -u)" -eq 0 ]; then
    user=${NGINX_USER:-}
    if [ -z "$user" ]; then
      if id www-data >/dev/null 2>&1; then user=www-data; else user=nobody; fi
    fi
  fi
}

# A port below the kernel's ephemeral range, so no client socket holds it.
free_port() { "$repo/tools/free-port.sh" || die "no free port found"; }

check_deps() {
  [ -x "$nginx_bin" ] || die "nginx not found (install: tools/deps.sh nginx, or apt-get install -y nginx libnginx-mod-http-lua lua-resty-core)"
  for m in ndk_http_module ngx_http_lua_module; do
    [ -f "/usr/lib/nginx/modules/$m.so" ] || die "/usr/lib/nginx/modules/$m.so missing (apt-get install -y libnginx-mod-http-lua)"
  done
  [ -f /usr/share/lua/5.1/resty/core.lua ] || die "lua-resty-core missing (apt-get install -y lua-resty-core)"
  [ -f "$repo/build/libpoolrt.so" ] || [ -n "${POOLRT_LIB:-}" ] || die "$repo/build/libpoolrt.so missing (run make)"
  [ -n "${POOLRT_CONNINFO:-}" ] || die "POOLRT_CONNINFO is not set"
}

nginx_args() { echo -p "$prefix/" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log"; }

render() {
  local port=${NGINX_PORT:-$(free_port)} workers=${NGINX_WORKERS:-2}
  local tmpl=${NGINX_CONF:-$here/nginx.conf}
  mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
  stage
  sed -e "s|@REPO@|$prefix/poolrt|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" \
    "$tmpl" > "$prefix/conf/nginx.conf"
  echo "$port" > "$prefix/port"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R "$user:" "$prefix"
    chmod 755 "$prefix"
  fi
  if ! as_user test -r "$prefix/poolrt/lua/resty/poolrt.lua"; then
    die "user $user cannot read $prefix (check the permissions of its parent directories, or set TMPDIR)"
  fi
}

# The copy of poolrt that nginx loads: same layout as the repository, so
# lua/poolrt.lua finds ../build/libpoolrt.so and ../policies as usual.
stage() {
  local dst=$prefix/poolrt
  rm -rf "$dst"
  mkdir -p "$dst/build"
  cp -R "$repo/lua" "$repo/policies" "$dst/"
  cp "${POOLRT_LIB:-$repo/build/libpoolrt.so}" "$dst/build/libpoolrt.so"
  chmod -R a+rX "$dst"
  export POOLRT_LIB=$dst/build/libpoolrt.so
}

start() {
  check_deps
  local fixed=${NGINX_PORT:-} attempt out
  for attempt in 1 2 3 4 5; do
    render
    # -t first: a broken config or policy is reported here, not half-started.
    # shellcheck disable=SC2046
    if ! out=$(cd "$prefix" && as_user "$nginx_bin" $(nginx_args) -t 2>&1); then
      printf '%s\n' "$out" >&2
      die "configuration test failed"
    fi
    # shellcheck disable=SC2046
    if (cd "$prefix" && as_user "$nginx_bin" $(nginx_args) 2>"$prefix/logs/start.err"); then
      cat "$prefix/logs/start.err" >&2
      return 0
    fi
    cat "$prefix/logs/start.err" >&2
    # Someone took the port between our probe and nginx's bind: another one.
    if [ -n "$fixed" ] || ! grep -q "Address already in use" "$prefix/logs/start.err"; then
      die "nginx failed to start; see $prefix/logs/error.log"
    fi
    echo "run.sh: port $(cat "$prefix/port") taken, retrying (attempt $attempt)" >&2
  done
  die "no free port after 5 attempts"
}

wait_pid_gone() {
  local pid=$1 i
  for i in $(seq 200); do   # 10 s
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  return 1
}

stop() {
  [ -f "$prefix/logs/nginx.pid" ] || { echo "run.sh: not running ($prefix/logs/nginx.pid missing)" >&2; return 0; }
  local pid
  pid=$(cat "$prefix/logs/nginx.pid")
  # shellcheck disable=SC2046
  (cd "$prefix" && as_user "$nginx_bin" $(nginx_args) -s quit) || kill -QUIT "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid"; then
    echo "run.sh: nginx $pid did not quit within 10s; sending TERM" >&2
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
}

pick_user
case "$cmd" in
  start|fg)
    if [ -z "${2:-}" ]; then
      prefix=$(mktemp -d "${TMPDIR:-/tmp}/poolrt-nginx.XXXXXX")
      # A prefix we made is ours to remove if nginx never came up.
      trap '[ -s "$prefix/logs/nginx.pid" ] && kill -0 "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null || rm -rf "$prefix"' EXIT
    fi
    prefix=${prefix:-$2}
    prefix=$(cd "$prefix" 2>/dev/null && pwd || { mkdir -p "$prefix" && cd "$prefix" && pwd; })
    start
    # The master writes its pid file once it is up.
    for _ in $(seq 200); do [ -s "$prefix/logs/nginx.pid" ] && break; sleep 0.05; done
    [ -s "$prefix/logs/nginx.pid" ] || die "nginx did not start; see $prefix/logs/error.log"
    url=http://127.0.0.1:$(cat "$prefix/port")
    if [ "$cmd" = start ]; then
      echo "prefix=$prefix"
      echo "url=$url"
      exit 0
    fi
    # fg: serve until Ctrl-C / TERM, then quit gracefully and clean up.
    master=$(cat "$prefix/logs/nginx.pid")
    trap 'echo >&2; stop; rm -rf "$prefix"; exit 0' INT TERM
    cat >&2 <<MSG
poolrt nginx is up (prefix $prefix, log $prefix/logs/error.log); Ctrl-C stops it.
  curl $url/query?n=41        one row through resty.poolrt
  curl $url/slow              pg_sleep(0.5) in a worker thread; /ping stays fast
  curl $url/worker            which worker answered, its policy generation and pools
  curl $url/metrics           Prometheus text, every worker
  curl $url/admin/reload      reload the policy in every worker
MSG
    while kill -0 "$master" 2>/dev/null; do sleep 1 & wait $! || true; done
    die "nginx exited; see $prefix/logs/error.log" ;;
  stop)
    [ -n "${2:-}" ] || die "usage: $0 stop PREFIX"
    prefix=$(cd "$2" && pwd)
    stop ;;
  reload)
    [ -n "${2:-}" ] || die "usage: $0 reload PREFIX"
    prefix=$(cd "$2" && pwd)
    # shellcheck disable=SC2046
    (cd "$prefix" && as_user "$nginx_bin" $(nginx_args) -s reload) ;;
  *)
    echo "usage: $0 {start [PREFIX] | stop PREFIX | reload PREFIX | fg [PREFIX]}" >&2
    exit 2 ;;
esac
