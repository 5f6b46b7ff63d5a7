-- coder's reconciler rule: background jobs may hold at most half the pool
-- (so requests always keep the other half), at least one (so background
-- work never stalls), and never more than CAP however big the pool is.
--   max = 10, 30, 100, 4, 2, 1, 0  ->  5, 5, 5, 2, 1, 1, 1
local CAP = 5

return {
  concurrency = function(pool)
    return math.min(CAP, math.max(1, math.floor(pool.max / 2)))
  end,
}
