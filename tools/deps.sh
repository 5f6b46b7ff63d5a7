#!/usr/bin/env bash
# Ensure the Debian packages for one or more dependency groups are installed.
# Usage: tools/deps.sh GROUP...   (groups: core nginx bench sanitize)
# Silent and exit 0 when everything is already there, so it is cheap to call
# from make targets and .ci/run on every run.
set -euo pipefail

usage() { echo "usage: $0 {core|nginx|bench|sanitize}..." >&2; exit 2; }
[ "$#" -gt 0 ] || usage

pkgs=()
for group in "$@"; do
  case "$group" in
    # luajit2/libluajit2-5.1-dev are Debian's OpenResty fork, the LuaJIT that
    # libnginx-mod-http-lua links against; we build against the same one.
    # lua-cjson decodes json/jsonb columns (OpenResty ships the same library).
    core)     pkgs+=(luajit2 libluajit2-5.1-dev libpq-dev postgresql lua-busted lua-cjson
                     libcmocka-dev libmicrohttpd-dev curl pkg-config gcc make) ;;
    # The nginx group is what `make test` needs beyond core: the OpenResty
    # specs, promtool (package prometheus) that lints every /metrics, and
    # gnuplot for the spec of `poolrt sim --plot` (optional for users: only
    # --plot needs it, and says so when it is missing).
    nginx)    pkgs+=(nginx libnginx-mod-http-lua lua-resty-core curl prometheus wrk gnuplot-nox) ;;
    bench)    pkgs+=(pgbouncer gnuplot-nox wrk time golang-go golang-github-lib-pq-dev
                     golang-github-jackc-pgx-v4-dev) ;;
    # clang 14 is bookworm's default; its sanitizer runtimes live in a separate package.
    sanitize) pkgs+=(clang libclang-rt-14-dev valgrind) ;;
    *) echo "deps.sh: unknown group '$group'" >&2; usage ;;
  esac
done

installed() {
  # dpkg-query exits non-zero for packages it has never heard of; that just means "not installed".
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages; run:" >&2
    echo "sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y --no-install-recommends "${missing[@]}"; }
  # A fresh machine often has stale or empty package lists; only pay for
  # `apt-get update` when the plain install actually fails.
  if ! apt_install; then
    apt-get update
    apt_install
  fi
fi

# The upstream LuaJIT packages clash with the OpenResty fork that nginx's lua
# module expects (different ABI/extensions); warn only, removing packages
# behind someone's back is not this script's call.
for p in luajit libluajit-5.1-dev; do
  if installed "$p"; then
    echo "deps.sh: warning: package '$p' is installed; it conflicts with luajit2/libluajit2-5.1-dev used by libnginx-mod-http-lua (consider: apt-get remove $p)" >&2
  fi
done
exit 0
