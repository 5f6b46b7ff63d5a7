-- Thread body for bench/select.lua: runs in its own Lua state on its own OS
-- thread (rt:spawn).  Loops pool:query (acquire + query + release) until the
-- shared deadline; returns { ops, errors, first_error, hist, late }.
-- Latencies go into a log histogram (2% wide buckets) so that a thread
-- hands back a few hundred numbers, not one per query.
local poolrt = require "poolrt"

local SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
local LOG_STEP = math.log(1.02)

local M = {}

function M.run(rt, i, pool_name, start_at, stop_at, accounts)
  local pool = rt:pool(pool_name)
  local now, floor, log, random = poolrt.now, math.floor, math.log, math.random
  math.randomseed(i * 7919 + floor(now() * 1e6) % 1000003)
  local hist, ops, errors, first_error = {}, 0, 0, nil
  local late = now() - start_at          -- > 0: this state booted after the start
  while now() < start_at do poolrt.sleep(0.0005) end
  while true do
    local t0 = now()
    if t0 >= stop_at then break end
    local rows, err = pool:query(SQL, random(accounts))
    local t1 = now()
    if rows then
      if t1 <= stop_at then
        ops = ops + 1
        local us = (t1 - t0) * 1e6
        local k = us > 1 and floor(log(us) / LOG_STEP) or 0
        hist[k] = (hist[k] or 0) + 1
      end
    else
      errors = errors + 1
      first_error = first_error or err
    end
  end
  return { ops = ops, errors = errors, first_error = first_error, hist = hist, late = late }
end

return M
