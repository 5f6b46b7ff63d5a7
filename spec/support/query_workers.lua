-- rt:spawn entry points for spec/query_spec.lua: typed rows built in a
-- thread's own Lua state must reach the host unchanged.
local M = {}

-- One row holding every decoded type (no NaN: it never compares equal).
M.SQL = [[select 7::int4 as i, 9007199254740993::int8 as big, 1.25::numeric as dec, true as b,
  '{"a":[1,null,{"b":[]}]}'::jsonb as j, '\x00ff'::bytea as raw, array[1, null, 3] as arr,
  array['a,b', null] as strs, '{{1,2},{3,4}}'::int[] as grid, null::int as missing]]

function M.typed_row(rt, _, pool_name)
  return assert(rt:pool(pool_name, { max = 1 }):query(M.SQL))[1]
end

return M
