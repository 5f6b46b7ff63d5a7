-- apartment v4's PoolReaper + PoolManager: one pool per tenant, a pool
-- unused for the idle timeout is closed, and the number of tenant pools is
-- capped at the runtime's max_pools by evicting the least recently used.
--
-- The limits are the runtime's own, read from the views on every call
-- (poolrt.runtime{ max_pools = .., pool_idle_timeout = .. }), and which
-- pools may go at all is the runtime's rule, p.evictable: not "default",
-- protected or pinned, nothing in use, opening or waited for.  Only when the
-- runtime evicts no idle pools (pool_idle_timeout = 0, its default) does
-- POOLRT_POOL_IDLE_TIMEOUT (default 300 s, read at load) set the timeout.
--
-- evict, in order:  1. evictable pools idle for the timeout go;
--                   2. over max_pools, the least recently used evictable
--                      pools go until max_pools remain (or none can).
-- admit:  under max_pools allow; at it evict the LRU if any pool is
--         evictable, else fail.

-- A number >= least from the environment; anything else (unset, garbage,
-- too small, inf/nan) falls back to the default.
local function setting(name, default, least)
  local v = tonumber(env(name))
  if v == nil or v ~= v or v < least or v == math.huge then return default end
  return v
end

local own_idle_timeout = setting("POOLRT_POOL_IDLE_TIMEOUT", 300, 0)          -- seconds
local overflow_mode    = env("POOLRT_TENANT_OVERFLOW") == "fail" and "fail" or "evict_idle"

local function idle_timeout(pools)
  local t = pools.pool_idle_timeout
  return (t and t > 0) and t or own_idle_timeout
end

-- Least recently used first; names break ties so the answer is deterministic.
local function older(a, b)
  if a.last_used_at ~= b.last_used_at then return a.last_used_at < b.last_used_at end
  return a.name < b.name
end

return {
  evict = function(pools, now)
    local timeout, out, lru, kept = idle_timeout(pools), {}, {}, #pools
    for _, p in ipairs(pools) do
      if p.evictable then
        if now - p.last_used_at >= timeout then                 -- rule 1
          out[#out + 1], kept = p.name, kept - 1
        else
          lru[#lru + 1] = p
        end
      end
    end
    if pools.max_pools > 0 then                                  -- rule 2 (0: no cap)
      table.sort(lru, older)
      for i = 1, math.min(#lru, kept - pools.max_pools) do out[#out + 1] = lru[i].name end
    end
    return out
  end,

  admit = function(pools, name)
    if pools.max_pools == 0 or #pools < pools.max_pools then return "allow" end
    for _, p in ipairs(pools) do
      if p.evictable then return "evict_lru" end
    end
    return "fail"
  end,

  overflow = function(pool, req) return overflow_mode end,

  -- Nothing to do: the host already logs every eviction with its reason.
  on_evict = function(pool_name, reason) end,
}
