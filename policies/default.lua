-- What a pool does when no policy file is given.
--
-- pick = "mru": database/sql's choice.  The most recently released
--   connection has the warmest backend caches, and the least recently used
--   ones sit idle long enough for the idle timeout to close them, so the pool
--   shrinks after a burst.  (Behind a load balancer prefer lru.lua.)
-- size: exactly what the user configured; no policy second-guesses it.
-- overflow = "wait": a full pool queues the caller (FIFO) for the request's
--   own timeout rather than failing fast or opening connections past max.
-- concurrency: background_share.lua's rule, restated because the sandbox
--   has no require: half the pool, at least 1, at most 5, so background
--   jobs can never take every connection from requests.

return {
  pick = "mru",

  size = function(pool)
    local max = pool.configured > 0 and pool.configured or pool.max
    return max, pool.min_idle
  end,

  overflow = function(pool, req) return "wait" end,

  concurrency = function(pool)
    return math.min(5, math.max(1, math.floor(pool.max / 2)))
  end,
}
