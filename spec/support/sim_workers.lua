-- Thread bodies (rt:spawn) for spec/sim_faithful_spec.lua: the live half of
-- a workload that `poolrt sim` then simulates.  Every thread draws the same
-- seeded Poisson arrival list and takes its share of it (arrival k goes to
-- thread k % n), so the threads together offer `rate` acquires per second
-- from t0 to t0 + seconds, each holding its connection for one
-- `select pg_sleep(hold)`; the first `burst` threads instead acquire once
-- each at t0 + burst_at, all at the same moment.  Returns what it saw:
-- { ok =, timeouts =, errors =, endpoint = { [1] =, [2] = } }.
local poolrt = require "poolrt"
local W = {}

local function sleep_until(t)
  local d = t - poolrt.now()
  if d > 0 then poolrt.sleep(d) end
end

-- One acquire, query and release at time t; counts into out.
local function one(pool, t, hold, out)
  sleep_until(t)
  local c, err = pool:acquire()
  if not c then
    if err:find("timed out", 1, true) then out.timeouts = out.timeouts + 1 else out.errors = out.errors + 1 end
    out.last_error = err
    return
  end
  local e = c:endpoint()
  local ok = c:query("select pg_sleep($1)", hold)
  c:release()
  if ok then
    out.ok = out.ok + 1
    out.endpoint[e] = out.endpoint[e] + 1
  else
    out.errors = out.errors + 1
  end
end

-- The arrival times of a Poisson process of `rate` per second over
-- [0, seconds), from `seed` (the same list in every thread).
function W.arrivals(seed, rate, seconds)
  math.randomseed(seed)
  local out, t = {}, 0
  while true do
    t = t - math.log(1 - math.random()) / rate
    if t >= seconds then return out end
    out[#out + 1] = t
  end
end

function W.drive(rt, i, n, pool_name, t0, o)
  local pool = rt:pool(pool_name)
  local out = { ok = 0, timeouts = 0, errors = 0, endpoint = { 0, 0 } }
  if i <= o.burst then
    one(pool, t0 + o.burst_at, o.hold, out)
    return out
  end
  local k = n - o.burst
  for j, t in ipairs(W.arrivals(o.seed, o.rate, o.seconds)) do
    if j % k == i - o.burst - 1 then one(pool, t0 + t, o.hold, out) end
  end
  return out
end

return W
