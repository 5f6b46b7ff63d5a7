-- Thread bodies for spec/reload_spec.lua (each runs in its own Lua state).
local poolrt = require "poolrt"
local W = {}

local function reloads(rt)
  local r = rt:policy_stats().reloads
  return r.ok + r.failed
end

-- Threads 1..n-1 query until thread n has finished `count` reloads that
-- cycle through `paths`; returns {queries=, failures=} or, for the
-- reloader, {ok=, failed=}.
function W.storm(rt, i, n, pool_name, paths, count)
  if i == n then
    local ok, failed = 0, 0
    for k = 1, count do
      if rt:reload(paths[(k - 1) % #paths + 1]) then ok = ok + 1 else failed = failed + 1 end
    end
    return { ok = ok, failed = failed }
  end
  local pool = rt:pool(pool_name)
  local queries, failures = 0, {}
  local deadline = poolrt.now() + 60
  repeat
    local rows, err = pool:query("select $1::int as v", i)
    queries = queries + 1
    if not rows or rows[1].v ~= i then failures[#failures + 1] = err or "wrong row" end
  until reloads(rt) >= count or poolrt.now() > deadline
  -- and a few more on the final policy
  for _ = 1, 20 do
    local rows, err = pool:query("select 1 as v")
    queries = queries + 1
    if not rows then failures[#failures + 1] = err end
  end
  return { queries = queries, failures = failures }
end

-- Threads 1..n-1 query until thread n has shrunk the pool by reload and
-- seen the shrink take effect; returns failures.
function W.shrink(rt, i, n, pool_name, small_policy)
  local pool = rt:pool(pool_name)
  if i == n then
    -- let the load open every connection first
    local deadline = poolrt.now() + 10
    while rt:stats()[pool_name].total < 10 and poolrt.now() < deadline do
      assert(pool:query("select pg_sleep(0.01)"))
    end
    assert(rt:reload(small_policy))
    return { peak = 10 }
  end
  local failures, queries = {}, 0
  local deadline = poolrt.now() + 20
  repeat
    local rows, err = pool:query("select pg_sleep(0.005)")
    queries = queries + 1
    if not rows then failures[#failures + 1] = err end
  until (rt:policy_stats().generation >= 2 and rt:stats()[pool_name].total <= 2) or poolrt.now() > deadline
  for _ = 1, 20 do
    local rows, err = pool:query("select 1")
    queries = queries + 1
    if not rows then failures[#failures + 1] = err end
  end
  return { queries = queries, failures = failures }
end

return W
