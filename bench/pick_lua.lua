-- A Lua `pick` with the built-in mru's rule, for the pool-only
-- microbenchmark: idle is oldest-released first, so the most recently
-- released connection is the last one.
return { pick = function(idle, pool) return pool.idle end }
