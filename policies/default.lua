-- What a pool does when no policy file is given, hook by hook; running this
-- file is running without one (spec/policy_engine_spec.lua compares the two).
--
-- pick = "mru": database/sql's choice.  The most recently released
--   connection has the warmest backend caches, and the least recently used
--   ones sit idle long enough for the idle timeout to close them, so the pool
--   shrinks after a burst.  (Behind a load balancer prefer lru.lua.)
-- overflow = "wait": a full pool queues the caller (FIFO) for the request's
--   own timeout rather than failing fast or opening connections past max.
-- admit = "evict_lru": at max_pools, the least recently used evictable pool
--   makes room; when none is evictable the runtime's pools_overflow decides
--   (fail, or allow over the cap).
-- evict: pools unused for the runtime's pool_idle_timeout go, if evictable
--   (0, the default, evicts none).
-- concurrency = "half": coder's rule (background_share.lua has it in
--   prose): half the pool, at least 1, at most 5, so background jobs can
--   never take every connection from requests.
--
-- Left to the built-in, which a hook could not restate exactly:
-- size: the pool's configured max (10 when none) and min_idle.  A view shows
--   the live max and min_idle, which differ from the configured ones after a
--   reload from a policy that resized the pool.
-- reap: connections idle longer than the pool's idle_timeout close, keeping
--   min_idle; the view does not carry idle_timeout.
-- on_evict: nothing (the host logs every eviction with its reason).

return {
  pick = "mru",

  overflow = "wait",

  admit = "evict_lru",

  evict = function(pools, now)
    local out, timeout = {}, pools.pool_idle_timeout
    if timeout == 0 then return out end
    for _, p in ipairs(pools) do
      if p.evictable and now - p.last_used_at >= timeout then out[#out + 1] = p.name end
    end
    return out
  end,

  concurrency = "half",
}
