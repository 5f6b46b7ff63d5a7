-- What the step budget costs a hot hook: the same LRU scan over 16 FFI
-- connection views, compiled by the JIT, with and without the budget checks
-- that src/policy_boot.lua inserts.  Run: luajit bench/tick_cost.lua
package.path = "lua/?.lua;" .. package.path
local ffi = require "ffi"
local B = dofile "src/policy_boot.lua" -- compiled into libpoolrt, not a module
local h = assert(io.open("src/policy_views.h")):read("*a") -- the views, as C declares them
ffi.cdef(assert(h:match("/%* PRT_VIEWS_BEGIN %*/(.-)/%* PRT_VIEWS_END %*/")))
local ctx = ffi.new("prt_hook_ctx")
for i = 1, 16 do ctx.idle.v[i].returned_at = 1000 + (i * 7) % 16 end
ctx.pool.idle = 16

local src = [[return { pick = function(idle, pool)
  local best = 1
  for i = 2, pool.idle do
    if idle[i].returned_at < idle[best].returned_at then best = i end
  end
  return best
end }]]

local plain = assert(loadstring(src))().pick
local function tick() local b = ctx.budget - 1 ctx.budget = b if b < 0 then error("budget", 2) end end
local checked = assert(B.load(src, "=bench", tick)).pick

local idle, pool, N = ctx.idle.v, ctx.pool, 2e7
local function time(f)
  local t0 = os.clock()
  local s = 0
  for _ = 1, N do ctx.budget = 1e6; s = s + f(idle, pool) end
  return (os.clock() - t0) * 1e9 / N, s
end
time(plain) time(checked)
local a, b = time(plain), time(checked)
print(("| LRU scan of 16 views, JIT on | %.1f ns plain | %.1f ns with budget checks | %.2fx |"):format(a, b, b / a))
jit.off()
jit.flush()
N = 2e6
local c, d = time(plain), time(checked)
print(("| LRU scan of 16 views, JIT off | %.1f ns plain | %.1f ns with budget checks | %.2fx |"):format(c, d, d / c))
