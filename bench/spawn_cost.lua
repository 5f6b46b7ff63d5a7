-- bench/spawn_cost.lua -- what booting rt:spawn's Lua states costs: N
-- threads that each create a state, require poolrt and call poolrt.now,
-- nothing else.  Run it under GNU time for the CPU (bench/RESULTS-cpu.md):
--
--   /usr/bin/time -f '%U %S' build/poolrt bench/spawn_cost.lua [N]
local poolrt = require "poolrt"
local n = tonumber((...)) or 128
local rt = poolrt.runtime{ reap_interval = 0 }
assert(rt:spawn(n, "poolrt", "now"))
rt:close()
