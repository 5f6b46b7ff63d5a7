-- apartment: a pool per tenant, 500 tenants, at most 20 pools live.
--
--   build/poolrt sim policies/default.lua examples/sim/tenants.lua \
--       --compare policies/tenant_reaper.lua --plot tenants.png
--
-- Compare: policies/default.lua (at max_pools the least recently used pool
-- makes room; pools idle for the runtime's pool_idle_timeout go) and
-- policies/tenant_reaper.lua (apartment's PoolReaper + PoolManager: idle
-- pools go, LRU eviction over max_pools in the reap cycle, a full runtime
-- evicts idle connections of other pools).
--
-- Tenant popularity is Zipf: tenant_1 gets the most traffic, the long tail
-- a request now and then, so tail tenants keep evicting each other's pools
-- (pools evicted / recreated) and pay a connect on nearly every request.
return {
  duration = 300,
  runtime = { max_pools = 20, max_connections = 16, pool_idle_timeout = 60, reap_interval = 1 },
  endpoints = { { name = "primary", connect_ms = 5, query_ms = { dist = "exp", mean = 1 } } },
  tenants = { count = 500, prefix = "tenant_", popularity = "zipf",
              opts = { max = 2, acquire_timeout = 2 },
              rate = 100,                                   -- acquires per second, all tenants
              hold_ms = { dist = "exp", mean = 3 }, statements = 1 },
}
