-- A policy for examples/sim/background.lua to compare against: background
-- jobs may hold every connection of the pool (no share kept for requests).
-- Not a shipped policy: this is the behaviour coder's rule exists to avoid.
return {
  concurrency = function(pool) return pool.max end,
}
