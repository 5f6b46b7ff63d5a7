#!/usr/bin/env bash
# Regenerates lua/poolrt/cdef.lua from the PRT_CDEF block of
# include/poolrt.h (spec/cdef_spec.lua fails until this is run after a
# header change).
set -euo pipefail
cd "$(dirname "$0")/.."
out=lua/poolrt/cdef.lua
{
  sed -n '1,/^ffi.cdef \[\[$/p' "$out"
  awk '/PRT_CDEF_BEGIN/{on=1; next} /PRT_CDEF_END/{on=0} on' include/poolrt.h
  echo ']]'
} > "$out.tmp"
mv "$out.tmp" "$out"
