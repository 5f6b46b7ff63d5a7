-- Two read replicas behind one pool, light load: where do the queries go?
-- (golang/go#68539)
--
--   build/poolrt sim policies/mru.lua examples/sim/replicas.lua \
--       --compare policies/lru.lua policies/random.lua --plot replicas.png
--
-- Compare: policies/mru.lua (database/sql's default), policies/lru.lua,
-- policies/random.lua.
--
-- A start-up burst opens connections on both replicas (connections go to
-- the endpoints in turn).  After it, ~1 query is in flight at a time.  mru
-- hands out the connection released last, so the same one or two
-- connections serve nearly everything and their replica gets nearly all
-- the queries: `endpoint max/min` far above 1.  lru rotates through every
-- idle connection, random picks any: both near 1.
return {
  duration = 300,
  endpoints = {
    { name = "replica_a", connect_ms = 3, query_ms = { dist = "exp", mean = 1 } },
    { name = "replica_b", connect_ms = 3, query_ms = { dist = "exp", mean = 1 } },
  },
  pools = {
    { name = "app", opts = { max = 10 },
      rate = 20,                                              -- acquires per second
      hold_ms = { dist = "lognormal", median = 2, p99 = 20 }, -- client time per acquire
      statements = 2,                                         -- each a query_ms on its replica
      bursts = { { at = 0, n = 10 } } },                      -- start-up: opens 10 connections
  },
}
