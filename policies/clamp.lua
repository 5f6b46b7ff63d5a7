-- GitLab's pool-size rule: every thread gets a connection plus some headroom
-- (for background work), the user's setting may raise that, and nothing goes
-- above a hard ceiling:  size = clamp(configured, threads + headroom, MAX).
-- Settings are read on every call so an env change or reload is seen.

-- A whole number >= least from the environment; anything else (unset,
-- garbage, negative, inf/nan) falls back to the default.
local function setting(name, default, least)
  local v = tonumber(env(name))
  if v == nil or v ~= v or v < least or v == math.huge then return default end
  return math.floor(v)
end

return {
  size = function(pool)
    local h   = setting("POOLRT_POOL_HEADROOM", 10, 0)
    local MAX = setting("POOLRT_POOL_MAX", 20, 1)        -- a pool of 0 could never serve
    local t, u = pool.threads or 0, pool.configured     -- u = nil: the user gave no max
    local MIN = math.min(t + h, MAX)
    local size = u and math.max(MIN, math.min(u, MAX)) or MIN
    return size, math.min(pool.min_idle or 0, size)
  end,
}
