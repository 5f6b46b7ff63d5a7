#!/usr/bin/env bash
# Prints a loopback TCP port nothing listens on, below the kernel's
# ephemeral range (so no client socket holds it), picked at random.  Used
# by examples/nginx/run.sh and the specs (spec/helper.lua H.free_port).
# Exits 1 when 200 tries found none.
set -euo pipefail
low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$low" -gt 11000 ] || low=32768
for _ in $(seq 200); do
  p=$((10000 + RANDOM % (low - 10000)))
  # Connecting succeeds only if something already listens there.
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; exit 0; fi
done
echo "free-port.sh: no free port found" >&2
exit 1
