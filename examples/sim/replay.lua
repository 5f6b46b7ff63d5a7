-- Yesterday's traffic against a new policy: replay a recorded trace.
--
--   build/poolrt sim policies/default.lua examples/sim/replay.lua --compare policies/clamp.lua
--
-- Compare: policies/default.lua (the pool's configured max, 4) and
-- policies/clamp.lua (size = clamp(configured, threads + headroom, 20):
-- 10 here).
--
-- replay.trace is 1,200 acquires of 6 threads sharing a pool of 4, recorded
-- from a real PostgreSQL by examples/sim/record_app.lua (its header has the
-- command).  Each line replays as one acquire at its recorded time holding
-- the connection as long as it was held then.  With 4 connections the
-- start-up rush queues a few callers (wait p99 ~2 ms); clamp.lua's bigger
-- pool opens the 2 more the 6 threads can use, nobody waits, and the idle
-- timeout closes the extra ones again once the rush is over.
return {
  trace = { file = "replay.trace", opts = { max = 4, acquire_timeout = 2, idle_timeout = 1 } },
  endpoints = { { name = "primary", connect_ms = 3 } },
  runtime = { reap_interval = 0.25 },
}
