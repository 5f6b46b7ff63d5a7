-- Threads of a fleet member process (spec/fleet_spec.lua): each queries
-- pool "default" until `stop_at`, holding its connection for a while per
-- query so that the member really uses its budget.
local W = {}

function W.query(rt, _, stop_at)
  local poolrt = require "poolrt"
  local pool = rt:pool("default")
  local n, errors = 0, {}
  while poolrt.now() < stop_at do
    local rows, err = pool:query("select pg_sleep(0.02)")
    if rows then n = n + 1 else errors[#errors + 1] = err end
  end
  return { n = n, errors = errors }
end

return W
