-- bench/query_loop.lua -- N pool:query calls of pgbench's -S query on one
-- connection in the host's own state, for callgrind: two runs of N1 and N2
-- calls, (Ir(N2) - Ir(N1)) / (N2 - N1), give the instructions a query costs
-- the Lua host in user space, start-up cancelled (bench/cpu_cost.sh; the
-- C driver's counterpart is `driver -w 1 -m 1 -n N -q prepared`).
--
--   build/poolrt bench/query_loop.lua N [SCALE]
local poolrt = require "poolrt"

local n, scale = tonumber((...)) or 10000, tonumber((select(2, ...))) or 10
local rt = poolrt.runtime{ reap_interval = 0 }
local pool = rt:pool("query_loop", { max = 1 })
local SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
local sum = 0
for i = 1, n do
  local rows = assert(pool:query(SQL, (i * 7919) % (100000 * scale) + 1))
  sum = sum + rows[1].abalance -- read the value, as a client would
end
rt:close()
print(("queries=%d sum=%d"):format(n, sum))
