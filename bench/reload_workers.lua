-- Thread bodies for bench/reload_bench.lua.
local poolrt = require "poolrt"
local W = {}

-- Runs queries until `stop_at`; thread n (when `reload` is a number) instead
-- reloads every `reload` seconds (0: as fast as it can), alternating the
-- two policy files.  Queries
-- started after `switch_at` record when the first of them finished.
function W.load(rt, i, n, pool_name, stop_at, reload, a, b, switch_at)
  if reload and i == n then
    local count, k = 0, 0
    while poolrt.now() < stop_at do
      k = k + 1
      assert(rt:reload(k % 2 == 0 and a or b))
      count = count + 1
      if reload > 0 then poolrt.sleep(reload) end
    end
    return { reloads = count }
  end
  local pool = rt:pool(pool_name)
  local queries, window = 0, {}
  while poolrt.now() < stop_at do
    local started = poolrt.now()
    assert(pool:query("select 1"))
    queries = queries + 1
    -- around a switch, keep (start, end) of each query for the caller
    if switch_at and started >= switch_at - 0.05 and started <= switch_at + 0.5 then
      window[#window + 1] = { started, poolrt.now() }
    end
  end
  return { queries = queries, window = window }
end

-- Thread n reloads once at `switch_at`; the others query until stop_at.
function W.switch(rt, i, n, pool_name, stop_at, path, switch_at)
  if i == n then
    while poolrt.now() < switch_at do poolrt.sleep(0.0005) end
    local t0 = poolrt.now()
    assert(rt:reload(path))
    return { reload_started = t0, reload_done = poolrt.now() }
  end
  return W.load(rt, i, n, pool_name, stop_at, false, nil, nil, switch_at)
end

return W
