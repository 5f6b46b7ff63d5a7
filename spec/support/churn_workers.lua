-- Thread bodies for spec/churn_spec.lua (each runs in its own Lua state).
-- rt:spawn blocks the thread that calls it, so the spec's conductor (the
-- policy reloads, the backend kills) is the last spawned thread, not the
-- spec's main thread; it kills through a connection of its own.
local poolrt = require "poolrt"
local H = require "spec.helper"
local W = {}

-- One failure class per message: tenant names, pids and numbers folded, so
-- `pool "t7": pool was evicted` and `pool "t31": ...` count together.
local function class_of(err)
  return (tostring(err):gsub('"t%d+"', '"tN"'):gsub("%d+%.?%d*", "N"):gsub("%s+", " "))
end

-- Workers 1..n-1: until `deadline` (poolrt.now() seconds), one query on a
-- random tenant of `tenants` after another.  Returns { queries =, failed =,
-- failures = { [class] = { n =, example = } } }.
local function worker(rt, i, tenants, pool_opts, deadline, seed)
  math.randomseed(seed + i * 7919) -- each state starts from the same seed otherwise
  local queries, failed, failures = 0, 0, {}
  while poolrt.now() < deadline do
    local k = math.random(tenants)
    local ok, rows, err = pcall(function() return rt:pool("t" .. k, pool_opts):query("select pg_sleep(0.002)") end)
    queries = queries + 1
    if not (ok and rows) then
      local msg = ok and err or rows -- rt:pool raises when it cannot admit the pool
      failed = failed + 1
      local c = class_of(msg)
      local f = failures[c] or { n = 0, example = tostring(msg) }
      f.n = f.n + 1
      failures[c] = f
    end
  end
  return { queries = queries, failed = failed, failures = failures }
end

-- The conductor: every 2 s a reload, alternating between the two policy
-- files; with `app` set, every 5 s the termination of one of that
-- application's backends (an active one when there is one), through the
-- helper's admin runtime (a connection of its own).  Until `deadline`.
local function conductor(rt, paths, deadline, app)
  local reloads, refused, kills, kill_errors = 0, {}, 0, {}
  local t0 = poolrt.now()
  local next_reload, next_kill = t0 + 2, app and (t0 + 5) or math.huge
  while true do
    local now = poolrt.now()
    local at = math.min(next_reload, next_kill)
    if at >= deadline then break end
    if now < at then
      poolrt.sleep(math.min(at - now, deadline - now)) -- a schedule, not a wait for a condition
    elseif at == next_reload then
      reloads = reloads + 1
      local ok, err = rt:reload(paths[(reloads - 1) % #paths + 1])
      if not ok then refused[#refused + 1] = tostring(err) end
      next_reload = next_reload + 2
    else
      local ok, rows = pcall(H.admin, "select pg_terminate_backend(pid) as done, pid from pg_stat_activity "
                                      .. "where application_name = $1 order by state = 'active' desc, random() limit 1", app)
      if ok and rows[1] and rows[1].done then kills = kills + 1
      elseif not ok then kill_errors[#kill_errors + 1] = tostring(rows) end
      next_kill = next_kill + 5
    end
  end
  return { reloads = reloads, refused = refused, kills = kills, kill_errors = kill_errors }
end

-- rt:spawn(n, "spec.support.churn_workers", "churn", n, o): threads 1..n-1 are
-- workers, thread n the conductor.  o: tenants, pool_opts, deadline, seed,
-- paths (policy files), app (application_name whose backends to kill, or nil).
function W.churn(rt, i, n, o)
  if i == n then return conductor(rt, o.paths, o.deadline, o.app) end
  return worker(rt, i, o.tenants, o.pool_opts, o.deadline, o.seed)
end

return W
