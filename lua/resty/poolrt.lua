-- resty.poolrt -- poolrt inside nginx workers (lua-nginx-module >= 0.10.21).
--
--   init_by_lua_block        { require("resty.poolrt").init{ ... } }   -- optional: checks the
--                                                                      -- config when nginx (re)loads
--   init_worker_by_lua_block { require("resty.poolrt").init_worker{
--                                conninfo = os.getenv("POOLRT_CONNINFO"),
--                                policy = "default",             -- a shipped name or a file
--                                pools = { app = { max = 4 } } } }
--   content_by_lua_block     { local rows, err = require("resty.poolrt").pool("app")
--                                                  :query("select $1::int + 1 as n", 41) }
--   exit_worker_by_lua_block { require("resty.poolrt").shutdown() }
--
-- Each worker process owns one runtime (libpoolrt.so through lua/poolrt.lua,
-- same options, same policy files).  Everything that can block -- waiting
-- for a connection, connecting, the query -- runs in ngx.run_worker_thread on
-- an OS thread of the `thread_pool` named by `thread_pool` (default
-- "poolrt"), so the event loop never blocks.  Arguments and results cross
-- as strings, numbers, booleans and plain tables; rows come back exactly as
-- from poolrt (typed by column, see lua/poolrt/decode.lua; SQL NULL is nil
-- unless the pool has a `null` option, e.g. ngx.null, which then stands for
-- NULL inside arrays and JSON too).
--
-- Requests wait for a worker thread in the event loop (ngx.semaphore,
-- first come first served) so that no more than `max_inflight` calls are in
-- the nginx thread pool at once.  Keep max_inflight <= the directive
-- lua_worker_thread_vm_pool_size, and the thread_pool's max_queue well above
-- both: lua-nginx-module 0.10.23 (Debian 12) aborts the worker when a
-- thread_pool queue overflows.  If the module runs out of Lua VMs anyway
-- (another user of ngx.run_worker_thread), a call returns nil, err, "busy"
-- rather than waiting, which an application maps to HTTP 503.
--
-- What runs inside the worker-thread Lua VMs is poolrt.ngx_thread
-- (lua/poolrt/ngx_thread.lua): there is no `ngx` there, only poolrt
-- attached to the worker's runtime by address.
local poolrt = require "poolrt"
local I = require "poolrt.internal"
local ngx = rawget(_G, "ngx")

local M = { _VERSION = poolrt.VERSION, poolrt = poolrt }

local select, type, pairs, ipairs, tostring, tonumber, pcall, error = select, type, pairs, ipairs, tostring, tonumber, pcall, error
local concat, sort, fmt = table.concat, table.sort, string.format
local THREAD = "poolrt.ngx_thread" -- the module ngx.run_worker_thread runs

if not ngx then return M end -- loaded outside nginx: nothing to run

---------------------------------------------------------------------------
-- Worker side (the nginx worker's main Lua VM)
---------------------------------------------------------------------------
local semaphore = require "ngx.semaphore"
local null = ngx.null

local W = {
  rt = nil,          -- this worker's runtime (owned)
  addr = nil,        -- rt:address(), handed to worker threads
  epoch = 0,         -- bumped per runtime, so thread VMs never use a stale handle
  cfg = nil,
  pools = nil,       -- name -> worker-side pool object (poolrt.internal's new_cache)
  clusters = nil,    -- name -> cluster object (M.cluster)
  sem = nil,         -- worker-thread slots
  inflight = 0,
  max_inflight = 32,
  thread_pool = "poolrt",
  dict = nil,        -- lua_shared_dict for reload_all and metrics (optional)
  budget = nil,      -- the budget init() made for every worker (shared_max_connections), or nil
  reload_seen = 0,   -- reload_all generation this worker has applied
}

-- The options: poolrt.runtime{}'s (one list, in poolrt.lua) and this
-- module's own.
local cfg_fields = {
  pools = "table", thread_pool = "string", max_inflight = "number", shdict = "string",
  check_interval = "number", drain_grace = "number", shared_max_connections = "number",
}
for k, want in pairs(I.runtime_fields) do cfg_fields[k] = want end

-- A shipped policy name ("default", "clamp") or a file path.
local function policy_path(p)
  if p == nil then return nil end
  if p:find("/", 1, true) or p:match("%.lua$") then return p end
  return assert(poolrt.policy_file(p))
end

local function load_config(cfg, level)
  if type(cfg) == "string" then
    local f, err = loadfile(cfg)
    if not f then error("resty.poolrt: cannot load config " .. err, level + 1) end
    local ok, res = pcall(f)
    if not ok then error("resty.poolrt: config " .. cfg .. ": " .. tostring(res), level + 1) end
    if type(res) ~= "table" then error("resty.poolrt: config " .. cfg .. " must return a table", level + 1) end
    cfg = res
  end
  if type(cfg) ~= "table" then error("resty.poolrt: config must be a table or a file path", level + 1) end
  local problem = I.opts_problem(cfg, cfg_fields)
  if problem then error("resty.poolrt: " .. problem, level + 1) end
  return cfg
end

local function shdict(cfg)
  if not cfg.shdict then return nil end
  local d = ngx.shared[cfg.shdict]
  if not d then error(fmt("resty.poolrt: no lua_shared_dict %q (shdict option)", cfg.shdict), 3) end
  return d
end

-- In init_by_lua (optional, recommended): checks the configuration and its
-- policy when nginx starts or reloads its configuration, so a bad policy
-- fails `nginx -t` / `nginx -s reload` instead of every worker; and marks a
-- configuration reload, so that new workers start from nginx.conf's policy
-- rather than the last reload_all() of the previous configuration.
function M.init(cfg)
  cfg = load_config(cfg, 2)
  local path = policy_path(cfg.policy)
  if path then
    local ffi = require "ffi"
    local buf = ffi.new("char[?]", 4096)
    if poolrt.C.prt_policy_check(path, buf, 4096) ~= 0 then
      error("resty.poolrt: policy " .. path .. " does not load:\n" .. ffi.string(buf), 2)
    end
  end
  local d = shdict(cfg)
  if d then d:set("reload:base", d:get("reload:gen") or 0) end
  W.cfg = cfg
  -- shared_max_connections is one budget for all workers: shared memory
  -- made now, in the master before it forks them (src/shared_budget.c).  On
  -- `nginx -s reload` the master finds the same budget again, so old and new
  -- workers share it.  max_connections alone here is its old name (which
  -- also caps each worker's runtime, as it always did).
  local shared = cfg.shared_max_connections
  if shared == nil and cfg.max_connections ~= nil then
    I.warn_renamed("max_connections", "shared_max_connections", "resty.poolrt.init",
                   function(msg) ngx.log(ngx.WARN, msg, " (the budget for all workers)") end)
    shared = cfg.max_connections
  end
  if shared then W.budget = poolrt.shared_budget(shared, true) end
  return true
end

local snapshot, new_pool_cache -- forward

local function apply_reload_all(premature)
  if premature or not W.rt then return end
  local d = W.dict
  local gen = d:get("reload:gen") or 0
  if gen <= W.reload_seen then return end
  local path = d:get("reload:path")
  local ok, err = W.rt:reload(path ~= "" and path or nil)
  W.reload_seen = gen
  local id = ngx.worker.id() or 0
  -- One value per worker, so readers never see half an update.
  d:set("reload:w" .. id, I.serialize{
    gen = gen, ok = ok and true or false, err = err, pid = ngx.worker.pid(),
    policy_generation = W.rt:policy_stats().generation,
  })
  if not ok then ngx.log(ngx.ERR, "resty.poolrt: reload of generation ", gen, " failed: ", err) end
  snapshot()
end

-- In init_worker_by_lua: creates this worker's runtime and its pools.
-- cfg: a table or a Lua file returning one (default: what init() got):
--   conninfo, policy (a file, or a shipped name like "default"),
--   reap_interval, max_pools, max_connections, log_level, hook_steps,
--   pool_idle_timeout, pools_overflow, record
--                  -- as poolrt.runtime{} (record: every worker appends to
--                  -- the one trace file; max_connections caps this worker)
--   shared_max_connections -- given to init(): one budget shared by every
--                  -- worker of this nginx (made before the workers fork)
--   pools = { name = { max = 4, acquire_timeout = 2, ... } }
--                  -- created now, options as rt:pool()
--   thread_pool    -- nginx thread_pool name ("poolrt")
--   max_inflight   -- worker-thread calls at once (32; <= lua_worker_thread_vm_pool_size)
--   shdict         -- a lua_shared_dict for reload_all() and all-worker metrics
--   check_interval -- seconds between a worker's checks for reload_all (0.1)
--   drain_grace    -- seconds shutdown() waits for connections in use (C's PRT_DRAIN_GRACE)
function M.init_worker(cfg)
  if W.rt then error("resty.poolrt: init_worker called twice in this worker", 2) end
  cfg = load_config(cfg or W.cfg, 2)
  if cfg.shared_max_connections and not W.budget then
    error("resty.poolrt: shared_max_connections belongs in init() (init_by_lua), before nginx forks its workers", 2)
  end
  W.cfg = cfg
  local ro = {}
  for k in pairs(I.runtime_fields) do ro[k] = cfg[k] end
  ro.policy = policy_path(cfg.policy)
  ro.shared_budget = ro.shared_budget or W.budget
  W.rt = poolrt.runtime(ro)
  W.addr = W.rt:address()
  W.epoch = W.epoch + 1
  W.pools = new_pool_cache()
  W.clusters = {}
  W.thread_pool = cfg.thread_pool or "poolrt"
  W.max_inflight = cfg.max_inflight or 32
  W.sem = assert(semaphore.new(W.max_inflight))
  W.inflight = 0
  for name, opts in pairs(cfg.pools or {}) do M.pool(name, opts) end
  W.dict = shdict(cfg)
  if W.dict then
    -- Start from nginx.conf's policy; a reload_all() of this configuration
    -- that predates this worker (a respawn after a crash) is applied now.
    W.reload_seen = W.dict:get("reload:base") or 0
    apply_reload_all(false)
    local interval = cfg.check_interval or 0.1
    local ok, err = ngx.timer.every(interval, apply_reload_all)
    if not ok then error("resty.poolrt: cannot start the reload timer: " .. tostring(err), 2) end
    ok, err = ngx.timer.every(1, function(premature) if not premature then snapshot() end end)
    if not ok then error("resty.poolrt: cannot start the stats timer: " .. tostring(err), 2) end
    snapshot()
  end
  return true
end

local function need_rt(level)
  if not W.rt then error("resty.poolrt: no runtime in this worker (call init_worker in init_worker_by_lua)", level + 1) end
  return W.rt
end

-- This worker's runtime, for anything that is quick (stats, policy_stats).
function M.runtime() return need_rt(2) end

---------------------------------------------------------------------------
-- Pools
---------------------------------------------------------------------------
local Pool = {}
Pool.__index = Pool

-- The pool objects of this worker, by name.  They hold no C pool (the
-- worker-thread VMs do the work), only the options to recreate one; a
-- sweep forgets those of pools no longer live in the runtime (evicted
-- tenants), so churning tenants leave nothing behind.  An object a caller
-- still holds keeps working and comes back into the cache when used.
function new_pool_cache()
  return I.new_cache(function(p, live) return not live[p.name] end, function() return I.live_names(W.rt) end)
end

-- The pool `name` of this worker; created from opts (or the config's
-- entry) when it does not exist yet (that is quick: no connection is opened).
function M.pool(name, opts)
  local p = W.pools and W.pools.items[name]
  if p then return p end
  local rt = need_rt(2)
  if type(name) ~= "string" then error("resty.poolrt: pool name must be a string", 2) end
  opts = opts or (W.cfg.pools and W.cfg.pools[name]) or {}
  local null_value = opts.null
  local o = {}
  -- ngx.null (a light userdata) crosses into the thread VMs as itself, so
  -- there it marks NULL array elements and JSON nulls as well; another null
  -- value would not keep its identity and is filled in below (columns only).
  for k, v in pairs(opts) do if k ~= "null" or v == null then o[k] = v end end
  local h = rt:pool(name, o)
  -- the acquire timeout as the binding derived it from C's defaults and these options
  p = setmetatable({ name = name, _null = null_value, _opts = o, _timeout = I.acquire_timeout(h) }, Pool)
  W.pools:put(name, p)
  return p
end

local function check_params(...)
  local n = select("#", ...)
  for i = 1, n do
    local v = select(i, ...)
    local t = type(v)
    if not (t == "string" or t == "number" or t == "boolean" or t == "table" or v == nil or v == null) then
      error("resty.poolrt: query parameter " .. i .. " of type " .. t .. " (want string, number, boolean, nil, ngx.null or an array)", 4)
    end
  end
  return n
end

local function has_null(...)
  for i = 1, select("#", ...) do if select(i, ...) == null then return true end end
  return false
end

local function denull(...)
  local args = { n = select("#", ...), ... }
  for i = 1, args.n do if args[i] == null then args[i] = nil end end
  return unpack(args, 1, args.n)
end

-- Runs fn(...) on a worker thread once a slot is free; the wait counts
-- against the pool's acquire timeout.  Returns what the thread returned.
local function dispatch(self, timeout, fn, ...)
  need_rt(3)
  local start = poolrt.now()
  timeout = timeout or self._timeout
  local deadline = start + timeout
  local ok, err = W.sem:wait(timeout)
  if not ok then
    if err == "timeout" then
      return nil, fmt("pool %q: acquire timed out after %.3fs (waiting for a worker thread: %d/%d in flight)",
                      self.name, timeout, W.inflight, W.max_inflight)
    end
    return nil, fmt("pool %q: cannot wait for a worker thread: %s", self.name, tostring(err)), "busy"
  end
  W.inflight = W.inflight + 1
  -- pcall: run_worker_thread raises outside rewrite/access/content, and the
  -- slot must come back either way.
  if W.pools.items[self.name] == nil then W.pools:put(self.name, self) end
  local pok, tok, tag, res = pcall(ngx.run_worker_thread, W.thread_pool, THREAD, fn, W.addr, W.epoch,
                                   self.name, self._opts, deadline, poolrt.now() - start, ...)
  W.inflight = W.inflight - 1
  W.sem:post(1)
  if not pok then error("resty.poolrt: " .. tostring(tok), 3) end
  if not tok then
    -- The thread machinery itself failed: no free Lua VM, the thread pool
    -- is unknown or its queue refused the task, or the module did not load.
    return nil, fmt("pool %q: no worker thread: %s (thread_pool %q, max_inflight %d; "
                    .. "check lua_worker_thread_vm_pool_size and thread_pool max_queue)",
                    self.name, tostring(tag), W.thread_pool, W.max_inflight), "busy"
  end
  if tag == true then return res end
  if tag == false then return nil, res, "error" end
  error(res, 3)
end

local function fill_nulls(rows, value)
  local cols = rows.columns
  if value == nil or not cols then return rows end
  for i = 1, #rows do
    local row = rows[i]
    for j = 1, #cols do
      if row[cols[j]] == nil then row[cols[j]] = value end
    end
  end
  return rows
end

-- `method`: the connection's "query" or "exec_simple" (which the pool's
-- options, e.g. prepare = false, apply to on the worker thread).
local function query(self, method, sql, ...)
  if type(sql) ~= "string" then error("resty.poolrt: sql must be a string", 3) end
  check_params(...)
  local rows, err, code
  if has_null(...) then
    rows, err, code = dispatch(self, nil, "query", method, sql, denull(...))
  else
    rows, err, code = dispatch(self, nil, "query", method, sql, ...)
  end
  if not rows then return nil, err, code end
  return fill_nulls(rows, self._null)
end

-- rows, or nil, err, code.  code is "busy" when no worker thread could be
-- had (map it to 503), "error" for timeouts, refused connects and query
-- errors (err carries the pool's state).  Programming errors raise.
-- Callable where ngx.run_worker_thread is: rewrite, access, content.
function Pool:query(sql, ...) return query(self, "query", sql, ...) end
function Pool:exec_simple(sql, ...) return query(self, "exec_simple", sql, ...) end

-- Runs require(module)[fn](conn, ...) on a worker thread with one
-- connection of this pool (released afterwards, also on error) -- for
-- transactions and several statements on one connection.  `module` is
-- loaded in the worker-thread VM; fn's results must be plain values.
function Pool:run(module, fn, ...)
  if type(module) ~= "string" or type(fn) ~= "string" then error("resty.poolrt: pool:run(module, fn, ...)", 2) end
  return dispatch(self, nil, "run", module, fn, ...)
end

-- Many statements for one worker thread (poolrt's pool:query_batch: a Sync
-- each, one failing touches no other; opts.spread as there): results, errs
-- as poolrt's, or nil, err, code (as query).  One thread hop for the lot.
function Pool:query_batch(stmts, opts)
  if type(stmts) ~= "table" then error("resty.poolrt: query_batch wants a list of { sql, params... }", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("resty.poolrt: query_batch(stmts, { spread = })", 2) end
  for i, st in ipairs(stmts) do
    if type(st) ~= "table" or type(st[1]) ~= "string" then
      error("resty.poolrt: query_batch statement " .. i .. ": want { sql, params... }", 2)
    end
    check_params(unpack(st, 2, table.maxn(st))) -- ngx.null crosses as itself and is NULL there
  end
  local r, err, code = dispatch(self, nil, "batch", stmts, opts and { spread = opts.spread })
  if not r then return nil, err, code end
  for i = 1, #stmts do
    if r.results[i] then fill_nulls(r.results[i], self._null) end
  end
  return r.results, r.errs
end

function Pool:stats() return need_rt(2):pool(self.name):stats() end

---------------------------------------------------------------------------
-- Clusters: poolrt's rt:cluster in a worker (docs/clusters.md): two pools
-- of this module, `name` (target_session_attrs=read-write) and `name.read`
-- (prefer-standby), each with the conninfo C wrote for it, so that a
-- worker-thread VM re-creating either one (evicted meanwhile) makes the
-- cluster's pool again.
---------------------------------------------------------------------------
-- query, exec_simple, query_batch and run on the primary pool; read and
-- read_batch on the read pool (a standby while one is up); pools() and
-- stats() of both: rows (results, errs for a batch), or nil, err, code.
local Cluster = I.cluster_class{ "query", "exec_simple", "query_batch", "run" }

-- The cluster `name` of this worker, created from opts (pool options, as
-- pool()'s; opts.conninfo or the runtime's, without target_session_attrs)
-- the first time; raises as poolrt's rt:cluster does.
function M.cluster(name, opts)
  local cl = W.clusters and W.clusters[name]
  if cl then return cl end
  local rt = need_rt(2)
  if type(name) ~= "string" then error("resty.poolrt: cluster name must be a string", 2) end
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do if k ~= "null" or v == null then o[k] = v end end
  local ok, h = pcall(rt.cluster, rt, name, o)
  if not ok then error("resty.poolrt: " .. (tostring(h):gsub("^poolrt: ", "")), 2) end
  local cw, cr = h:conninfos()
  local function pool_opts(ci)
    local po = {}
    for k, v in pairs(opts) do po[k] = v end
    po.conninfo = ci
    return po
  end
  cl = setmetatable({ name = name, primary = M.pool(name, pool_opts(cw)),
                      reads = M.pool(name .. ".read", pool_opts(cr)) }, Cluster)
  W.clusters[name] = cl
  return cl
end

---------------------------------------------------------------------------
-- LISTEN/NOTIFY: pool:listen(channels) as in poolrt (lua/poolrt/listen.lua),
-- with open, wait and close on worker threads.  A waiting listener holds a
-- worker thread (and one of max_inflight) for up to its timeout: wait in
-- short slices.  The garbage collector closes a listener never closed in
-- the worker itself (UNLISTEN, bounded by the pool's acquire_timeout).
---------------------------------------------------------------------------
local ffi = require "ffi"
local Listener = {}
Listener.__index = Listener

-- A listener, or nil, err, code (as query).
function Pool:listen(channels)
  if type(channels) == "string" then channels = { channels } end
  if type(channels) ~= "table" or #channels == 0 then
    error("resty.poolrt: listen(channels): channels must be a non-empty list of names", 2)
  end
  local laddr, err, code = dispatch(self, nil, "listen_open", channels)
  if not laddr then return nil, err, code end
  local ptr = ffi.gc(ffi.cast("prt_listener*", laddr), poolrt.C.prt_listener_close)
  return setmetatable({ _ptr = ptr, _addr = laddr, pool = self }, Listener)
end

local function idle_listener(self, what)
  if not self._ptr then error("resty.poolrt: listener is closed", 3) end
  if self._busy then error("resty.poolrt: listener:" .. what .. ": another light thread is waiting on it", 3) end
end

-- { channel =, payload =, pid = }, or nil, "timeout" (, detail while
-- reconnecting), nil, "reconnected" (once), or nil, err, code.
function Listener:wait(timeout)
  idle_listener(self, "wait")
  if type(timeout) ~= "number" or timeout < 0 then
    error("resty.poolrt: listener:wait(timeout): timeout must be a number >= 0", 2)
  end
  self._busy = true
  local ok, res, err, code = pcall(dispatch, self.pool, timeout, "listen_wait", self._addr)
  self._busy = false
  if not ok then error(res, 0) end
  if not res then return nil, err, code end
  if res.channel then return res end
  return nil, res.err, res.why
end

-- UNLISTENs and gives the connection back (on a worker thread; in the
-- worker when none can be had).  Idempotent.
function Listener:close()
  if not self._ptr then return true end
  idle_listener(self, "close")
  local ptr = self._ptr
  self._ptr = nil
  ffi.gc(ptr, nil)
  if not dispatch(self.pool, nil, "listen_close", self._addr) then poolrt.C.prt_listener_close(ptr) end
  return true
end

---------------------------------------------------------------------------
-- Stats, reload, shutdown
---------------------------------------------------------------------------

-- This worker's per-pool statistics (as rt:stats()).
function M.stats() return need_rt(2):stats() end
function M.policy_stats() return need_rt(2):policy_stats() end

-- Reloads the policy of this worker (quick: compile + dry run); true or
-- nil, err while the old policy keeps serving.
function M.reload(path)
  return need_rt(2):reload(path)
end

-- Reloads the policy in every worker of this nginx: this one now, the
-- others within check_interval (needs `shdict`).  Waits up to `timeout`
-- seconds (default 5) for every worker to report; returns a table
-- { ok = bool, generation = n, workers = { [id] = {ok=, err=, policy_generation=, pid=} } }
-- or nil, err.
function M.reload_all(path, timeout)
  need_rt(2)
  local d = W.dict
  if not d then return nil, "resty.poolrt: reload_all needs the shdict option (a lua_shared_dict)" end
  if path ~= nil and type(path) ~= "string" then error("resty.poolrt: reload_all(path): path must be a string", 2) end
  d:set("reload:path", path or "")
  local gen = assert(d:incr("reload:gen", 1, 0))
  apply_reload_all(false)
  local count = ngx.worker.count()
  local deadline = ngx.now() + (timeout or 5)
  local workers
  while true do
    workers = {}
    local done, all_ok = 0, true
    for id = 0, count - 1 do
      local s = d:get("reload:w" .. id)
      s = s and I.deserialize(s)
      if s and s.gen >= gen then
        done = done + 1
        all_ok = all_ok and s.ok
      end
      workers[id] = s or false
    end
    if done == count then
      return { ok = all_ok, generation = gen, workers = workers }
    end
    if ngx.now() >= deadline then
      return nil, fmt("reload generation %d: %d of %d workers applied it within %.1fs", gen, done, count, timeout or 5)
    end
    ngx.sleep(0.01)
    ngx.update_time()
  end
end

-- What this worker runs: worker id and pid, reload generation seen, policy
-- generation, per-pool stats.
function M.worker_status()
  local rt = need_rt(2)
  return {
    worker = ngx.worker.id(), pid = ngx.worker.pid(), reload_gen = W.reload_seen,
    policy_generation = rt:policy_stats().generation, pools = rt:stats(), inflight = W.inflight,
  }
end

-- Drains and frees this worker's runtime (exit_worker_by_lua): new work
-- fails, connections in use get `grace` seconds (default: drain_grace, else
-- C's PRT_DRAIN_GRACE) to come back, then every server connection is closed.
function M.shutdown(grace)
  local rt = W.rt
  if not rt then return true end
  W.rt = nil
  W.pools = nil
  W.clusters = nil
  local ok = rt:drain(grace or (W.cfg and W.cfg.drain_grace))
  rt:close()
  ngx.log(ok and ngx.NOTICE or ngx.WARN, "resty.poolrt: worker ", ngx.worker.id() or "?", " closed its pools",
          ok and "" or " (connections still in use after the grace period were left to the OS)")
  return ok
end

---------------------------------------------------------------------------
-- Prometheus metrics
---------------------------------------------------------------------------
local function num(v)
  if v == nil then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == math.floor(v) and math.abs(v) < 2^53 then return fmt("%d", v) end
  return fmt("%.9g", v)
end

local function esc(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- This worker's exposition text: the core's, so the host, scripts and
-- nginx expose the same names (src/metrics.c).
local function worker_text() return W.rt:metrics() end

-- Publishes this worker's metrics for /metrics served by any worker.
function snapshot()
  if not (W.rt and W.dict) then return end
  W.dict:set("stats:w" .. (ngx.worker.id() or 0), worker_text(), 5)
end

-- The shared budget's own numbers: the same in every worker, so /metrics
-- shows them once, for the nginx as a whole (no worker label), as read now.
local nginx_wide = { poolrt_shared_budget_max = true, poolrt_shared_budget_used = true, poolrt_shared_budget_members = true }

-- Merges per-worker texts into one exposition: every sample gets a
-- worker="<id>" label (but nginx_wide ones, from the live text only), and
-- each family (HELP, TYPE, samples) appears once, as Prometheus requires.
local function merge(texts)
  local order, fams = {}, {}
  for _, t in ipairs(texts) do
    local label, cur = 'worker="' .. esc(t.worker) .. '"', nil
    for line in t.text:gmatch("[^\n]+") do
      local kind, name = line:match("^# (%u+) ([%w_:]+)")
      if kind then
        cur = name
        local f = fams[name]
        if not f then
          f = { samples = {} }
          fams[name] = f
          order[#order + 1] = name
        end
        f[kind] = f[kind] or line
      elseif not line:match("^#") then
        local sname, rest = line:match("^([%w_:]+)(.*)$")
        if sname and nginx_wide[sname] then
          if t.live then fams[sname].samples[1] = line end
        elseif sname then
          if rest:sub(1, 1) == "{" then
            rest = "{" .. label .. (rest:sub(2, 2) == "}" and "" or ",") .. rest:sub(2)
          else
            rest = "{" .. label .. "}" .. rest
          end
          local f = fams[cur or sname]
          if not f then
            f = { samples = {} }
            fams[sname] = f
            order[#order + 1] = sname
          end
          f.samples[#f.samples + 1] = sname .. rest
        end
      end
    end
  end
  local out = {}
  for _, name in ipairs(order) do
    local f = fams[name]
    if f.HELP then out[#out + 1] = f.HELP end
    if f.TYPE then out[#out + 1] = f.TYPE end
    for _, smp in ipairs(f.samples) do out[#out + 1] = smp end
  end
  return concat(out, "\n") .. "\n"
end

-- Prometheus text exposition (version 0.0.4) of every worker's runtime
-- (with `shdict`: each worker publishes its metrics every second and after
-- a reload; this worker's are live), or of this worker only.  Names as the
-- core's rt:metrics(), plus a worker="<ngx.worker.id()>" label.
function M.metrics()
  need_rt(2)
  local me = ngx.worker.id() or 0
  local texts = { { worker = me, text = worker_text(), live = true } }
  if W.dict then
    W.dict:set("stats:w" .. me, texts[1].text, 5)
    for id = 0, ngx.worker.count() - 1 do
      if id ~= me then
        local t = W.dict:get("stats:w" .. id)
        if t then texts[#texts + 1] = { worker = id, text = t } end
      end
    end
    sort(texts, function(a, b) return a.worker < b.worker end)
  end
  return merge(texts)
end

---------------------------------------------------------------------------
-- A small JSON encoder for handlers (no cjson in Debian's nginx lua module)
---------------------------------------------------------------------------
local json_esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                   ["\r"] = "\\r", ["\t"] = "\\t" }

local function json(v, depth)
  local t = type(v)
  if v == nil or v == null then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return num(v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return json_esc[c] or fmt("\\u%04x", c:byte()) end) .. '"'
  end
  if t == "table" and (depth or 0) < 32 then
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    local parts = {}
    if count == n and (n > 0 or getmetatable(v) == M.json_array) then
      for i = 1, n do parts[i] = json(v[i], (depth or 0) + 1) end
      return "[" .. concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    sort(keys)
    for i, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[i] = json(k) .. ":" .. json(val, (depth or 0) + 1)
    end
    return "{" .. concat(parts, ",") .. "}"
  end
  error("resty.poolrt.json: cannot encode a " .. t, 2)
end

-- setmetatable({}, poolrt.json_array) encodes as [] rather than {}.
M.json_array = {}
function M.json(v) return json(v) end

return M
