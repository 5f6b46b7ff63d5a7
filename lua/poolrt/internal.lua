-- poolrt.internal -- what poolrt's own modules share and applications must
-- not use: the one way between poolrt.lua, its submodules (poolrt/*.lua),
-- resty.poolrt and the C core's Lua entry points (src/spawn.c).  Nothing
-- here is a promise to users; every public name is in poolrt.lua's table.
--
-- Two kinds of entries.  Plain helpers that need no library live in this
-- file.  The rest close over poolrt.lua's state (its library handle,
-- buffers, handle metatables), so poolrt.lua fills them in while it loads:
-- requiring this module loads poolrt first, so either order works, also in
-- a fresh rt:spawn state.
--
--   filled by poolrt.lua:
--     C                       the library (ffi.C in the host, else libpoolrt.so)
--     pool_fields, runtime_fields   option name -> Lua type (true: any)
--     pool_opts(opts)         -> prt_pool_opts cdata, anchor (keep it alive)
--     runtime_opts(opts, level)     -> prt_runtime_opts cdata
--     new_req, run_batch      pool:query_batch's steps (poolrt/workers.lua)
--     workers, workers_looping      coroutines that are poolrt.workers workers
--     refresh(pool)           re-resolve a handle whose pool was evicted
--     live_names(rt)          set of the runtime's live pool names
--     acquire_timeout(pool)   the pool's acquire_timeout, seconds
--     conn_ptr(conn), pool_ptr(pool), null_of(pool)   a handle's C pointer / null value
--     limited_worker, thread_main   entry points of rt:run_limited / rt:spawn threads
local I = {}
-- poolrt.lua requires this module while it loads and fills this table.
package.loaded["poolrt.internal"] = I

---------------------------------------------------------------------------
-- Serialization of plain values between Lua states (rt:spawn, nginx's
-- shared dict).
---------------------------------------------------------------------------
local function serialize(v, depth)
  local t = type(v)
  if t == "nil" or t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v then return "0/0" end
    if v == math.huge then return "math.huge" elseif v == -math.huge then return "-math.huge" end
    return string.format("%.17g", v)
  end
  if t == "string" then return string.format("%q", v) end
  if t == "table" and (depth or 0) < 32 then
    local parts = {}
    for k, val in pairs(v) do
      parts[#parts + 1] = "[" .. serialize(k, (depth or 0) + 1) .. "]=" .. serialize(val, (depth or 0) + 1)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("poolrt: cannot pass a " .. t .. " between threads (strings, numbers, booleans, plain tables only)", 3)
end
I.serialize = serialize

function I.deserialize(s)
  local f = assert(loadstring("return " .. s, "=serialized"))
  setfenv(f, { math = { huge = math.huge } })
  return f()
end

---------------------------------------------------------------------------
-- Options
---------------------------------------------------------------------------

-- What is wrong with `opts` against `fields` (name -> type, or true for
-- any), as a message without a prefix; nil when nothing is.  `what` names
-- the kind ("pool" -> 'unknown pool option "x"'), nil for none.  Only
-- names and types: C checks every value (src/pool.c, src/runtime.c).
function I.opts_problem(opts, fields, what)
  local kind = what and (what .. " ") or ""
  for k, v in pairs(opts) do
    local want = fields[k]
    if not want then return ("unknown %soption %q"):format(kind, tostring(k)) end
    if want ~= true and type(v) ~= want then
      return ("%soption %s must be a %s, got %s"):format(kind, k, want, type(v))
    end
  end
end

-- Options renamed in this release; the old name still works, and its first
-- use logs one warning (per Lua state) naming the new one.
I.renamed = { policy_budget = "hook_steps" }
local warned = {}

-- Logs "<where>: option <old> is now <new> ..." once per old name; `log`
-- (default: poolrt's log at warn) writes the line.
function I.warn_renamed(old, new, where, log)
  if warned[old] then return end
  warned[old] = true
  local msg = ("%s: option %s is now %s; %s is accepted until the next release"):format(where, old, new, old)
  if log then log(msg) else I.C.prt_log(I.C.PRT_LOG_WARN, msg) end
end

---------------------------------------------------------------------------
-- Name -> object caches that forget dead objects
---------------------------------------------------------------------------

-- A name -> object table that forgets the objects `stale(obj, ctx)` calls
-- dead, in one sweep whenever it has doubled since the last one (amortized
-- O(1) per insert; `snapshot()`, when given, computes ctx once per sweep).
-- A runtime's pool handles are one: a handle pins its C pool, so without
-- the sweep every tenant a runtime ever saw would stay allocated after its
-- eviction.  resty.poolrt keeps its worker-side pools in another.
local Cache = {}
Cache.__index = Cache
local SWEEP_MIN = 32

-- A cluster handle's methods that its two pools answer the same way in
-- poolrt and resty.poolrt: `methods` (names) go to the primary pool
-- (self.primary), read/read_batch to the read pool (self.reads), and
-- pools() and stats() cover both.  Returns the metatable.
function I.cluster_class(methods)
  local Cluster = {}
  Cluster.__index = Cluster
  for _, m in ipairs(methods) do
    Cluster[m] = function(self, ...) local p = self.primary return p[m](p, ...) end
  end
  function Cluster:read(sql, ...) return self.reads:query(sql, ...) end
  function Cluster:read_batch(stmts, opts) return self.reads:query_batch(stmts, opts) end
  function Cluster:pools() return self.primary, self.reads end
  function Cluster:stats()
    return { [self.primary.name] = self.primary:stats(), [self.reads.name] = self.reads:stats() }
  end
  return Cluster
end

function I.new_cache(stale, snapshot)
  return setmetatable({ items = {}, n = 0, sweep_at = SWEEP_MIN, stale = stale, snapshot = snapshot }, Cache)
end

function Cache:put(name, obj)
  local items = self.items
  if items[name] == nil then self.n = self.n + 1 end
  items[name] = obj
  if self.n < self.sweep_at then return end
  local ctx, n = self.snapshot and self.snapshot(), 0
  for k, v in pairs(items) do
    if self.stale(v, ctx) then items[k] = nil else n = n + 1 end
  end
  self.n, self.sweep_at = n, math.max(SWEEP_MIN, 2 * n)
end

function Cache:drop(name)
  if self.items[name] == nil then return end
  self.items[name] = nil
  self.n = self.n - 1
end

-- Required on its own (a spawned state, a spec): load poolrt, which fills
-- the rest.  While poolrt itself is loading, package.loaded.poolrt is
-- require's marker, and poolrt fills the table once this returns.
if package.loaded.poolrt == nil then require "poolrt" end
return I
