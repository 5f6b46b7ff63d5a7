-- poolrt -- the Lua API of the poolrt runtime, over LuaJIT's FFI.
--
--   local poolrt = require "poolrt"
--   local rt   = poolrt.runtime{ conninfo = "host=127.0.0.1 dbname=app" }
--   local pool = rt:pool("app", { max = 10 })
--   local rows = pool:query("select $1::int + 1 as n", 41)   -- rows[1].n == 42
--
-- Expected failures (timeouts, refused connects, query errors) return
-- nil, err with the pool's state in err; programming errors raise.
-- Values come back typed by column type (poolrt/decode.lua has the table;
-- pool option decode = false keeps PostgreSQL's text), SQL NULL as nil (or
-- the pool's `null` option, e.g. poolrt.null, to keep the key).
local ffi = require "ffi"
require "poolrt.cdef"
local I = require "poolrt.internal" -- filled below (see its header)
local D = require "poolrt.decode"
-- Transactions, LISTEN and COPY load on first use: every rt:spawn thread
-- requires this module in a state of its own, and most never use them.
local function TX() return require "poolrt.tx" end
local function LISTEN() return require "poolrt.listen" end
local function COPY() return require "poolrt.copy" end
local function WORKERS() return require "poolrt.workers" end
local running = coroutine.running

local C
do
  -- Inside the `poolrt` host the core is linked in and exported.  Elsewhere
  -- (plain luajit, nginx) load libpoolrt.so globally, so that the Lua states
  -- of spawned threads find the same symbols in ffi.C.
  local linked = pcall(function() return ffi.C.prt_version end)
  if linked then
    C = ffi.C
  else
    local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "."
    local candidates = { here .. "/../build/libpoolrt.so", here .. "/../../../lib/libpoolrt.so", "libpoolrt.so" }
    if os.getenv("POOLRT_LIB") then table.insert(candidates, 1, os.getenv("POOLRT_LIB")) end
    local errs = {}
    for _, path in ipairs(candidates) do
      local ok, lib = pcall(ffi.load, path, true)
      if ok then C = lib; break end
      errs[#errs + 1] = tostring(lib)
    end
    if not C then
      error("poolrt: cannot load libpoolrt.so (set POOLRT_LIB): " .. table.concat(errs, "; "), 0)
    end
  end
end

local M = { VERSION = ffi.string(C.prt_version()), C = C }
I.C = C
-- Coroutines that are poolrt.workers workers (poolrt/workers.lua): their
-- pool:query statements wait for a round of the worker loop.  pool:query
-- asks coroutine.running() only while a worker loop runs in this state
-- (`looping` > 0): the call stops LuaJIT compiling pool:query's caller,
-- which made every query 3.5x the user-space instructions (callgrind,
-- bench/query_loop.lua).
local workers = setmetatable({}, { __mode = "k" })
local looping = 0
I.workers = workers
function I.workers_looping(d) looping = looping + d end
local function in_worker() return looping > 0 and workers[running()] == true end
-- Facts owned by C: the acquire-wait histogram's upper bounds (seconds,
-- math.huge last) and the policy hook names, in the order of
-- prt_policy_stats' arrays.
M.WAIT_BOUNDS, M.HOOKS = {}, {}
for i = 0, C.PRT_WAIT_BUCKETS - 1 do M.WAIT_BOUNDS[i + 1] = C.prt_wait_bucket_bound(i) end
for i = 0, C.PRT_NHOOKS - 1 do M.HOOKS[i + 1] = ffi.string(C.prt_policy_hook_name(i)) end
M.null = setmetatable({}, { __tostring = function() return "poolrt.null" end })

local ERRLEN = 512
local errbuf = ffi.new("char[?]", ERRLEN)
local MAXPARAMS = 256
local parambuf = ffi.new("const char*[?]", MAXPARAMS)
local conn_out = ffi.new("prt_conn*[1]")
local res_out = ffi.new("prt_result*[1]")

local function lasterr() return ffi.string(errbuf) end

function M.now() return C.prt_now() end
-- Sleeps s seconds; in a poolrt.workers worker, lets the other workers run meanwhile.
function M.sleep(s)
  if in_worker() then return WORKERS().sleep(s) end
  C.prt_sleep(s)
end

-- Log levels by name: C's list (prt_log_level_name / prt_log_level_parse).
local function level_of(name)
  local n = type(name) == "string" and C.prt_log_level_parse(name) or C.PRT_EINVAL
  if n == C.PRT_EINVAL then
    local names = {}
    for l = C.PRT_LOG_OFF, C.PRT_LOG_DEBUG do names[#names + 1] = ffi.string(C.prt_log_level_name(l)) end
    error("poolrt: unknown log level " .. tostring(name) .. " (" .. table.concat(names, ", ") .. ")", 3)
  end
  return n
end
function M.log(level, msg) C.prt_log(level_of(level), tostring(msg)) end
function M.set_log_level(level) C.prt_log_set_level(level_of(level)) end
function M.log_level() return ffi.string(C.prt_log_level_name(C.prt_log_get_level())) end

local serialize, deserialize = I.serialize, I.deserialize


---------------------------------------------------------------------------
-- Connections
---------------------------------------------------------------------------
local Conn = {}
Conn.__index = Conn

local function gc_release(c)
  C.prt_log(C.PRT_LOG_WARN, "a connection was never released; the garbage collector returned it (conn id "
               .. tonumber(C.prt_conn_id(c)) .. ")")
  C.prt_release(c, 0)
end

local function wrap_conn(pool, c)
  return setmetatable({ _c = ffi.gc(c, gc_release), pool = pool, id = tonumber(C.prt_conn_id(c)) }, Conn)
end

-- Lua arrays go as PostgreSQL array literals, so `$1::int[]` and
-- `id = any($1)` need no further cast.
local function to_param(v)
  local t = type(v)
  if t == "string" then return v end
  if D.is_null(v, M.null) then return nil end
  if t == "boolean" then return v and "t" or "f" end
  if t == "number" then return D.number(v) end
  if t == "table" then
    local s, err = D.array(v, M.null)
    if s then return s end
    error("poolrt: query parameter: " .. err, 4)
  end
  error("poolrt: query parameter of type " .. t .. " (want string, number, boolean, nil or an array)", 4)
end

-- Rows of result r for pool p: typed per column unless p has decode = false.
local function rows_of(r, p) return D.rows(C, r, p._null, p._decode) end

-- Fills parambuf with the query's parameters; the strings stay referenced
-- from `keep` until the next call (one state runs one query at a time).
-- Raises on a parameter that cannot be sent, before any connection is held.
local keep = {}
local function set_params(sql, ...)
  if type(sql) ~= "string" then error("poolrt: sql must be a string", 3) end
  local n = select("#", ...)
  if n > MAXPARAMS then error("poolrt: more than " .. MAXPARAMS .. " parameters", 3) end
  for i = 1, n do
    local s = to_param((select(i, ...)))
    keep[i] = s
    parambuf[i - 1] = s
  end
  return n
end

-- The rows of result r for pool p, r freed either way: true, rows, or
-- false and the error decoding them raised.
local function take_rows(r, p)
  local ok, rows = pcall(rows_of, r, p)
  C.prt_result_free(r)
  return ok, rows
end

-- The rows of the result a query left in res_out, re-raising a decoding error.
local function result_rows(p)
  local ok, rows = take_rows(res_out[0], p)
  if not ok then error(rows, 0) end
  return rows
end

-- Runs the query on connection c; returns rows, or nil, err, broken.
local function exec(c, flags, p, sql, n)
  local rc = C.prt_query(c, sql, n, parambuf, flags, res_out, errbuf, ERRLEN)
  if rc ~= 0 then return nil, lasterr(), rc == C.PRT_EBROKEN end
  return result_rows(p)
end

-- Runs sql with parameters $1.. on this connection: rows, or nil, err.
local function run(self, flags, sql, ...)
  local c = self._c
  if not c then error("poolrt: query on a released connection", 3) end
  local n = set_params(sql, ...)
  local rows, err, broken = exec(c, flags, self.pool, sql, n)
  if broken then self.broken = true end
  return rows, err
end

function Conn:query(sql, ...) return run(self, self.pool._qflags, sql, ...) end
function Conn:exec_simple(sql, ...) return run(self, C.PRT_Q_UNPREPARED, sql, ...) end

function Conn:backend_pid() return C.prt_conn_backend_pid(self._c) end
-- The SQLSTATE of the last query's error on this connection ("" after a success).
function Conn:sqlstate() return ffi.string(C.prt_conn_sqlstate(self._c)) end
-- fn(conn, attempt) in a transaction on this connection (poolrt/tx.lua).
function Conn:transaction(fn, opts) return TX().run(self, fn, opts) end
-- COPY ... FROM STDIN of `rows` (a function returning the next row, or an
-- array of rows); the row count, or nil, err (poolrt/copy.lua).
function Conn:copy_in(sql, rows) return COPY().run(self, sql, rows) end
-- Which host of a multi-host conninfo ("host=a,b port=p1,p2") this is on, 1-based.
function Conn:endpoint() return C.prt_conn_endpoint(self._c) end

-- Gives the connection back; `broken` (or a failure seen on it) closes it.
function Conn:release(broken)
  local c = self._c
  if not c then return end
  self._c = nil
  ffi.gc(c, nil)
  C.prt_release(c, (broken or self.broken) and 1 or 0)
end

---------------------------------------------------------------------------
-- Pools
---------------------------------------------------------------------------
local Pool = {}
Pool.__index = Pool

-- prt_acquire on this pool into conn_out; a pool evicted meanwhile (idle
-- tenant, rt:evict) is created afresh under the same name, as apartment
-- does.  Returns the C result code.
local function acquire_c(self, timeout)
  local rc = C.prt_acquire(self._p, timeout, conn_out, errbuf, ERRLEN)
  if rc == C.PRT_ECLOSED and I.refresh(self) then
    rc = C.prt_acquire(self._p, timeout, conn_out, errbuf, ERRLEN)
  end
  return rc
end

-- A connection within `timeout` seconds (default: the pool's
-- acquire_timeout), or nil, err.
function Pool:acquire(timeout)
  if acquire_c(self, timeout or -1) ~= 0 then return nil, lasterr() end
  return wrap_conn(self, conn_out[0])
end

-- Calls fn(conn, ...) with a connection and releases it afterwards, also
-- when fn raises (the error is re-raised).  Returns what fn returns, or
-- nil, err when no connection could be had.
function Pool:with(fn, ...)
  local conn, err = self:acquire()
  if not conn then return nil, err end
  local res = { pcall(fn, conn, ...) }
  conn:release()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
end

-- One statement without a Conn object (prt_pool_query: acquire + query +
-- release, or pipelined on a shared connection with multiplex = true).  The
-- parameters are converted (and may raise) before C is called.
local function pool_query(self, flags, sql, ...)
  local n = set_params(sql, ...)
  local rc = C.prt_pool_query(self._p, sql, n, parambuf, flags, res_out, errbuf, ERRLEN)
  if rc == C.PRT_ECLOSED and I.refresh(self) then
    rc = C.prt_pool_query(self._p, sql, n, parambuf, flags, res_out, errbuf, ERRLEN)
  end
  if rc ~= 0 then return nil, lasterr() end
  return result_rows(self)
end

-- In a poolrt.workers worker the statement joins the worker loop's round;
-- exec_simple runs at once (the simple protocol has no place in a batch).
function Pool:query(sql, ...)
  if in_worker() then return WORKERS().query(self, self._qflags, sql, ...) end
  return pool_query(self, self._qflags, sql, ...)
end
function Pool:exec_simple(sql, ...) return pool_query(self, C.PRT_Q_UNPREPARED, sql, ...) end

-- Whether every one of the n batch items has result code rc.
local function all_rc(items, n, rc)
  for i = 0, n - 1 do
    if items[i].rc ~= rc then return false end
  end
  return true
end

-- One statement of a batch: { sql, flags, nparams, param strings... },
-- from a table t holding sql at t[base] and the parameters after it, which
-- are converted (raising on one that cannot be sent).  No varargs: LuaJIT
-- compiles this loop, not a vararg table constructor.
local function new_req(flags, t, base, np)
  local sql = t[base]
  if type(sql) ~= "string" then error("poolrt: sql must be a string", 3) end
  if np > MAXPARAMS then error("poolrt: more than " .. MAXPARAMS .. " parameters", 3) end
  local r = { sql, flags, np }
  for k = 1, np do r[3 + k] = to_param(t[base + k]) end
  return r
end
I.new_req = new_req

-- The batch's C arrays, grown on demand and reused: a state runs one batch
-- at a time (C calls nothing back in it), so they are free once it returns.
local items_buf, items_cap, params_buf, params_cap = nil, 0, nil, 0

-- Runs reqs[1..n] (new_req's) as one prt_pool_query_batch, or
-- prt_pool_query_spread when `spread` (order between them free).  Returns
-- results, errs, raised: results[i] the rows of statement i or false;
-- errs nil when all succeeded, else errs[i] the error of each failed one;
-- raised nil, else raised[i] the error decoding statement i's rows raised.
-- nil, err when the batch as a whole could not run.  The request tables
-- keep the strings C reads alive.
local function run_batch(self, n, reqs, spread)
  local total = 0
  for i = 1, n do total = total + reqs[i][3] end
  if n > items_cap then
    items_cap = math.max(n, 2 * items_cap, 16)
    items_buf = ffi.new("prt_batch_item[?]", items_cap)
  end
  if total > params_cap then
    params_cap = math.max(total, 2 * params_cap, 64)
    params_buf = ffi.new("const char*[?]", params_cap)
  end
  local items, ps, at = items_buf, params_buf, 0
  for i = 1, n do
    local r, it = reqs[i], items[i - 1]
    local np = r[3]
    it.sql, it.flags, it.nparams, it.rc, it.result = r[1], r[2], np, 0, nil
    it.params = np > 0 and ps + at or nil -- ps is nil until some batch has parameters
    for k = 1, np do ps[at + k - 1] = r[3 + k] end
    at = at + np
  end
  local run = spread and C.prt_pool_query_spread or C.prt_pool_query_batch
  local rc = run(self._p, n, items, errbuf, ERRLEN)
  if rc == C.PRT_ECLOSED and all_rc(items, n, rc) and I.refresh(self) then
    rc = run(self._p, n, items, errbuf, ERRLEN) -- evicted meanwhile: nothing ran
  end
  if rc ~= 0 and all_rc(items, n, 0) then return nil, lasterr() end -- the batch as a whole (no item touched)
  local results, errs, raised = {}, nil, nil
  for i = 0, n - 1 do
    local it = items[i]
    if it.rc ~= 0 then
      errs = errs or {}
      errs[i + 1] = ffi.string(it.err)
      results[i + 1] = false
    else
      local ok, rows = take_rows(it.result, self)
      it.result = nil
      if not ok then raised = raised or {}; raised[i + 1] = rows end
      results[i + 1] = ok and rows or false
    end
  end
  return results, errs, raised
end
I.run_batch = run_batch

-- Many statements in one call (prt_pool_query_batch): `stmts` is a list of
-- { sql, param1, ... }; each runs with a Sync of its own, so one failing
-- touches no other.  Returns `results, errs`: results[i] the rows of
-- statement i (false when it failed), errs nil when all succeeded, else
-- errs[i] the error of each failed statement.  With multiplex = true the
-- batch is pipelined on one shared connection and the calling thread does
-- its I/O; else one connection is held for the batch.  opts.spread: the
-- statements do not depend on each other's order, and a multiplexed pool
-- may run them in chunks on several connections at once.  Parameters are
-- converted (and may raise) before C is called.
function Pool:query_batch(stmts, opts)
  if type(stmts) ~= "table" then error("poolrt: query_batch wants a list of { sql, params... }", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("poolrt: query_batch(stmts, { spread = })", 2) end
  local n, reqs = #stmts, {}
  for i = 1, n do
    local st = stmts[i]
    if type(st) ~= "table" or type(st[1]) ~= "string" then
      error("poolrt: query_batch statement " .. i .. ": want { sql, params... }", 2)
    end
    local np = table.maxn(st) - 1
    reqs[i] = new_req(self._qflags, st, 1, np)
  end
  local results, errs, raised = run_batch(self, n, reqs, opts and opts.spread)
  if raised then
    for i = 1, n do if raised[i] then error(raised[i], 0) end end
  end
  return results, errs
end

-- fn(conn, attempt) between BEGIN and COMMIT on a connection of the pool,
-- re-run on serialization failures and deadlocks up to opts.retries times;
-- opts: isolation, read_only, retries (poolrt/tx.lua has the rules).
function Pool:transaction(fn, opts) return TX().pool_run(self, fn, opts) end
-- conn:copy_in on a connection of the pool, released afterwards.
function Pool:copy_in(sql, rows) return COPY().pool_run(self, sql, rows) end

-- A listener on a connection of its own for a list of channels, with
-- :wait(timeout) and :close() (poolrt/listen.lua), or nil, err.
function Pool:listen(channels) return LISTEN().open(self, channels) end

local stats_buf = ffi.new("prt_pool_stats")

local function stats_of(p)
  local s = stats_buf
  C.prt_pool_stats_get(p, s)
  local n = tonumber
  local buckets = {}
  for i = 0, C.PRT_WAIT_BUCKETS - 1 do buckets[i + 1] = n(s.acquire_wait_buckets[i]) end
  return {
    max = s.max, min_idle = s.min_idle, total = s.total, idle = s.idle, in_use = s.in_use,
    waiting = s.waiting, maxwait = s.maxwait,
    -- PgBouncer's SHOW POOLS names
    cl_active = s.in_use, cl_waiting = s.waiting, sv_active = s.in_use, sv_idle = s.idle,
    created_at = s.created_at, last_used_at = s.last_used_at,
    acquire_total = n(s.acquire_total), acquire_timeouts_total = n(s.acquire_timeouts_total),
    grown_total = n(s.grown_total),
    acquire_wait_seconds_sum = n(s.acquire_wait_us_total) / 1e6,
    acquire_wait_buckets = buckets, -- counts per bound of poolrt.WAIT_BOUNDS
    connections_created_total = n(s.connections_created_total),
    connect_errors_total = n(s.connect_errors_total), connect_backoff_total = n(s.connect_backoff_total),
    leaks_total = n(s.leaks_total),
    init_sql_errors_total = n(s.init_sql_errors_total), tx_retries_total = n(s.tx_retries_total),
    protected = s.is_protected ~= 0, pinned = s.is_pinned ~= 0, closed = s.closed,
    connections_closed_total = {
      idle = n(s.closed_idle), lifetime = n(s.closed_lifetime), broken = n(s.closed_broken),
      evicted = n(s.closed_evicted), shrink = n(s.closed_shrink), role = n(s.closed_role),
    },
    multiplex = { -- zeros without multiplex = true
      connections = s.mux_connections, in_flight = s.mux_in_flight,
      statements_total = n(s.mux_statements_total), rerouted_total = n(s.mux_rerouted_total),
      lost_total = n(s.mux_lost_total),
    },
  }
end

function Pool:stats() return stats_of(self._p) end

---------------------------------------------------------------------------
-- Runtimes
---------------------------------------------------------------------------
local Runtime = {}
Runtime.__index = Runtime

local pool_fields = {
  max = "number", min_idle = "number", acquire_timeout = "number", idle_timeout = "number",
  max_lifetime = "number", lifetime_jitter = "number", validate_idle = "number",
  query_timeout = "number", stmt_cache = "number", discard_all = "boolean",
  conninfo = "string", prepare = "boolean", null = true, decode = "boolean", threads = "number",
  protected = "boolean", pinned = "boolean", leak_threshold = "number", connect_backoff_max = "number",
  init_sql = true, -- a string or a list of strings (init_sql_array)
  handoff = "string", -- "barging" or "fifo"; C checks the name and keeps its own copy
  handoff_bound = "number", -- barging: seconds before a waiter is handed releases directly
  multiplex = "boolean", -- pool:query pipelines statements on shared connections (src/multiplex.c)
}

I.pool_fields = pool_fields

-- Raises on an unknown option or one of the wrong type; C checks the values.
local function check_opts(opts, fields, what)
  local problem = I.opts_problem(opts, fields, what)
  if problem then error("poolrt: " .. problem, 3) end
end

-- Sets o.init_sql from a string or a list of strings; returns what must stay
-- referenced while o is in use (C copies the strings when it makes the pool,
-- but a handle re-creates an evicted pool from the same o).
local function init_sql_array(o, v)
  if v == nil then return nil end
  local list = type(v) == "string" and { v } or v
  if type(list) ~= "table" or #list == 0 then
    error("poolrt: pool option init_sql must be a string or a non-empty list of strings", 4)
  end
  for _, s in ipairs(list) do
    if type(s) ~= "string" then error("poolrt: pool option init_sql: every statement must be a string", 4) end
  end
  local arr = ffi.new("const char*[?]", #list, list)
  o.init_sql, o.ninit_sql = arr, #list
  return { arr, list }
end

local function pool_opts(opts)
  check_opts(opts, pool_fields, "pool")
  local o = ffi.new("prt_pool_opts")
  C.prt_pool_opts_default(o)
  o.max = 0 -- not configured: C uses its default unless a size hook decides (pool.configured is nil)
  local flags = { discard_all = "discard_all", protected = "is_protected", pinned = "is_pinned",
                  multiplex = "multiplex" }
  for k, v in pairs(opts) do
    if flags[k] then o[flags[k]] = v and 1 or 0
    elseif k ~= "prepare" and k ~= "null" and k ~= "decode" and k ~= "init_sql" then o[k] = v end
  end
  if opts.prepare == false then o.stmt_cache = 0 end
  return o, init_sql_array(o, opts.init_sql)
end
I.pool_opts = pool_opts -- the simulator's sources (poolrt/sim.lua) take the same options

local pool_out = ffi.new("prt_pool*[1]")

-- True when the C pool behind `p` (a pointer) was evicted; it lives on only
-- as long as handles hold it.
local function evicted(p)
  C.prt_pool_stats_get(p, stats_buf)
  return stats_buf.closed == C.PRT_POOL_EVICTED
end

local function handle_evicted(h) return evicted(h._p) end

-- The C pool for `name` (a new reference, released by the GC), created
-- from `o` if absent; nil, err when it cannot be had.
local function get_pool(rt, name, o)
  local rc = C.prt_pool_get(rt, name, o, pool_out, errbuf, ERRLEN)
  if rc ~= 0 then return nil, rc end
  return ffi.gc(pool_out[0], C.prt_pool_unref)
end

-- The handle of C pool `ptr` (a new reference, released by the GC) named
-- `name`, made from `o` (anchor: what o's strings point into, kept with
-- it, since a handle re-creates an evicted pool from o) and the Lua
-- options `opts`.  A handle the cache forgot while its pool was evicted,
-- whose acquire has since re-admitted that very pool, is returned as it
-- is, with its settings.
local function pool_handle(self, name, ptr, o, anchor, opts)
  local key = tonumber(ffi.cast("uintptr_t", ptr))
  local p = self._handles[key]
  if p then
    self._cache:put(name, p)
    return p
  end
  p = setmetatable({ _p = ptr, _o = o, _anchor = anchor, name = name, rt = self, _null = opts.null,
                     _decode = opts.decode ~= false,
                     _qflags = o.stmt_cache == 0 and C.PRT_Q_UNPREPARED or 0 }, Pool)
  self._cache:put(name, p)
  self._handles[key] = p
  return p
end

-- Fetches pool `name`, creating it from opts (fields of prt_pool_opts, plus
-- prepare = false for unprepared statements, null = <value for NULL>,
-- decode = false for rows of strings (PostgreSQL's text, no typing),
-- protected/pinned = true to exempt it from eviction) when it does not
-- exist yet.  Raises on bad options, and when max_pools is reached and
-- nothing can be evicted (PgBouncer and apartment refuse there too).
function Runtime:pool(name, opts)
  if type(name) ~= "string" then error("poolrt: pool name must be a string", 2) end
  local p = self._pools[name]
  if p then return p end -- evicted meanwhile, its next acquire re-admits it
  opts = opts or {}
  local o, anchor = pool_opts(opts)
  local ptr = get_pool(self._rt, name, o)
  if not ptr then error("poolrt: " .. lasterr(), 2) end
  return pool_handle(self, name, ptr, o, { anchor, opts.conninfo }, opts)
end

---------------------------------------------------------------------------
-- Clusters (src/cluster.c, docs/clusters.md): one handle for writes and
-- reads over a conninfo of several servers, i.e. two pools: `name`
-- (target_session_attrs=read-write) and `name .. ".read"` (prefer-standby).
---------------------------------------------------------------------------
-- Work for the primary: the pool handle's own methods on pool `name`;
-- reads a standby may answer (the primary while none is up): :read and
-- :read_batch on pool `name.read`; :pools() and :stats() of both.
local Cluster = I.cluster_class{ "query", "exec_simple", "query_batch", "with", "transaction", "acquire",
                                 "copy_in", "listen" }
-- The two pools' conninfos, as C wrote them (prt_cluster_conninfo).
function Cluster:conninfos() return self._conninfo[0], self._conninfo[1] end

local cluster_out = ffi.new("prt_pool*[2]")
local CI_MAX = 8192

-- The conninfo of a cluster's pool (reads: 0 `name`'s, 1 `name.read`'s)
-- from the user's (nil: the runtime's); raises as C refuses it.
local function cluster_conninfo(rt, conninfo, reads, level)
  local buf = ffi.new("char[?]", CI_MAX)
  if C.prt_cluster_conninfo(rt._rt, conninfo, reads, buf, CI_MAX, errbuf, ERRLEN) ~= 0 then
    error("poolrt: " .. lasterr(), level + 1)
  end
  return ffi.string(buf)
end

-- The cluster `name`: pools `name` and `name .. ".read"` over one
-- conninfo (opts.conninfo or the runtime's, which must not set
-- target_session_attrs: the cluster decides it), created from opts (pool
-- options, as rt:pool's, applying to both) by prt_cluster_get the first
-- time; later calls return the same handle.  Raises on bad options, a
-- conninfo that sets target_session_attrs, or a pool of either name that
-- exists with another conninfo.
function Runtime:cluster(name, opts)
  if type(name) ~= "string" then error("poolrt: cluster name must be a string", 2) end
  local cl = self._clusters[name]
  if cl then return cl end
  opts = opts or {}
  local o, anchor = pool_opts(opts)
  local cis = { [0] = cluster_conninfo(self, opts.conninfo, 0, 2), cluster_conninfo(self, opts.conninfo, 1, 2) }
  if C.prt_cluster_get(self._rt, name, o, cluster_out, cluster_out + 1, errbuf, ERRLEN) ~= 0 then
    error("poolrt: " .. lasterr(), 2)
  end
  local ptrs = { [0] = ffi.gc(cluster_out[0], C.prt_pool_unref), ffi.gc(cluster_out[1], C.prt_pool_unref) }
  -- Each handle's options name its own pool's conninfo, so that a pool
  -- evicted meanwhile comes back as the cluster's (I.refresh).
  local function handle(pname, reads)
    local po = ffi.new("prt_pool_opts")
    ffi.copy(po, o, ffi.sizeof("prt_pool_opts"))
    po.conninfo = cis[reads]
    return pool_handle(self, pname, ptrs[reads], po, { anchor, cis[reads] }, opts)
  end
  cl = setmetatable({ name = name, rt = self, primary = handle(name, 0), reads = handle(name .. ".read", 1),
                      _conninfo = cis }, Cluster)
  self._clusters[name] = cl
  return cl
end

-- Re-resolves a pool handle whose C pool was evicted (not one that is
-- draining), and caches it again in its runtime unless rt:pool(name) made
-- a new handle meanwhile.  Returns true when the handle now points at a
-- live pool.
function I.refresh(p)
  local rt = p.rt
  if not rt or not evicted(p._p) then return false end
  local ptr = get_pool(rt._rt, p.name, p._o)
  if not ptr then return false end
  p._p = ptr
  rt._handles[tonumber(ffi.cast("uintptr_t", ptr))] = p
  if rt._pools[p.name] == nil then rt._cache:put(p.name, p) end
  return true
end

-- A handle's private parts, for poolrt's submodules and resty.poolrt.
function I.acquire_timeout(p) return tonumber(p._o.acquire_timeout) end
function I.pool_ptr(p) return p._p end
function I.null_of(p) return p._null end
function I.conn_ptr(conn) return conn._c end

-- Drops pool `name`: idle connections close now, in-use ones when they are
-- released; a later rt:pool(name) creates it afresh.  true, or nil, err.
function Runtime:evict(name)
  if C.prt_runtime_evict(self._rt, name, errbuf, ERRLEN) ~= 0 then return nil, lasterr() end
  self._cache:drop(name)
  return true
end

local budget_stats -- with the shared budgets, below
local rstats_buf = ffi.new("prt_runtime_stats")

-- Runtime-wide counters: pools, max_pools, connections (open across
-- pools), max_connections, pools_over_cap_total, pools_evicted_total{...},
-- and pools_allocated: pool structs alive in the whole process (live pools
-- of every runtime, and evicted ones a handle still holds).  The budget:
-- budget (the cap in force, 0: none), budget_waiting (callers blocked by
-- it), and for a fleet runtime the last server sample: sampled_at
-- (prt_now clock, 0: none yet), sampled_unix, server = { max_connections,
-- reserved, backends, fleet_members, fleet_backends, own_backends },
-- samples_total, sample_errors_total, server_full_total; shared_budget: the
-- shared budget's numbers and this runtime's part (poolrt.shared_budget),
-- or nil.
local ROLES = { [C.PRT_ROLE_UNKNOWN] = "unknown", [C.PRT_ROLE_PRIMARY] = "primary",
                [C.PRT_ROLE_STANDBY] = "standby" }
local eps_buf, EPS_MAX = nil, 64

-- The runtime's servers (pools over several hosts share them): a list of
-- { name = "host:port", role = "primary"|"standby"|"unknown", up, failures,
-- retry_at, open, connects_total, connect_failures_total,
-- role_changes_total, sampled_at, lag_bytes (-1: unknown), lag_seconds }.
local function endpoint_stats(rt)
  eps_buf = eps_buf or ffi.new("prt_endpoint_stats[?]", EPS_MAX)
  local n, out = math.min(C.prt_runtime_endpoints(rt, eps_buf, EPS_MAX), EPS_MAX), {}
  for i = 0, n - 1 do
    local e = eps_buf[i]
    out[#out + 1] = { name = ffi.string(e.name), role = ROLES[e.role] or "unknown", up = e.up ~= 0,
                      failures = e.failures, retry_at = e.retry_at, open = e.open,
                      connects_total = tonumber(e.connects_total),
                      connect_failures_total = tonumber(e.connect_failures_total),
                      role_changes_total = tonumber(e.role_changes_total), sampled_at = e.sampled_at,
                      lag_bytes = tonumber(e.lag_bytes), lag_seconds = e.lag_seconds }
  end
  return out
end

function Runtime:runtime_stats()
  local s = rstats_buf
  C.prt_runtime_stats_get(self._rt, s)
  local evicted_by = {}
  for i = 0, C.PRT_EVICT_NREASONS - 1 do
    evicted_by[ffi.string(C.prt_evict_reason_name(i))] = tonumber(s.pools_evicted_total[i])
  end
  return { pools = s.pools, max_pools = s.max_pools, connections = s.connections,
           max_connections = s.max_connections, pools_over_cap_total = tonumber(s.pools_over_cap_total),
           pools_evicted_total = evicted_by, pools_allocated = C.prt_pools_allocated(),
           budget = s.budget, budget_waiting = s.budget_waiting, sampled_at = s.sampled_at,
           sampled_unix = s.sampled_unix, samples_total = tonumber(s.samples_total),
           sample_errors_total = tonumber(s.sample_errors_total), server_full_total = tonumber(s.server_full_total),
           server = { max_connections = s.server_max_connections, reserved = s.server_reserved,
                      backends = s.server_backends, fleet_members = s.fleet_members,
                      fleet_backends = s.fleet_backends, own_backends = s.own_backends },
           shared_budget = budget_stats(nil, self._rt), endpoints = endpoint_stats(self._rt) }
end

local HOOKS = M.HOOKS
local pstats_buf = ffi.new("prt_policy_stats")

-- The runtime's policy counters: generation, reloads {ok, failed}, and
-- calls / errors per hook.
function Runtime:policy_stats()
  local s = pstats_buf
  C.prt_runtime_policy_stats(self._rt, s)
  local out = { generation = tonumber(s.generation), calls = {}, errors = {}, calls_total = 0, errors_total = 0,
                reloads = { ok = tonumber(s.reloads_ok), failed = tonumber(s.reloads_failed) },
                last_error = s.last_error[0] ~= 0 and ffi.string(s.last_error) or nil }
  for i, h in ipairs(HOOKS) do
    out.calls[h], out.errors[h] = tonumber(s.calls[i - 1]), tonumber(s.errors[i - 1])
    out.calls_total = out.calls_total + out.calls[h]
    out.errors_total = out.errors_total + out.errors[h]
  end
  return out
end

-- Calls fn(name, p) for each live pool, p a pointer valid during the call.
local function each_live_pool(rt, fn)
  for i = 0, C.prt_runtime_pool_count(rt) - 1 do
    local p = C.prt_runtime_pool_at(rt, i)
    if p ~= nil then
      fn(ffi.string(C.prt_pool_name(p)), p)
      C.prt_pool_unref(p)
    end
  end
end

-- The names of runtime rt's live pools, as a set.
function I.live_names(rt)
  local live = {}
  each_live_pool(rt._rt, function(name) live[name] = true end)
  return live
end

-- Per-pool statistics keyed by pool name.  Each entry also carries the
-- runtime-wide policy_calls_total, policy_errors_total and policy_generation.
function Runtime:stats()
  local all, ps = {}, self:policy_stats()
  each_live_pool(self._rt, function(name, p)
    local s = stats_of(p)
    s.policy_calls_total, s.policy_errors_total, s.policy_generation = ps.calls_total, ps.errors_total, ps.generation
    all[name] = s
  end)
  return all
end

-- Prometheus text exposition of this runtime (docs/metrics.md#prometheus-metrics).
function Runtime:metrics()
  local text = C.prt_metrics_text(self._rt)
  if text == nil then error("poolrt: out of memory building metrics", 2) end
  local s = ffi.string(text)
  C.prt_free(text)
  return s
end

-- Replaces the policy with `path` (default: the live policy's file) after
-- compiling and dry-running it.  Returns true, or nil, err while the old
-- policy keeps serving.
function Runtime:reload(path)
  if path ~= nil and type(path) ~= "string" then error("poolrt: reload(path): path must be a string", 2) end
  if C.prt_runtime_reload(self._rt, path, errbuf, ERRLEN) ~= 0 then return nil, lasterr() end
  return true
end

-- How many background jobs may hold connections of a pool at once.
function Pool:concurrency() return C.prt_pool_concurrency(self._p) end

local evicted_out = ffi.new("int[1]")

-- Runs one reap cycle now; returns connections closed and pools evicted.
function Runtime:reap()
  local closed = C.prt_reap(self._rt, evicted_out)
  return closed, evicted_out[0]
end

-- Stops taking work and waits up to `grace` seconds for connections in use.
function Runtime:drain(grace)
  return C.prt_runtime_drain(self._rt, grace or -1) == 0 -- -1: C's PRT_DRAIN_GRACE
end

function Runtime:close()
  if self._owned then
    ffi.gc(self._rt, nil)
    C.prt_runtime_free(self._rt)
    self._owned = false
  end
end

-- Runs require(module)[fn](rt, i, ...) for i = 1..n, each on its own OS
-- thread with its own Lua state, and waits for all.  Arguments and results
-- must be plain values.  Returns the list of results, or nil, err naming
-- every thread that failed.
function Runtime:spawn(n, module, fn, ...)
  if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then error("poolrt: spawn count must be an integer >= 0", 2) end
  if type(module) ~= "string" or type(fn) ~= "string" then error("poolrt: spawn(n, module, fn, ...)", 2) end
  local args = serialize({ n = select("#", ...), ... })
  local res = ffi.new("prt_spawn_result[?]", math.max(n, 1))
  C.prt_spawn(self._rt, n, module, fn, "return " .. args, package.path, package.cpath, res)
  local out, errs = {}, {}
  for i = 0, n - 1 do
    local s = res[i].value ~= nil and ffi.string(res[i].value) or "nil"
    if res[i].ok ~= 0 then out[i + 1] = deserialize(s)
    else errs[#errs + 1] = ("thread %d: %s"):format(i + 1, s) end
  end
  C.prt_spawn_free(res, n)
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return out
end

-- Runs fn(k, ...) for k = 1..n as coroutines of this thread's Lua state,
-- whose pool:query calls go out together, one batch per pool and round
-- (poolrt/workers.lua).  Returns the list of each worker's first result,
-- or nil, err naming every worker that raised.
function M.workers(n, fn, ...) return WORKERS().run(n, fn, ...) end

---------------------------------------------------------------------------
-- Shared budgets (src/shared_budget.c): one cap on connections for several
-- processes that fork after it is made (nginx workers).
---------------------------------------------------------------------------
local Budget = {}
Budget.__index = Budget
local bstats_buf = ffi.new("prt_budget_stats")

-- The numbers of budget b (a prt_budget*, or nil: rt's) and of runtime
-- rt's membership (rt a prt_runtime*, or nil), as a table; nil when
-- neither names a budget.
function budget_stats(b, rt)
  local s = bstats_buf
  if C.prt_budget_stats_get(b, rt, s) ~= 0 then return nil end
  local out = {}
  for _, k in ipairs{ "max", "used", "members", "waiting", "held", "held_waiting" } do out[k] = s[k] end
  for _, k in ipairs{ "evictions_asked_total", "evictions_given_total", "reclaimed_total", "asked_total",
                      "given_total" } do
    out[k] = tonumber(s[k])
  end
  return out
end

-- A budget of `max` server connections shared by this process and the
-- processes it forks afterwards; give it to poolrt.runtime{ shared_budget
-- = b } in each.  reuse: the budget this process made before, max updated
-- (nginx's master on a reload); such a budget stays mapped for the life of
-- the process.
function M.shared_budget(max, reuse)
  if type(max) ~= "number" or max < 1 or max ~= math.floor(max) then
    error("poolrt.shared_budget(max): max must be an integer >= 1", 2)
  end
  local out = ffi.new("prt_budget*[1]")
  if C.prt_budget_new(max, reuse and 1 or 0, out, errbuf, ERRLEN) ~= 0 then error("poolrt: " .. lasterr(), 2) end
  local b = reuse and out[0] or ffi.gc(out[0], C.prt_budget_free)
  return setmetatable({ _b = b }, Budget)
end

-- The budget's numbers across its members (see prt_budget_stats).
function Budget:stats() return budget_stats(self._b, nil) end

local function wrap_runtime(ptr, owned)
  local cache = I.new_cache(handle_evicted)
  -- _handles: every live handle by its C pool's address (weak: a handle
  -- pins its pool, so an address is never reused while its entry lives).
  return setmetatable({ _rt = ptr, _cache = cache, _pools = cache.items, _owned = owned,
                        _handles = setmetatable({}, { __mode = "v" }), _clusters = {} }, Runtime)
end

-- The options of poolrt.runtime{} and their types: the one list, which
-- resty.poolrt accepts too.  Numbers are the prt_runtime_opts fields of the
-- same name (an old name, I.renamed's, the field of its new name).
local runtime_fields = { conninfo = "string", reap_interval = "number", max_pools = "number",
                         max_connections = "number", policy = "string", log_level = "string",
                         hook_steps = "number", pool_idle_timeout = "number", pools_overflow = "string",
                         fleet = "string", server_sample_interval = "number",
                         shared_budget = "table", record = "string",
                         policy_budget = "number" } -- hook_steps' old name, accepted for one release
I.runtime_fields = runtime_fields

-- The path of a shipped policy ("clamp" -> .../policies/clamp.lua).
function M.policy_file(name)
  local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "."
  local dirs = { here .. "/../policies" }
  if os.getenv("POOLRT_POLICY_DIR") then table.insert(dirs, 1, os.getenv("POOLRT_POLICY_DIR")) end
  for _, dir in ipairs(dirs) do
    local path = dir .. "/" .. name .. ".lua"
    local f = io.open(path)
    if f then f:close() return path end
  end
  return nil, "no shipped policy named " .. tostring(name)
end

local host = package.loaded["poolrt.host"] or {}

-- prt_runtime_opts from the numbers and pools_overflow of poolrt.runtime{}
-- options (already type-checked; C checks the values when the runtime is
-- made).  An old option name warns once and sets its new name's field,
-- unless the new name is given too.  The strings stay `opts`'s: keep it
-- while C reads them.  The simulator (poolrt/sim.lua) builds its runtimes
-- with it too.
local function runtime_opts(opts)
  local o = ffi.new("prt_runtime_opts")
  C.prt_runtime_opts_default(o)
  for old, new in pairs(I.renamed) do
    if opts[old] ~= nil then I.warn_renamed(old, new, "poolrt.runtime") end
  end
  for k, want in pairs(runtime_fields) do
    local field = I.renamed[k]
    if want == "number" and opts[k] and not (field and opts[field]) then o[field or k] = opts[k] end
  end
  o.pools_overflow = opts.pools_overflow
  return o
end
I.runtime_opts = runtime_opts

-- Creates a runtime.  opts: conninfo (default $POOLRT_CONNINFO), policy
-- (a file; default: the host's --policy, else the built-in default),
-- hook_steps (Lua steps a hook may take per call; policy_budget, its old
-- name, still works for one release), reap_interval, max_pools, max_connections, log_level,
-- pool_idle_timeout, pools_overflow ("fail" or "allow"), fleet (a name: see
-- docs/budgets.md#across-hosts-a-fleet), server_sample_interval, record (a
-- trace file for `poolrt sim`, appended to; default: the host's --record);
-- what is not given is prt_runtime_opts_default's.  A policy that does not
-- load, or a record file that cannot be opened, raises.
function M.runtime(opts)
  opts = opts or {}
  check_opts(opts, runtime_fields, "runtime")
  local policy = opts.policy or host.policy
  if opts.log_level then M.set_log_level(opts.log_level) end
  local o = runtime_opts(opts)
  o.conninfo = opts.conninfo or os.getenv("POOLRT_CONNINFO")
  o.policy = policy
  o.fleet = opts.fleet
  o.record = opts.record or host.record
  if opts.shared_budget then
    if getmetatable(opts.shared_budget) ~= Budget then error("poolrt: shared_budget must come from poolrt.shared_budget()", 2) end
    o.shared_budget = opts.shared_budget._b
  end
  local out = ffi.new("prt_runtime*[1]")
  if C.prt_runtime_new(o, out, errbuf, ERRLEN) ~= 0 then error("poolrt: " .. lasterr(), 2) end
  local rt = wrap_runtime(ffi.gc(out[0], C.prt_runtime_free), true)
  rt._budget = opts.shared_budget -- the runtime uses its memory: keep it alive as long
  return rt
end

-- Bounded background work (coder's reconciler): runs fn(conn, job) for each
-- job on worker threads, at most `limit` holding connections of the pool at
-- once (default: pool:concurrency(), the `concurrency` hook or C's built-in
-- "half"), so foreground work keeps the rest of the pool.  skip(job), when given,
-- runs first in the calling thread, without a connection, and filters jobs
-- out.  fn is a function without upvalues (it is shipped to the worker
-- threads as bytecode) or a "module.function" name.  A job fails when fn
-- raises, returns false, or returns nil, err, or when no connection could be
-- had.  Returns { total, skipped, ran, failed, elapsed, errors = {...} }.
function Runtime:run_limited(jobs, opts)
  if type(jobs) ~= "table" or type(opts) ~= "table" then error("poolrt: run_limited(jobs, { pool =, fn = })", 2) end
  local pool = type(opts.pool) == "string" and self:pool(opts.pool) or opts.pool
  if type(pool) ~= "table" or not pool._p then error("poolrt: run_limited: opts.pool must be a pool or its name", 2) end
  local fn, spec = opts.fn, nil
  if type(fn) == "function" then
    if debug.getupvalue(fn, 1) then
      error("poolrt: run_limited: fn must not use locals from outside it (upvalue '"
            .. debug.getupvalue(fn, 1) .. "'); require what it needs inside, or pass \"module.function\"", 2)
    end
    spec = { dump = string.dump(fn) }
  elseif type(fn) == "string" and fn:match("^[%w_%.]+%.[%w_]+$") then
    spec = { name = fn }
  else
    error("poolrt: run_limited: opts.fn must be a function or a \"module.function\" name", 2)
  end
  if opts.skip ~= nil and type(opts.skip) ~= "function" then error("poolrt: run_limited: opts.skip must be a function", 2) end
  local limit = opts.limit or pool:concurrency()
  if type(limit) ~= "number" or limit < 1 then error("poolrt: run_limited: limit must be >= 1", 2) end
  local t0 = M.now()
  local todo, skipped = {}, 0
  for _, job in ipairs(jobs) do
    if opts.skip and opts.skip(job) then skipped = skipped + 1 else todo[#todo + 1] = job end
  end
  local out = { total = #jobs, skipped = skipped, ran = 0, failed = 0, errors = {} }
  local n = math.min(math.floor(limit), #todo)
  if n > 0 then
    local res, err = self:spawn(n, "poolrt.internal", "limited_worker", pool.name, spec, todo, n)
    if not res then error("poolrt: run_limited: " .. err, 2) end
    for _, r in ipairs(res) do
      out.ran, out.failed = out.ran + r.ran, out.failed + r.failed
      for _, e in ipairs(r.errors) do out.errors[#out.errors + 1] = e end
    end
  end
  out.elapsed = M.now() - t0
  return out
end

-- Worker of run_limited: jobs i, i + stride, ... one connection at a time.
function I.limited_worker(rt, i, pool_name, spec, jobs, stride)
  local f
  if spec.dump then
    f = assert(loadstring(spec.dump))
  else
    local mod, name = spec.name:match("^(.*)%.([^.]+)$")
    f = require(mod)[name]
    if type(f) ~= "function" then error(("module %q has no function %q"):format(mod, name), 0) end
  end
  local pool = rt:pool(pool_name)
  local r = { ran = 0, failed = 0, errors = {} }
  local function failed(e)
    r.failed = r.failed + 1
    if #r.errors < 10 then r.errors[#r.errors + 1] = tostring(e) end
  end
  for k = i, #jobs, stride do
    local conn, err = pool:acquire()
    if not conn then
      failed(err)
    else
      local ok, v, verr = pcall(f, conn, jobs[k])
      conn:release()
      if not ok then failed(v)
      elseif v == false or (v == nil and verr ~= nil) then failed(verr or "job returned false")
      else r.ran = r.ran + 1 end
    end
  end
  return r
end

-- The runtime's address, for handing it to another Lua state in the same
-- process (nginx worker threads, other VMs); see poolrt.attach.
function Runtime:address() return tonumber(ffi.cast("uintptr_t", self._rt)) end

-- A handle on a runtime created by another Lua state of this process, from
-- rt:address().  It does not own the runtime: the creating state frees it,
-- and must outlive every attached handle.
function M.attach(address)
  if type(address) ~= "number" then error("poolrt.attach(address): address must be a number", 2) end
  return wrap_runtime(ffi.cast("prt_runtime*", address), false)
end

-- Entry point of rt:spawn threads (called from src/spawn.c).
function I.thread_main(rtptr, i, module, fn, argsrc)
  local rt = wrap_runtime(ffi.cast("prt_runtime*", rtptr), false)
  local args = assert(loadstring(argsrc, "=spawn args"))()
  local mod = require(module)
  local f = type(mod) == "table" and mod[fn]
  if type(f) ~= "function" then error(("module %q has no function %q"):format(module, fn), 0) end
  return serialize((f(rt, i, unpack(args, 1, args.n))))
end

return M
