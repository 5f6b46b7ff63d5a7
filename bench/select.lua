-- bench/select.lua -- pgbench's scale-10 `-S` query through the poolrt Lua
-- host, one OS thread per worker (rt:spawn), each with its own Lua state.
--
--   build/poolrt bench/select.lua WORKERS MAX SECONDS [prepared|unprepared|raw|ffi|multiplex|batch|workers] [SCALE] [BATCH]
--
-- prepared / unprepared: pool:query, the friendly API (rows as tables).
-- raw: prepared, with pool option decode = false (rows of strings), to
-- show what typed decoding costs.
-- ffi: the same cycle on the C API through LuaJIT's FFI (prepared), to
-- show how much of the Lua host's cost is the friendly layer.
-- multiplex: prepared, pool option multiplex = true (pool:query pipelines
-- every worker's statements over the MAX connections).
-- batch: multiplex = true, and each worker keeps BATCH statements (64) in
-- flight with pool:query_batch (one Sync each): WORKERS = 2, BATCH = 64 is
-- 128 clients as pgbench -c 128 -j 2 runs them, two threads each serving
-- 64 (driver -w 2 -b 64 -x is its C counterpart).  ops count statements;
-- the latency is per batch.
-- workers: multiplex = true, and WORKERS coroutine workers (poolrt.workers)
-- spread over THREADS (in BATCH's place, 2) rt:spawn threads, each worker
-- looping pool:query as a thread-per-worker client would: WORKERS = 128 is
-- 128 clients on two threads, as pgbench -c 128 -j 2 serves them, with
-- sequential code per client.  ops and latency are per statement.
--
-- Like bench/driver.c, connections are opened before the clock starts
-- (pgbench's TPS excludes its initial connection time too), and every
-- worker starts at the same instant.  Prints one key=value line:
--   tps= ops= secs= p50_us= p99_us= errors= workers= max= late_ms= first_error=
local poolrt = require "poolrt"

local args = { ... }
local workers = tonumber(args[1]) or 1
local max = tonumber(args[2]) or workers
local secs = tonumber(args[3]) or 5
local mode = args[4] or "prepared"
local scale = tonumber(args[5]) or 10
local batch = mode == "batch" and (tonumber(args[6]) or 64) or 0
local threads = workers
if mode == "workers" then -- WORKERS coroutines on THREADS threads, as evenly as they go
  threads = math.max(1, math.min(workers, tonumber(args[6]) or 2))
  assert(workers % threads == 0, "workers: WORKERS must be a multiple of THREADS")
  batch = workers / threads
end
assert(mode == "prepared" or mode == "unprepared" or mode == "raw" or mode == "ffi" or mode == "multiplex"
       or mode == "batch" or mode == "workers", "mode: prepared | unprepared | raw | ffi | multiplex | batch | workers")

-- The module search path must find bench/select_worker.lua from every
-- spawned state: the script's own directory's parent.
local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "bench"
package.path = here .. "/../?.lua;" .. package.path

local rt = poolrt.runtime{ reap_interval = 1.0 }
local decode = mode ~= "raw"
local pool = rt:pool("bench", { max = max, acquire_timeout = 5.0, prepare = mode ~= "unprepared", decode = decode,
                               multiplex = mode == "multiplex" or mode == "batch" or mode == "workers" })

-- Warm up: open min(workers, max) connections now.
local held = {}
for k = 1, math.min(workers, max) do held[k] = assert(pool:acquire(30)) end
for k = 1, #held do held[k]:release() end

local start_at = poolrt.now() + 0.3 + 0.01 * workers
local stop_at = start_at + secs
local res = assert(rt:spawn(threads, "bench.select_worker", "run", "bench", start_at, stop_at, 100000 * scale,
                        mode == "ffi", { decode = decode }, batch, mode == "workers"))

local ops, errors, first_error, late, hist, n = 0, 0, "", 0, {}, 0
for _, r in ipairs(res) do
  ops, errors = ops + r.ops, errors + r.errors
  if r.first_error and first_error == "" then first_error = r.first_error end
  if r.late > late then late = r.late end
  for k, c in pairs(r.hist) do hist[k] = (hist[k] or 0) + c; n = n + c end
end
local keys = {}
for k in pairs(hist) do keys[#keys + 1] = k end
table.sort(keys)
local function pct(p)
  local want, seen = p * n, 0
  for _, k in ipairs(keys) do
    seen = seen + hist[k]
    if seen >= want then return 1.02 ^ (k + 0.5) end  -- bucket midpoint
  end
  return 0
end
print((("tps=%.1f ops=%d secs=%.3f p50_us=%.1f p99_us=%.1f errors=%d workers=%d max=%d late_ms=%.1f first_error=%q")
  :format(ops / secs, ops, secs, pct(0.50), pct(0.99), errors, workers, max, math.max(late, 0) * 1000,
          first_error):gsub("\\\n", " ")))
rt:close()
