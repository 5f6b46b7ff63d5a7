-- Thread body for examples/demo.lua: each rt:spawn thread runs this in its
-- own Lua state and returns how many queries it ran.
local M = {}

function M.run(rt, i, pool_name, count)
  local pool = rt:pool(pool_name)
  for k = 1, count do
    local rows = assert(pool:query("select $1::int * $2::int as v", i, k))
    assert(tonumber(rows[1].v) == i * k)
  end
  return count
end

return M
