-- coder's reconciler rule: background jobs may hold at most half the pool
-- (so requests always keep the other half), at least one (so background
-- work never stalls), and never more than 5 however big the pool is.
--   max = 10, 30, 100, 4, 2, 1, 0  ->  5, 5, 5, 2, 1, 1, 1
--
-- "half" selects the C built-in (prt_concurrency_builtin, the rule's one
-- copy; its cap is PRT_CONCURRENCY_CAP).  The same rule as a Lua function:
--
--   concurrency = function(pool) return math.min(5, math.max(1, math.floor(pool.max / 2))) end
return { concurrency = "half" }
