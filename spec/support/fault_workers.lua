-- Thread bodies for spec/fault_spec.lua.
local poolrt = require "poolrt"
local W = {}

-- Threads 1..n-1 query pool "restart" until `stop_at`, logging each call's
-- outcome and duration; thread n stops the server at `down_at`, and starts
-- it again `outage` seconds later, returning when it was back.
function W.restart(rt, i, n, server_dir, down_at, outage, stop_at)
  if i == n then
    package.path = "./?.lua;" .. package.path
    local S = require "spec.support.pgserver"
    local env = {}
    for line in io.lines(server_dir .. "/env") do
      local k, v = line:match("^export ([%w_]+)='(.*)'$")
      if k then env[k] = v end
    end
    local srv = setmetatable(env, S)
    srv.dir = server_dir
    while poolrt.now() < down_at do poolrt.sleep(0.005) end
    srv:stop_server()
    local down = poolrt.now()
    poolrt.sleep(outage) -- the outage itself is what is under test
    srv:start_server()
    return { down = down, up = poolrt.now() }
  end
  local pool = rt:pool("restart")
  local log = {}
  while poolrt.now() < stop_at do
    local t0 = poolrt.now()
    local rows, err = pool:query("select 1 as x")
    log[#log + 1] = { t = t0, took = poolrt.now() - t0, ok = rows ~= nil, err = err }
    poolrt.sleep(0.005)
  end
  return log
end

-- 200 callers through a pool of 10 on a server that allows 20.
function W.exhaust(rt, i, count)
  local pool = rt:pool("exhaust")
  local errors = {}
  for _ = 1, count do
    local rows, err = pool:query("select pg_sleep(0.001)")
    if not rows then errors[#errors + 1] = err end
  end
  return errors
end

return W
