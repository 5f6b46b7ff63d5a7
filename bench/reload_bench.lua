-- Hot reload cost: (1) time from a reload call until every querying thread
-- has run a query on the new generation; (2) query throughput during a
-- reload storm relative to no reloads, interleaved A/B/A/B in one run.
--   tools/with-pg.sh build/poolrt bench/reload_bench.lua [seconds] [threads]
local poolrt = require "poolrt"
package.path = "./?.lua;" .. package.path
local secs, threads = tonumber(arg[1] or 3), tonumber(arg[2] or 8)

local function file(src)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w")) f:write(src) f:close()
  return path
end
local A = file("return { pick = function(idle, pool) return pool.idle end }\n")
local B = file("return { pick = function(idle, pool) return 1 end }\n")

local rt = poolrt.runtime{ policy = A, reap_interval = 0 }
rt:pool("bench", { max = 4, acquire_timeout = 10 })

-- (1) switch latency, five times
local lat = {}
for r = 1, 5 do
  local now = poolrt.now()
  local res = assert(rt:spawn(threads + 1, "bench.reload_workers", "switch", threads + 1, "bench",
                              now + 1.0, r % 2 == 1 and B or A, now + 0.5))
  local rl = res[threads + 1]
  -- a thread is on the new generation once a query that began after the
  -- reload returned has finished (its acquire made the switch)
  local last = 0
  for i = 1, threads do
    for _, q in ipairs(res[i].window) do
      if q[1] >= rl.reload_done then last = math.max(last, q[2]) break end
    end
  end
  lat[r] = { call = (rl.reload_done - rl.reload_started) * 1e3, all = (last - rl.reload_started) * 1e3 }
end
table.sort(lat, function(x, y) return x.all < y.all end)
print(("switch: reload call %.2f ms; all %d threads on the new generation after %.2f ms (median of 5; min %.2f, max %.2f)")
  :format(lat[3].call, threads, lat[3].all, lat[1].all, lat[5].all))

-- (2) throughput, A/B/A/B, for a storm as fast as possible and one of ~20/s
local function run(interval)
  local res = assert(rt:spawn(threads + (interval and 1 or 0), "bench.reload_workers", "load",
                              threads + 1, "bench", poolrt.now() + secs, interval, A, B))
  local q, reloads = 0, 0
  for _, r in ipairs(res) do q = q + (r.queries or 0); reloads = reloads + (r.reloads or 0) end
  return q / secs, reloads / secs
end
for _, interval in ipairs({ 0, 0.05 }) do
  local base, storm, rps = {}, {}, {}
  for round = 1, 2 do
    base[round] = run(nil)
    storm[round], rps[round] = run(interval)
  end
  local b, s = (base[1] + base[2]) / 2, (storm[1] + storm[2]) / 2
  print(("throughput: %.0f q/s without reloads, %.0f q/s during %.0f reloads/s: %.2fx (A/B/A/B: %.0f %.0f %.0f %.0f)")
    :format(b, s, (rps[1] + rps[2]) / 2, s / b, base[1], storm[1], base[2], storm[2]))
end
os.remove(A) os.remove(B)
