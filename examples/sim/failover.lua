-- A primary and two standbys; one standby falls behind, then a failover.
-- (issue 21: clusters, docs/clusters.md)
--
--   build/poolrt sim policies/default.lua examples/sim/failover.lua \
--       --compare policies/replicas.lua
--
-- Compare: policies/default.lua (target_session_attrs alone) and
-- policies/replicas.lua (max_lag = 1 s: a standby further behind serves
-- last and its connections are retired on release; the endpoint hook
-- prefers a standby that keeps up).
--
-- Pool "app" with reads = 0.8 is rt:cluster's two pools: "app"
-- (read-write: writes) gets 20% of the acquires and "app.read"
-- (prefer-standby: reads) 80%.  standby_b's replay falls 3 s behind at
-- t = 20; at t = 40 standby_a is promoted, and the old primary comes back
-- as a standby (its connections break).  default.lua keeps sending reads
-- to standby_b while it lags: about half the reads from t = 20 on are
-- stale; replicas.lua moves them off it within a sample (2 s) and a
-- release.  Around the promotion, writes held on the old primary fail
-- and the first connects to it are refused as a standby; writes then go
-- to standby_a under both policies.
return {
  duration = 60,
  runtime = { max_connections = 40, server_sample_interval = 2 },
  endpoints = {
    { name = "primary", role = "primary", connect_ms = 3, query_ms = { dist = "exp", mean = 1 },
      outages = { { at = 38, seconds = 5 } } },               -- fails at 38, back at 43 as a standby
    { name = "standby_a", role = "standby", connect_ms = 3, query_ms = { dist = "exp", mean = 1 } },
    { name = "standby_b", role = "standby", connect_ms = 3, query_ms = { dist = "exp", mean = 1 },
      lag_ms = { { 0, 0 }, { 20, 3000 } } },                  -- 3 s behind from t = 20
  },
  promote = { { at = 40, endpoint = "standby_a" } },
  pools = {
    { name = "app", reads = 0.8,                               -- "app" writes, "app.read" reads
      opts = { max = 8, acquire_timeout = 2 },
      rate = 400,                                              -- acquires per second, both pools
      hold_ms = { dist = "lognormal", median = 2, p99 = 20 },
      statements = 2 },
  },
}
