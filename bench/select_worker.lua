-- Thread body for bench/select.lua: runs in its own Lua state on its own OS
-- thread (rt:spawn).  Loops pool:query (acquire + query + release) until the
-- shared deadline; returns { ops, errors, first_error, hist, late }.
-- Latencies go into a log histogram (2% wide buckets) so that a thread
-- hands back a few hundred numbers, not one per query.
local poolrt = require "poolrt"
local ffi = require "ffi"

local SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
local LOG_STEP = math.log(1.02)

local M = {}

-- The same cycle straight on the C API through the FFI, without the
-- friendly layer (no Conn object, no rows table): what a leaner binding
-- could reach.  Reads the one value, as a client would.
local function raw_query(p)
  local C = poolrt.C
  local errbuf = ffi.new("char[512]")
  local conn_out = ffi.new("prt_conn*[1]")
  local res_out = ffi.new("prt_result*[1]")
  local params = ffi.new("const char*[1]")
  return function(aid)
    local s = tostring(aid)
    params[0] = s
    if C.prt_acquire(p, -1, conn_out, errbuf, 512) ~= 0 then return nil, ffi.string(errbuf) end
    local c = conn_out[0]
    local rc = C.prt_query(c, SQL, 1, params, 0, res_out, errbuf, 512)
    local v, err
    if rc == 0 then
      v = ffi.string(C.prt_result_value(res_out[0], 0, 0))
      C.prt_result_free(res_out[0])
    else
      err = ffi.string(errbuf)
    end
    C.prt_release(c, rc == -6 and 1 or 0)
    return v, err
  end
end

-- `batch` statements at once with pool:query_batch, each with its own
-- random aid; returns how many succeeded (> 0), or nil, the first error.
local function batch_query(pool, batch, accounts)
  local stmts = {}
  for k = 1, batch do stmts[k] = { SQL, 0 } end
  local random = math.random
  return function()
    for k = 1, batch do stmts[k][2] = random(accounts) end
    local res, errs = pool:query_batch(stmts)
    if not res then return nil, errs end
    local ok, first = 0, nil
    for k = 1, batch do
      if res[k] then ok = ok + 1 else first = first or errs[k] end
    end
    if ok == 0 then return nil, first end
    return ok
  end
end

-- Loops query(aid) until stop_at, counting into r (ops, errors,
-- first_error, hist: shared by the coroutine workers of one state).
local function loop(r, query, stop_at, accounts)
  local now, floor, log, random = poolrt.now, math.floor, math.log, math.random
  local hist = r.hist
  while true do
    local t0 = now()
    if t0 >= stop_at then break end
    local rows, err = query(random(accounts))
    local t1 = now()
    if rows then
      if t1 <= stop_at then
        r.ops = r.ops + (type(rows) == "number" and rows or 1)
        local us = (t1 - t0) * 1e6
        local k = us > 1 and floor(log(us) / LOG_STEP) or 0
        hist[k] = (hist[k] or 0) + 1
      end
    else
      r.errors = r.errors + 1
      r.first_error = r.first_error or err
    end
  end
end

-- pool_opts: the Lua-side options of the pool's handle in this state
-- (decode = false), which the C pool does not carry.  batch > 0: each
-- cycle is one pool:query_batch of that many statements, or, with
-- coworkers, `batch` poolrt.workers coroutines each loop pool:query.
function M.run(rt, i, pool_name, start_at, stop_at, accounts, raw, pool_opts, batch, coworkers)
  local pool = rt:pool(pool_name, pool_opts)
  local query = raw and raw_query(pool._p) or function(aid) return pool:query(SQL, aid) end
  if batch and batch > 0 and not coworkers then query = batch_query(pool, batch, accounts) end
  local now = poolrt.now
  math.randomseed(i * 7919 + math.floor(now() * 1e6) % 1000003)
  local r = { ops = 0, errors = 0, hist = {} }
  r.late = now() - start_at                    -- > 0: this state booted after the start
  if r.late < 0 then poolrt.sleep(-r.late) end -- one sleep: no polling that would burn CPU
  while now() < start_at do end                -- the last few microseconds
  if coworkers then
    assert(poolrt.workers(batch, function(_, ...) loop(...) end, r, query, stop_at, accounts))
  else
    loop(r, query, stop_at, accounts)
  end
  return r
end

return M
