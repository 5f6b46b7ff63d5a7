-- Uniformly random idle connection: spreads load like LRU without the
-- strict rotation, so no connection is systematically favoured or starved.
-- Lua equivalent: pick = function(idle, pool) return math.random(pool.idle) end
return { pick = "random" }
