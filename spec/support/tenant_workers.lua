-- Thread bodies for spec/multitenant_spec.lua.
local poolrt = require "poolrt"
local W = {}

local wait_until = require("spec.helper").wait_until

-- Every thread asks for the same new pool at once and runs one query.
function W.same_pool(rt, i, name)
  local pool = rt:pool(name, { max = 8 })
  assert(pool:query("select 1"))
  return rt:runtime_stats().pools
end

-- Thread 1 waits for a connection of pool b while the global cap is used
-- up by pool a's idle connections; thread 2 evicts pool a once 1 waits.
function W.global_wait(rt, i)
  if i == 1 then
    local c, err = rt:pool("b"):acquire(5)
    if not c then return err end
    c:release()
    return "got"
  end
  wait_until(function() return (rt:stats().b or {}).waiting == 1 end, 5)
  assert(rt:evict("a"))
  return "evicted"
end

-- Background job for run_limited: sleeps on the server under a marker the
-- monitor can count in pg_stat_activity.
function W.job(conn, job)
  assert(conn:query("select pg_sleep(0.04) /* bg_job_marker */"))
  return true
end

-- Thread 1 runs the background batch; threads 2..n-1 run foreground
-- queries with a short acquire timeout; thread n samples how many
-- background jobs are active on the server.
function W.background(rt, i, n, jobs)
  local pool = rt:pool("work")
  local done = function() return rt:stats().work.acquire_total >= 1000000 end
  if i == 1 then
    local res = rt:run_limited(jobs, { pool = "work", fn = "spec.support.tenant_workers.job",
                                       skip = function(job) return job % 2 == 0 end })
    rt:pool("finished", { max = 1 }) -- tells the others we are done
    return res
  end
  local finished = function() return rt:stats().finished ~= nil end
  if i == n then
    local admin = rt:pool("monitor", { max = 1, prepare = false })
    local peak = 0
    repeat
      local rows = assert(admin:query("select count(*) as n from pg_stat_activity where state = 'active' "
                                      .. "and query like '%bg_job_marker%' and pid <> pg_backend_pid()"))
      peak = math.max(peak, tonumber(rows[1].n))
      poolrt.sleep(0.005)
    until finished()
    return { peak = peak }
  end
  local failures, queries = {}, 0
  repeat
    local rows, err = pool:query("select 1 as x")
    queries = queries + 1
    if not rows then failures[#failures + 1] = err end
    poolrt.sleep(0.002)
  until finished() or done()
  return { queries = queries, failures = failures }
end

return W
