-- Two read replicas behind one pool, light load: where do the queries go?
-- (golang/go#68539)
--
--   build/poolrt sim policies/mru.lua examples/sim/replicas.lua \
--       --compare policies/lru.lua policies/random.lua
--
-- Compare: policies/mru.lua (database/sql's default), policies/lru.lua,
-- policies/random.lua.
--
-- A start-up burst opens 10 connections, 5 on each replica (a new
-- connection goes to the endpoint with the fewest of the pool's).  After
-- it, well under one query is in flight at a time.  mru hands out the
-- connection released last, so the one or two connections on top serve
-- nearly everything, and how the replicas split the load is luck: with
-- seed 1 `endpoint max/min` is 1.55; over seeds 1-10 it ranges from 1.55
-- to ~1200 (every query on one replica), median ~2.  lru rotates through
-- every idle connection, random picks any: 1.00 and 1.02.
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
