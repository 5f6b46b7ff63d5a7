-- GitLab's pool-size clamp under a thread spike.
--
--   build/poolrt sim policies/default.lua examples/sim/clamp.lua \
--       --compare policies/clamp.lua --plot clamp.png
--
-- Compare: policies/default.lua (the configured max, 5) and
-- policies/clamp.lua (size = clamp(configured, threads + headroom, MAX):
-- min(25 + 10, 20) = 20 here).
--
-- 25 threads share the pool; the configured max of 5 is a leftover from a
-- smaller deployment.  Normal traffic fits in 5.  At t = 60 every thread
-- hits the database at once, and from t = 120 to 180 traffic runs at four
-- times its normal rate: with 5 connections callers queue for seconds and
-- time out; clamped to 20 they barely wait.
return {
  duration = 240,
  pools = {
    { name = "app", threads = 25, opts = { max = 5, acquire_timeout = 2 },
      rate = { { 0, 150 }, { 120, 600 }, { 180, 150 } },
      hold_ms = { dist = "lognormal", median = 8, p99 = 60 },
      statements = 1,
      bursts = { { at = 60, n = 25 } } },
  },
  endpoints = { { name = "primary", connect_ms = 3, query_ms = { dist = "exp", mean = 2 } } },
}
