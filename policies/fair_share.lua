-- One server, many processes: each member of a fleet (runtime option
-- `fleet`) takes an equal share of what the server has left for the fleet.
--   share = floor((max_connections - reserved - other_backends - headroom) / fleet_members)
-- at most this runtime's configured max_connections; other backends are
-- everyone else's (psql sessions, other apps).  The member's sampler holds
-- one of its share, its pools the rest (at least 1).  Before the first
-- sample the pools take 1; they grow at most 4x per sample (slow start:
-- members that start together see each other before they overshoot) and
-- shrink at once.  POOLRT_FLEET_HEADROOM (default 2) keeps a few server
-- connections free for admin sessions and for members that are starting.

local function setting(name, default)
  local v = tonumber(env(name))
  if v == nil or v ~= v or v < 0 or v == math.huge then return default end
  return math.floor(v)
end

return {
  budget = function(server, rt)
    if server.sampled_at == 0 then return 1 end
    local headroom = setting("POOLRT_FLEET_HEADROOM", 2)
    local others = server.backends - server.fleet_backends
    local free = server.max_connections - server.reserved - others - headroom
    local share = math.floor(free / math.max(server.fleet_members, 1)) - 1   -- 1: the sampler's
    if rt.max_connections > 0 then share = math.min(share, rt.max_connections) end
    local current = rt.budget > 0 and rt.budget or share
    return math.max(1, math.min(share, 4 * current))
  end,
}
