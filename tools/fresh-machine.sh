#!/usr/bin/env bash
# Prove the README's two commands on a fresh machine: a Debian 12 chroot
# (debootstrap --variant=minbase bookworm) with only build-essential and git,
# empty package lists, a clone of this repository under /root, and as root:
#   make run; make test
# Prints both exit codes and the last line of `make test`; exits 0 only when
# both succeeded on the first try.  Needs root and a Debian mirror (it
# downloads packages), so it is not part of CI.
#
# Usage: tools/fresh-machine.sh [REF]      (default: HEAD; commit first)
# Environment: FRESH_ROOT (chroot dir, default /var/tmp/poolrt-fresh; wiped),
#              MIRROR (default http://deb.debian.org/debian), KEEP=1 keeps it.
set -euo pipefail

ref=${1:-HEAD}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
root=${FRESH_ROOT:-/var/tmp/poolrt-fresh}
mirror=${MIRROR:-http://deb.debian.org/debian}
log=${root}.log

die() { echo "fresh-machine: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
git -C "$repo" rev-parse --verify -q "$ref^{commit}" >/dev/null || die "no commit $ref"

if ! command -v debootstrap >/dev/null; then
  apt-get install -y --no-install-recommends debootstrap || { apt-get update && apt-get install -y --no-install-recommends debootstrap; }
fi

mounts=(proc sys dev dev/pts dev/shm)
umount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    mountpoint -q "$root/${mounts[i]}" && umount -l "$root/${mounts[i]}" || true
  done
}
cleanup() {
  umount_all
  [ "${KEEP:-0}" = 1 ] || rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

umount_all
rm -rf "$root"
echo "fresh-machine: debootstrap bookworm into $root (log: $log)"
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$log" 2>&1 || { tail -20 "$log"; die "debootstrap failed"; }

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666
mount -t tmpfs shm "$root/dev/shm" -o mode=1777
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Package installs in a chroot must not try to start services.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

in_root() { chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "fresh-machine: installing build-essential and git, then emptying the package lists"
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential git ca-certificates' >> "$log" 2>&1 \
  || { tail -20 "$log"; die "installing build-essential git failed"; }
in_root sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/apt/lists/partial'

echo "fresh-machine: cloning $(git -C "$repo" rev-parse --short "$ref") into /root/poolrt"
git -C "$repo" bundle create "$root/root/poolrt.bundle" "$ref" >> "$log" 2>&1
in_root git clone -q /root/poolrt.bundle /root/poolrt
in_root git -C /root/poolrt -c advice.detachedHead=false checkout -q "$(git -C "$repo" rev-parse "$ref")"
rm -f "$root/root/poolrt.bundle"

run_rc=0 test_rc=0
echo "fresh-machine: make run"
in_root sh -c 'cd /root/poolrt && make run' > "$root.run.log" 2>&1 || run_rc=$?
tail -8 "$root.run.log"
echo "fresh-machine: make test"
in_root sh -c 'cd /root/poolrt && make test' > "$root.test.log" 2>&1 || test_rc=$?
grep -E '^not ok' "$root.test.log" | head -20 || true

echo "make run: exit $run_rc   (log: $root.run.log)"
echo "make test: exit $test_rc  (log: $root.test.log)"
echo "make test last line: $(tail -1 "$root.test.log")"
[ "$run_rc" -eq 0 ] && [ "$test_rc" -eq 0 ]
