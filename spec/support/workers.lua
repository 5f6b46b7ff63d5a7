-- Thread bodies for rt:spawn in the specs.  Each runs in its own Lua state
-- on its own OS thread: fn(rt, i, ...) -> one plain value.
local poolrt = require "poolrt"
local W = {}

local wait_until = require("spec.helper").wait_until

-- Thread 1 holds the only connection until n-1 others queue, then lets go.
-- Thread i > 1 queues once i-2 others are queued, so the queue order is
-- 2, 3, ..., n; each records its turn in fifo_log through the connection.
function W.fifo(rt, i, pool_name, n)
  local pool = rt:pool(pool_name)
  local waiting = function(k) return function() return rt:stats()[pool_name].waiting >= k end end
  if i == 1 then
    local c = assert(pool:acquire())
    wait_until(waiting(n - 1), 10)
    c:release()
    return 0
  end
  wait_until(function() return rt:stats()[pool_name].in_use == 1 end, 10)
  wait_until(waiting(i - 2), 10)
  local c = assert(pool:acquire(10))
  assert(c:query("insert into fifo_log(who) values ($1)", i))
  c:release()
  return i
end

-- Thread 1 holds the connection, releases it once thread 2 waits, and
-- at once asks again with no wait: it must not barge past thread 2.
function W.handoff(rt, i, pool_name)
  local pool = rt:pool(pool_name)
  if i == 1 then
    local c = assert(pool:acquire())
    local id = c.id
    wait_until(function() return rt:stats()[pool_name].waiting == 1 end, 10)
    c:release()
    local again, err = pool:acquire(0)
    if again then again:release() end
    return { id = id, barged = again ~= nil, err = err }
  end
  wait_until(function() return rt:stats()[pool_name].in_use == 1 end, 10)
  local c = assert(pool:acquire(10))
  local id = c.id
  -- hold it until thread 1 has tried again (succeeded or timed out)
  wait_until(function()
    local s = rt:stats()[pool_name]
    return s.acquire_total + s.acquire_timeouts_total >= 3
  end, 10)
  c:release()
  return { id = id }
end

-- Runs `count` queries; returns the sum of what the server computed.
function W.hammer(rt, i, pool_name, count)
  local pool = rt:pool(pool_name)
  local sum = 0
  for k = 1, count do
    local rows = assert(pool:query("select $1::int + $2::int as s", i, k))
    sum = sum + tonumber(rows[1].s)
  end
  return sum
end

-- Acquire, one query (the thread sleeps in the kernel meanwhile, so fewer
-- threads compete for the CPU than with no query), release, for `secs`
-- seconds; returns how many times it was served and its longest acquire
-- wait.
function W.contend(rt, i, pool_name, secs)
  local pool = rt:pool(pool_name)
  local served, longest = 0, 0
  local deadline = poolrt.now() + secs
  while poolrt.now() < deadline do
    local t0 = poolrt.now()
    local c = assert(pool:acquire(5))
    longest = math.max(longest, poolrt.now() - t0)
    assert(c:query("select 1"))
    c:release()
    served = served + 1
  end
  return { served = served, longest = longest }
end

function W.fail(rt, i)
  if i == 2 then error("boom in thread " .. i, 0) end
  return i
end

function W.echo(rt, i, ...)
  return { i = i, args = { ... } }
end

return W
