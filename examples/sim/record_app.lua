-- The app whose traffic examples/sim/replay.trace is: 6 threads on a pool
-- of 4, each running 200 short queries with a little think time between,
-- all of them at once for the first 20 (a start-up rush).  Recorded with
--
--   tools/with-pg.sh build/poolrt --record examples/sim/replay.trace examples/sim/record_app.lua
--
-- and replayed by examples/sim/replay.lua.
local poolrt = require "poolrt"

local M = {}

-- One thread's share of the work (rt:spawn calls it with the runtime).
function M.worker(rt, i)
  local pool = rt:pool("app", { max = 4, acquire_timeout = 2 })
  math.randomseed(i)
  for q = 1, 200 do
    assert(pool:query("select pg_sleep($1)", math.random() * 0.004))
    if q > 20 then poolrt.sleep(math.random() * 0.02) end
  end
  return true
end

if ... == "record_app" then return M end -- required by the spawned threads
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local rt = poolrt.runtime{}
rt:pool("app", { max = 4, acquire_timeout = 2 })
assert(rt:spawn(6, "record_app", "worker"))
print("recorded 6 x 200 acquires")
