-- coder: background jobs share the pool with API requests.
--
--   build/poolrt sim policies/background_share.lua examples/sim/background.lua \
--       --compare examples/sim/greedy_background.lua --plot background.png
--
-- Compare: policies/background_share.lua (background concurrency =
-- min(5, max(1, max // 2)): half of this pool of 10) and
-- examples/sim/greedy_background.lua (background jobs may take the whole
-- pool).
--
-- API requests arrive steadily on pool "app".  Every minute the
-- reconciler queues 200 slow background jobs on the same pool.  Greedy,
-- they hold all 10 connections and requests wait behind them (wait p99 in
-- seconds, timeouts); shared, requests keep 5 connections and barely wait,
-- while the jobs take a little longer to drain.
return {
  duration = 300,
  endpoints = { { name = "primary", connect_ms = 3, query_ms = { dist = "exp", mean = 1 } } },
  pools = {
    { name = "app", opts = { max = 10, acquire_timeout = 2 },
      rate = 200, hold_ms = { dist = "lognormal", median = 3, p99 = 20 }, statements = 1 },
    { name = "app", background = true,                      -- same pool, background work
      hold_ms = { dist = "uniform", min = 100, max = 300 }, statements = 3,
      bursts = { { at = 30, n = 200 }, { at = 90, n = 200 }, { at = 150, n = 200 },
                 { at = 210, n = 200 }, { at = 270, n = 200 } } },
  },
}
