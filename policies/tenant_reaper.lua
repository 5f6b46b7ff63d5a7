-- apartment v4's PoolReaper + PoolManager: one pool per tenant, pools idle
-- for idle_timeout are closed, and the number of tenant pools is capped at
-- max_pools by evicting the least recently used.  A pool is never evicted
-- while it is "default", protected, pinned or has a connection checked out.
-- Settings are read once, when the policy is loaded (reload to change them).
-- The runtime asks `admit` only when its own max_pools are live; keep
-- POOLRT_MAX_POOLS equal to it (a larger value admits pools over the
-- runtime's cap, counted in pools_over_cap_total).

-- A number >= least from the environment; anything else (unset, garbage,
-- too small, inf/nan) falls back to the default.
local function setting(name, default, least)
  local v = tonumber(env(name))
  if v == nil or v ~= v or v < least or v == math.huge then return default end
  return v
end

local idle_timeout  = setting("POOLRT_POOL_IDLE_TIMEOUT", 300, 0)          -- seconds
local max_pools     = math.floor(setting("POOLRT_MAX_POOLS", 20, 1))
local overflow_mode = env("POOLRT_TENANT_OVERFLOW") == "fail" and "fail" or "evict_idle"

-- FFI views carry booleans as 0/1; plain tables may carry true/false/nil.
local function truthy(v) return v ~= nil and v ~= false and v ~= 0 end

local function protected(p)
  return p.name == "default" or truthy(p.protected) or truthy(p.pinned) or (p.in_use or 0) > 0
end

-- Least recently used first; names break ties so the answer is deterministic.
local function older(a, b)
  if a.last_used_at ~= b.last_used_at then return a.last_used_at < b.last_used_at end
  return a.name < b.name
end

return {
  evict = function(pools, now)
    local out, lru, kept = {}, {}, #pools
    for _, p in ipairs(pools) do
      if not protected(p) then
        if now - p.last_used_at >= idle_timeout then
          out[#out + 1], kept = p.name, kept - 1
        else
          lru[#lru + 1] = p
        end
      end
    end
    -- Over the cap: drop the least recently used evictable pools until at
    -- most max_pools remain (or only protected ones are left).
    table.sort(lru, older)
    for i = 1, math.min(#lru, kept - max_pools) do out[#out + 1] = lru[i].name end
    return out
  end,

  admit = function(pools, name)
    if #pools < max_pools then return "allow" end
    for _, p in ipairs(pools) do
      if not protected(p) then return "evict_lru" end
    end
    return "fail"
  end,

  overflow = function(pool, req) return overflow_mode end,

  -- Nothing to do: the host already logs every eviction with its reason.
  on_evict = function(pool_name, reason) end,
}
