-- Multi-tenant pools: one pool per tenant, apartment's reaper policy, a
-- global connection cap, and coder-style bounded background work.
--
--   build/poolrt --metrics 127.0.0.1:9187 examples/multitenant.lua [seconds]
--   curl -s 127.0.0.1:9187/metrics | grep tenant_
local poolrt = require "poolrt"

local seconds = tonumber(arg[1] or 2)
local rt = poolrt.runtime{
  policy = poolrt.policy_file("tenant_reaper"),   -- idle tenants evicted, LRU over the cap
  max_pools = 20,                                 -- live tenant pools (the policy reads this cap)
  max_connections = 24,                           -- server connections across all of them
  reap_interval = 0.5,
}
local default = rt:pool("default", { max = 4 })    -- never evicted
assert(default:query("select 1"))

local stop, t = poolrt.now() + seconds, 0
while poolrt.now() < stop do
  t = t % 30 + 1                                   -- 30 tenants take turns; 20 pools fit at once
  local tenant = rt:pool(("tenant_%02d"):format(t), { max = 1, acquire_timeout = 1 })
  local rows = assert(tenant:query("select $1::int as tenant", t))
  assert(rows[1].tenant == t)
  poolrt.sleep(0.01)
end

-- Background work on the default pool: skip what needs no connection, run
-- the rest with at most concurrency(pool) = min(5, max(1, 4 // 2)) = 2 at once.
local jobs = {}
for k = 1, 40 do jobs[k] = k end
local res = rt:run_limited(jobs, {
  pool = default,
  skip = function(job) return job % 4 == 0 end,     -- nothing to do for these
  fn = function(conn, job) return conn:query("select pg_sleep(0.01), $1::int", job) end,
})
print(("background: total=%d skipped=%d ran=%d failed=%d in %.2fs"):format(
  res.total, res.skipped, res.ran, res.failed, res.elapsed))

local rs = rt:runtime_stats()
print(("pools live=%d (max %d), connections=%d (max %d), evicted lru=%d idle=%d"):format(
  rs.pools, rs.max_pools, rs.connections, rs.max_connections,
  rs.pools_evicted_total.lru, rs.pools_evicted_total.idle))
print("multitenant demo done")
