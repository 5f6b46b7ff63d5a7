-- policy_boot.lua -- how a policy file is loaded: the sandbox it runs in,
-- the step budget that stops runaway hooks, and the trampolines C calls.
--
-- This file is compiled into libpoolrt (the Makefile turns it into
-- build/gen/policy_boot.h with `luajit -bg`; src/policy_state.c runs it
-- in every policy state the runtime creates), so it lives beside the C
-- that embeds it and is not installed as a user module.  It is also a
-- plain chunk that returns its table, so specs and tools load it by path
-- (dofile "src/policy_boot.lua") and load policies exactly as production
-- does.
--
-- Why a step budget, and why in the source: LuaJIT runs no debug hooks
-- inside JIT-compiled traces, so a count hook cannot stop `while true do
-- end` once it is compiled.  Instead, every place where Lua can repeat work
-- gets a call to a budget check: the start of every `do` block (the body of
-- each `while` and `for`), the start of every `repeat` body, every `goto`,
-- and the start of every function body (recursion, tail calls).  The check
-- is a local function the JIT inlines into traces: a decrement and a guard
-- (a few ns per loop iteration).  When the budget runs out the guard fails,
-- the trace exits, and the check raises "step budget exhausted" in the
-- interpreter.  Code between checks is straight-line, so a hook always
-- stops within its budget, with the JIT on.  Inserted text never adds a
-- newline, so file:line in errors stays right.
local B = {}

-- Hook names and the built-in strategies a hook may name as a string are
-- C's (src/policy_hooks.c).  A state booted by C is handed them (setup's
-- `names`); loaded as a plain module (specs, tools) they are read over FFI
-- from libpoolrt.  B.HOOKS maps hook -> { built-in = true }, B.ORDER lists
-- hooks in C's order.

-- Takes C's list, in hook order, of { hook name, built-in name, ... }.
function B.use_names(names)
  local hooks, order = {}, {}
  for i, entry in ipairs(names) do
    local set = {}
    for k = 2, #entry do set[entry[k]] = true end
    hooks[entry[1]], order[i] = set, entry[1]
  end
  B.HOOKS, B.ORDER = hooks, order
end

-- The same list read from libpoolrt through its public API.
function B.names_from_c()
  local ffi = require "ffi"
  local C = require("poolrt").C
  local names = {}
  for h = 0, C.PRT_NHOOKS - 1 do
    local entry = { ffi.string(C.prt_policy_hook_name(h)) }
    for i = 0, math.huge do
      local b = C.prt_policy_builtin_name(h, i)
      if b == nil then break end
      entry[#entry + 1] = ffi.string(b)
    end
    names[h + 1] = entry
  end
  return names
end

local function vocabulary()
  if not B.HOOKS then B.use_names(B.names_from_c()) end
  return B.HOOKS, B.ORDER
end

local TICK = "__prt_tick"

---------------------------------------------------------------------------
-- Instrumentation
---------------------------------------------------------------------------

-- Returns the end (inclusive) of a long bracket starting at i ("[[", "[==["),
-- or nil when s:sub(i) does not open one.
local function long_bracket_end(s, i)
  local eq = s:match("^%[(=*)%[", i)
  if not eq then return nil end
  local close = "]" .. eq .. "]"
  local e = select(2, s:find(close, i + #eq + 2, true))
  return e or #s
end

-- Splits Lua source into significant tokens: { text, start, stop }.
local function tokens(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = s:find("[^%s]", i) or n + 1
    elseif s:sub(i, i + 1) == "--" then
      local e = long_bracket_end(s, i + 2)
      i = (e or (s:find("\n", i, true) or n)) + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = s:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      out[#out + 1] = { "<string>", i, j }
      i = j + 1
    elseif c == "[" and long_bracket_end(s, i) then
      local e = long_bracket_end(s, i)
      out[#out + 1] = { "<string>", i, e }
      i = e + 1
    elseif c:match("[%a_]") then
      local e = select(2, s:find("^[%w_]+", i))
      out[#out + 1] = { s:sub(i, e), i, e }
      i = e + 1
    elseif c:match("%d") or (c == "." and s:sub(i + 1, i + 1):match("%d")) then
      local e = select(2, s:find("^[%w%.]+", i))
      while s:sub(e, e):match("[eEpP]") and s:sub(e + 1, e + 1):match("[%+%-]") do
        e = select(2, s:find("^[%w%.]+", e + 2)) or e + 1
      end
      out[#out + 1] = { "<number>", i, e }
      i = e + 1
    elseif s:sub(i, i + 1) == "::" then
      out[#out + 1] = { "::", i, i + 1 }
      i = i + 2
    else
      out[#out + 1] = { c, i, i }
      i = i + 1
    end
  end
  return out
end

-- Returns the instrumented source, or nil, err when the source uses a name
-- reserved for the budget check.
function B.instrument(src)
  local ins = {} -- byte positions after which to insert a check (before, for goto)
  local fn_state = nil -- nil, "name" (after `function`), "params" (inside its parens)
  for _, t in ipairs(tokens(src)) do
    local text = t[1]
    if text:sub(1, #TICK) == TICK or text:match("^__prt_") then
      return nil, "names starting with __prt_ are reserved for poolrt"
    end
    if fn_state == "params" then
      if text == ")" then ins[#ins + 1] = { t[3], "after" }; fn_state = nil end
    elseif fn_state == "name" and text == "(" then
      fn_state = "params"
    elseif text == "function" then
      fn_state = "name"
    elseif text == "do" or text == "repeat" then
      ins[#ins + 1] = { t[3], "after" }
    elseif text == "goto" then
      ins[#ins + 1] = { t[2] - 1, "before" }
    end
  end
  local parts, last = {}, 0
  for _, p in ipairs(ins) do
    parts[#parts + 1] = src:sub(last + 1, p[1])
    parts[#parts + 1] = p[2] == "after" and (" " .. TICK .. "();") or (TICK .. "(); ")
    last = p[1]
  end
  parts[#parts + 1] = src:sub(last + 1)
  -- same line 1: the chunk receives the check as its first vararg
  local body = table.concat(parts)
  if body:sub(1, 2) == "#!" then body = "--" .. body end
  return "local " .. TICK .. " = ...; " .. body
end

---------------------------------------------------------------------------
-- Sandbox
---------------------------------------------------------------------------

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do if not (except and except[k]) then c[k] = v end end
  return c
end

-- A fresh global table for one policy: pure functions only, plus env().
-- `getenv` lets tests substitute the environment.
function B.sandbox(getenv)
  getenv = getenv or os.getenv
  local env = {
    math = copy(math), string = copy(string, { dump = true }), table = copy(table),
    os = { time = os.time, clock = os.clock },
    pairs = pairs, ipairs = ipairs, next = next, select = select, type = type,
    tonumber = tonumber, tostring = tostring, unpack = unpack, error = error, assert = assert,
    pcall = pcall, setmetatable = setmetatable, getmetatable = getmetatable,
    rawget = rawget, rawequal = rawequal,
    env = function(name)
      if type(name) ~= "string" then error("env(name): name must be a string", 2) end
      return getenv(name)
    end,
  }
  env._G = env
  return env
end

-- "file:line: " of the policy code that triggered a metamethod (error's
-- level counting does not see through metamethod frames in LuaJIT).
local boot_source = debug.getinfo(1, "S").source
local function caller()
  for level = 2, 8 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.currentline > 0 and info.source ~= boot_source then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end

-- Globals may be defined while the file loads; afterwards the environment
-- is frozen, so hooks cannot leak state between calls through globals, and
-- a typo in a global name is an error, not a silent nil.
local function unavailable(_, k)
  error(caller() .. "'" .. tostring(k) .. "' is not available in policies", 0)
end

local function freeze(env)
  setmetatable(env, {
    __newindex = function(_, k)
      error(caller() .. "policy hooks may not set globals (assignment to '" .. tostring(k) .. "'); use a local", 0)
    end,
    __index = unavailable,
  })
end

local function strict_load_env(env)
  setmetatable(env, { __index = unavailable })
end

-- Fields of a policy table that are settings rather than hooks: endpoint.c's
-- circuit breaker and lag limit, read and checked by C (policy_state.c).
B.SETTINGS = { ban = true, max_lag = true }

-- Compiles and runs a policy source, checking what it returns.  Returns
-- the policy table, or nil, "file:line: message".
function B.load(src, chunkname, tick, getenv)
  local code, ierr = B.instrument(src)
  if not code then return nil, chunkname:gsub("^@", "") .. ": " .. ierr end
  local chunk, err = loadstring(code, chunkname)
  if not chunk then return nil, err end
  local env = B.sandbox(getenv)
  strict_load_env(env)
  setfenv(chunk, env)
  local ok, pol = pcall(chunk, tick or function() end)
  if not ok then return nil, tostring(pol) end
  freeze(env)
  local name = chunkname:gsub("^@", "")
  if type(pol) ~= "table" then
    return nil, name .. ": a policy file must return a table of hooks, got " .. type(pol)
  end
  local hooks, order = vocabulary()
  for k, v in pairs(pol) do
    local builtins = hooks[k]
    if not builtins and not B.SETTINGS[k] then
      return nil, name .. ": unknown hook '" .. tostring(k) .. "' (hooks: " .. table.concat(order, ", ") .. ")"
    end
    if not builtins then
      -- a setting (B.SETTINGS): C reads and checks its value
    elseif type(v) == "string" then
      if not builtins[v] and v ~= "default" then
        local names = {}
        for b in pairs(builtins) do names[#names + 1] = '"' .. b .. '"' end
        table.sort(names)
        return nil, name .. ": hook " .. k .. ' = "' .. v .. '" is not a built-in'
          .. (#names > 0 and (" (one of " .. table.concat(names, ", ") .. ")") or " (this hook has none: give a function)")
      end
    elseif type(v) ~= "function" then
      return nil, name .. ": hook " .. k .. " must be a function or a built-in name, got " .. type(v)
    end
  end
  return pol
end

---------------------------------------------------------------------------
-- Policy states (called from src/policy_state.c)
---------------------------------------------------------------------------

-- Sets up a state for one policy: `ud` points at the C context struct the
-- hooks read their inputs from; `names` is C's hook vocabulary (see
-- B.use_names); `views_cdef` declares the views (src/policy_views.h's
-- PRT_VIEWS block, which the build turns into a C string: one copy).  Returns the hook kinds (name -> "function" or the
-- built-in's name), the trampolines C calls keyed by hook name, and the
-- policy table itself (for file:line of each hook).
function B.setup(ud, chunkname, src, budget_msg, names, views_cdef)
  local ffi = require "ffi"
  if not pcall(ffi.typeof, "prt_hook_ctx") then ffi.cdef(views_cdef) end
  B.use_names(names)
  local ctx = ffi.cast("prt_hook_ctx*", ud)
  local function tick()
    local b = ctx.budget - 1
    ctx.budget = b
    if b < 0 then error(budget_msg, 2) end
  end
  local getenv = os.getenv
  -- What a hook reads from a pool view beyond its plain number fields:
  -- strings and booleans as Lua values, nil for "not given", and the
  -- runtime's limits (one copy in C, ctx.limits).
  local limits = ctx.limits
  local accessors = {
    name = function(v) return ffi.string(v.name_) end,
    protected = function(v) return v.protected_ ~= 0 end,
    pinned = function(v) return v.pinned_ ~= 0 end,
    evictable = function(v) if v.evictable_ >= 0 then return v.evictable_ ~= 0 end end,
    configured = function(v) if v.configured_ > 0 then return v.configured_ end end,
    max_pools = function() return limits.max_pools end,
    max_connections = function() return limits.max_connections end,
    pool_idle_timeout = function() return limits.pool_idle_timeout end,
    env = function() return getenv end,
  }
  pcall(ffi.metatype, "prt_pool_view", {
    __index = function(v, k)
      local get = accessors[k]
      if get then return get(v) end
      return nil
    end,
  })
  -- FFI arrays are not bounds-checked; the idle and route lists are, so a
  -- hook can read nothing outside the views (and #idle, #conns work).
  local function bounded(ctype, what)
    pcall(ffi.metatype, ctype, {
      __index = function(l, i)
        if type(i) ~= "number" or not (i >= 1 and i <= l.n) then
          error(what .. "[" .. tostring(i) .. "]: index out of range 1.." .. l.n, 2)
        end
        return l.v[i]
      end,
      __newindex = function() error("the " .. what .. " list is read-only", 2) end,
      __len = function(l) return l.n end,
    })
  end
  bounded("prt_idle_list", "idle")
  bounded("prt_route_list", "conns")
  bounded("prt_endpoint_list", "endpoints")
  local roles = { [0] = "unknown", "primary", "standby" }
  local ep_accessors = {
    name = function(v) return ffi.string(v.name_) end,
    role = function(v) return roles[v.role_] or "unknown" end,
    up = function(v) return v.up_ ~= 0 end,
    allowed = function(v) return v.allowed_ ~= 0 end,
    preferred = function(v) return v.preferred_ ~= 0 end,
    banned = function(v) return v.banned_ ~= 0 end,
  }
  pcall(ffi.metatype, "prt_endpoint_view", {
    __index = function(v, k)
      local get = ep_accessors[k]
      if get then return get(v) end
      return nil
    end,
  })
  local pol, err = B.load(src, chunkname, tick)
  if not pol then error(err, 0) end
  local pool, req, idle = ctx.pool, ctx.req, ctx.idle
  -- admit/evict are rare: they get plain copies, which stay valid if a
  -- hook keeps them (the C array behind them may move).  The list itself
  -- also answers the runtime's limits.
  local fields = { "max", "min_idle", "total", "idle", "in_use", "waiting", "threads", "created_at",
                   "last_used_at" }
  for k in pairs(accessors) do if k ~= "env" then fields[#fields + 1] = k end end
  local function pool_list()
    local list = { max_pools = limits.max_pools, max_connections = limits.max_connections,
                   pool_idle_timeout = limits.pool_idle_timeout }
    for i = 1, ctx.npools do
      local v, t = ctx.pools[i], {}
      for _, f in ipairs(fields) do t[f] = v[f] end
      list[i] = t
    end
    return list
  end
  local f = pol
  local calls = {
    pick = function() return f.pick(idle, pool) end,
    size = function() return f.size(pool) end,
    overflow = function() return f.overflow(pool, req) end,
    admit = function(name) return f.admit(pool_list(), name) end,
    evict = function() return f.evict(pool_list(), ctx.now) end,
    reap = function() return f.reap(idle, pool, ctx.now) end,
    concurrency = function() return f.concurrency(pool) end,
    on_evict = function(name, reason) return f.on_evict(name, reason) end,
    budget = function() return f.budget(ctx.server, ctx.rt) end,
    route = function() return f.route(ctx.route, pool) end,
    endpoint = function() return f.endpoint(ctx.endpoints, pool) end,
  }
  local kinds, tramps = {}, {}
  for _, h in ipairs(B.ORDER) do
    if not calls[h] then error("policy_boot: C names hook '" .. h .. "', which has no trampoline here", 0) end
    local v = pol[h]
    if type(v) == "function" then
      kinds[h] = "function"
      tramps[h] = calls[h]
    elseif type(v) == "string" and v ~= "default" then
      kinds[h] = v
    end
  end
  return kinds, tramps, pol
end

return B
