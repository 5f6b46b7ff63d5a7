-- rt:spawn entry points for spec/multiplex_spec.lua: many OS threads, each
-- its own Lua state, running statements through one multiplexed pool.
local M = {}

-- n statements; every `fail_every`-th divides by zero.  Returns a summary
-- string "ok=.. failed=.." or the first surprise: a wrong value (someone
-- else's result), an error where none was due, or a success where the
-- statement had to fail.
function M.values(rt, i, pool_name, n, fail_every)
  local pool = rt:pool(pool_name)
  local ok, failed = 0, 0
  for k = 1, n do
    local v = i * 1000000 + k
    local bad = fail_every > 0 and k % fail_every == 0
    local rows, err = pool:query("select $1::int8 as v, 1 / $2::int as one", v, bad and 0 or 1)
    if bad then
      if rows then return "statement " .. k .. " of caller " .. i .. " should have failed" end
      if not err:find("division by zero", 1, true) then return "wrong error: " .. err end
      failed = failed + 1
    else
      if not rows then return "caller " .. i .. " statement " .. k .. ": " .. err end
      if rows[1].v ~= v then return ("caller %d got %s, want %d"):format(i, tostring(rows[1].v), v) end
      ok = ok + 1
    end
  end
  return ("ok=%d failed=%d"):format(ok, failed)
end

-- n inserts of (caller, seq), in order; their ids show the order the
-- server ran them in.
function M.ordered(rt, i, pool_name, n)
  local pool = rt:pool(pool_name)
  for k = 1, n do
    assert(pool:query("insert into mux_order (caller, seq) values ($1, $2)", i, k))
  end
  return true
end

-- One long statement, then `after` short ones; returns "sleep:<ok|err>"
-- and the count of short ones that failed.
function M.sleeper(rt, i, pool_name, secs, after)
  local pool = rt:pool(pool_name)
  local rows, err = pool:query("select pg_sleep($1) as s, $2::int as i", secs, i)
  local out = rows and "sleep:ok" or ("sleep:err " .. err)
  local bad = 0
  for k = 1, after do
    local r = pool:query("select $1::int as k", k)
    if not r or r[1].k ~= k then bad = bad + 1 end
  end
  return out .. " after_failed=" .. bad
end

-- Thread 1 runs a 5 s statement that times out; the others wait until the
-- server runs it, and 0.6 s more, then run 20 short statements, queued behind it on the
-- same connection.
function M.timeout_mix(rt, i, pool_name)
  local poolrt = require "poolrt"
  local pool = rt:pool(pool_name)
  if i == 1 then
    local rows, err = pool:query("select pg_sleep(5) as s")
    return rows and "sleep:ok" or ("sleep:err " .. err)
  end
  local admin = rt:pool("mx_admin_" .. i, { max = 1, prepare = false })
  local deadline = poolrt.now() + 5
  repeat
    local rows = admin:query("select count(*) as n from pg_stat_activity where query = 'select pg_sleep(5) as s' and state = 'active'")
    if rows and rows[1].n > 0 then break end
    poolrt.sleep(0.01)
  until poolrt.now() > deadline
  poolrt.sleep(0.6)
  for k = 1, 20 do
    local rows, err = pool:query("select $1::int as k", k)
    if not rows then return "short:err " .. err end
    if rows[1].k ~= k then return "short:wrong" end
  end
  return "short:ok"
end

return M
