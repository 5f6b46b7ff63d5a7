-- poolrt.ngx_thread -- the worker-thread side of resty.poolrt: what its
-- ngx.run_worker_thread calls run, in the thread pool's Lua VMs.  There is
-- no `ngx` there, only poolrt attached to the nginx worker's runtime by
-- address.  resty.poolrt names these functions to ngx.run_worker_thread;
-- nothing else calls them.
--
-- Every entry takes (addr, epoch, name, opts, deadline, waited, ...): the
-- worker's runtime address and epoch, the pool's name and options (so that
-- a pool evicted meanwhile -- an idle tenant -- comes back as configured,
-- whichever VM re-creates it), the monotonic deadline of the caller's wait
-- and what it has waited so far.  Results: true, value | false, err |
-- "raise", message (a programming error, re-raised in the request).  They
-- never raise themselves, so that ok == false from ngx.run_worker_thread
-- always means the thread machinery failed.
local poolrt = require "poolrt"

local M = {}
local fmt, type, pcall, tostring, error = string.format, type, pcall, tostring, error

-- One attached (non-owning) runtime handle per thread VM, rebuilt when the
-- worker hands over a different runtime (address or epoch changed).
local attached_addr, attached_epoch, attached_rt

local function thread_rt(addr, epoch)
  if attached_addr ~= addr or attached_epoch ~= epoch then
    attached_rt = poolrt.attach(addr)
    attached_addr, attached_epoch = addr, epoch
  end
  return attached_rt
end

local function timed_out(name, waited)
  return nil, fmt("pool %q: acquire timed out after %.3fs (waiting for a worker thread)", name, waited)
end

-- Pool `name` of the worker's runtime, or nil, err when the caller's
-- deadline passed while it waited for this thread.
local function thread_pool(addr, epoch, name, opts, deadline, waited)
  local pool = thread_rt(addr, epoch):pool(name, opts)
  if deadline - poolrt.now() <= 0 then return timed_out(name, waited) end
  return pool
end

-- A connection of pool `name` before the monotonic `deadline`, or nil, err.
local function thread_acquire(addr, epoch, name, opts, deadline, waited)
  local pool = thread_rt(addr, epoch):pool(name, opts)
  local left = deadline - poolrt.now()
  if left <= 0 then return timed_out(name, waited) end
  return pool:acquire(left)
end

local function thread_call(fn, ...)
  local ok, res, err = pcall(fn, ...)
  if not ok then return "raise", tostring(res) end
  if res == nil then return false, tostring(err) end
  return true, res
end

-- fn(conn, ...) on a connection of the pool, released afterwards, also
-- when fn raises (re-raised).
local function with_conn(addr, epoch, name, opts, deadline, waited, fn, ...)
  local conn, err = thread_acquire(addr, epoch, name, opts, deadline, waited)
  if not conn then return nil, err end
  local ok, res, ferr = pcall(fn, conn, ...)
  conn:release()
  if not ok then error(res, 0) end
  return res, ferr
end

-- The pool's query methods a request may name.
local QUERY = { query = true, exec_simple = true }

local function query(conn, method, sql, ...)
  if not QUERY[method] then error("resty.poolrt: no query method " .. tostring(method), 0) end
  return conn[method](conn, sql, ...)
end

-- rows of conn:query or conn:exec_simple (`method`) on a connection of the pool.
function M.query(addr, epoch, name, opts, deadline, waited, method, sql, ...)
  return thread_call(with_conn, addr, epoch, name, opts, deadline, waited, query, method, sql, ...)
end

local function run(conn, module, fn, ...)
  local mod = require(module)
  local f = type(mod) == "table" and mod[fn]
  if type(f) ~= "function" then error(fmt("module %q has no function %q", module, fn), 0) end
  local res, err = f(conn, ...)
  if res == nil and err == nil then return true end
  return res, err
end

-- require(module)[fn](conn, ...) with a connection of the pool.
function M.run(addr, epoch, name, opts, deadline, waited, module, fn, ...)
  return thread_call(with_conn, addr, epoch, name, opts, deadline, waited, run, module, fn, ...)
end

-- A batch (pool:query_batch); its two results cross as one table.
local function batch(addr, epoch, name, opts, deadline, waited, stmts, bopts)
  local pool, err = thread_pool(addr, epoch, name, opts, deadline, waited)
  if not pool then return nil, err end
  local results, errs = pool:query_batch(stmts, bopts)
  if not results then return nil, errs end
  return { results = results, errs = errs }
end

function M.batch(...) return thread_call(batch, ...) end

-- Listeners: the C listener belongs to the request's Lua object in the
-- worker; thread VMs reach it by its address.  A wait's outcome comes back
-- as a table, so that "timeout" keeps its detail.
local function listen_open(addr, epoch, name, opts, _, _, channels)
  local l, err = thread_rt(addr, epoch):pool(name, opts):listen(channels)
  if not l then return nil, err end
  return require("poolrt.listen").disown(l)
end

local function listen_wait(_, _, _, _, deadline, _, laddr)
  local left = deadline - poolrt.now()
  local n, err, why = require("poolrt.listen").attach(laddr):wait(left > 0 and left or 0)
  return n or { err = err, why = why }
end

local function listen_close(_, _, _, _, _, _, laddr)
  require("poolrt.listen").attach(laddr):close()
  return true
end

function M.listen_open(...) return thread_call(listen_open, ...) end
function M.listen_wait(...) return thread_call(listen_wait, ...) end
function M.listen_close(...) return thread_call(listen_close, ...) end

return M
