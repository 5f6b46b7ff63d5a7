-- bench/decode_cost.lua -- the CPU cost of building the rows of one
-- pgbench -S result (one row, abalance int4) with typed decoding and with
-- decode = false, without the network: the same PGresult turned into rows
-- N times each way, alternating, ROUNDS times.  Run after pgbench -i.
--
--   build/poolrt bench/decode_cost.lua [N] [ROUNDS]
--
-- Prints one key=value line: typed_us= raw_us= extra_us= (median per result)
local poolrt = require "poolrt"
local D = require "poolrt.decode"
local ffi = require "ffi"

local n, rounds = tonumber((...)) or 200000, tonumber((select(2, ...))) or 5
local C = poolrt.C
local rt = poolrt.runtime{ reap_interval = 0 }
local conn = assert(rt:pool("decode_cost", { max = 1 }):acquire())
local errbuf, res_out = ffi.new("char[512]"), ffi.new("prt_result*[1]")
local params = ffi.new("const char*[1]", { "1" })
assert(C.prt_query(conn._c, "SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1, params, 0, res_out, errbuf, 512) == 0,
       ffi.string(errbuf))
local r = res_out[0]

local function per_result(typed)
  local t0 = poolrt.now()
  for _ = 1, n do D.rows(C, r, nil, typed) end
  return (poolrt.now() - t0) / n * 1e6
end
local function median(t)
  table.sort(t)
  return #t % 2 == 1 and t[(#t + 1) / 2] or (t[#t / 2] + t[#t / 2 + 1]) / 2
end

per_result(true) -- warm-up: let the JIT compile both paths
per_result(false)
local typed, raw = {}, {}
for i = 1, rounds do typed[i], raw[i] = per_result(true), per_result(false) end
C.prt_result_free(r)
conn:release()
rt:close()
print(("typed_us=%.3f raw_us=%.3f extra_us=%.3f"):format(median(typed), median(raw), median(typed) - median(raw)))
