#!/usr/bin/env bash
# Run CMD with a PostgreSQL server available via $POOLRT_CONNINFO.
# Usage: tools/with-pg.sh CMD [ARGS...]
# Reuses the caller's server if POOLRT_CONNINFO is already set; otherwise
# starts a throwaway one (tools/pg.sh) and always tears it down afterwards.
# Exits with CMD's status.
set -euo pipefail

[ "$#" -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
[ -n "${POOLRT_CONNINFO:-}" ] && exec "$@"

here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/poolrt-pg.XXXXXX")

cleanup() { "$here/pg.sh" stop "$dir" >/dev/null 2>&1 || rm -rf "$dir"; }
trap cleanup EXIT
# Without explicit traps bash dies on INT/TERM without running the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

"$here/pg.sh" start "$dir"
set -a
# shellcheck source=/dev/null
. "$dir/env"
set +a
echo "poolrt: started throwaway PostgreSQL on 127.0.0.1:$POOLRT_PGPORT ($dir)" >&2

# Run CMD in the background and wait, so a signal to us is handled right away
# (bash defers traps until a foreground child exits) and forwarded to CMD.
# `<&0` keeps our stdin (background jobs otherwise get /dev/null), and
# `trap -` undoes bash's SIGINT/SIGQUIT-ignoring for background jobs, so a
# terminal Ctrl-C still reaches CMD and everything it started.
(trap - INT QUIT; exec "$@") <&0 &
child=$!
interrupted=0
# First signal: ask CMD to stop; a second one (impatient user) kills it.
on_signal() {
  local sig=KILL
  [ "$interrupted" -ne 0 ] || sig=TERM
  got_sig=1 interrupted=$1
  kill -"$sig" "$child" 2>/dev/null || true
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
while :; do
  got_sig=0 status=0
  wait "$child" || status=$?
  # A trapped signal makes `wait` return early: keep waiting while CMD lives.
  [ "$got_sig" -eq 1 ] && kill -0 "$child" 2>/dev/null || break
done
# After a signal, CMD's own status is unreliable (bash can report -1): use 128+sig.
[ "$interrupted" -eq 0 ] || status=$interrupted
exit "$status"
