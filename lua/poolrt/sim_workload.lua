-- poolrt.sim_workload -- reads a `poolrt sim` workload file into a checked,
-- plain description of the traffic to simulate.
--
-- A workload is a Lua file that returns a table (docs/sim.md#workload-files
-- is the reference of its vocabulary).  Everything the
-- simulator needs is checked here, before any simulation starts, so a typo
-- costs a one-line message naming the file and the field (pools[2].hold_ms)
-- rather than a run.  Times in the file are seconds (duration, at, rate
-- steps) or milliseconds (fields ending in _ms); what load() returns is in
-- seconds throughout:
--
--   { file, duration, runtime = {poolrt.runtime{} options},
--     endpoints = { {name, connect = dist, query = dist, outages = {{at, seconds}},
--                    role = "primary"|"standby", lag = {{at, dist}}} },
--     promote   = { {at, endpoint = index} },
--     sources   = { {name, opts, threads, background, rate = {{at, per_s}},
--                    hold = dist, statements, bursts = {{at, n}}, replay_t = {...}, replay_hold = {...},
--                    attrs = target_session_attrs or nil} } }
--
-- with dist = { kind = "const"|"exp"|"uniform"|"lognormal", a, b } as in
-- prt_sim_dist.  Tenants become one source each (their total rate split by
-- popularity); a trace's lines become replays on the sources named in it;
-- a pool or tenant with `reads` becomes two sources, NAME (read-write) and
-- NAME.read (prefer-standby), as rt:cluster's two pools.
-- Pure Lua: the C side is poolrt/sim.lua's.
local I = require "poolrt.internal"

local W = {}

-- A problem found at `field`; load() catches it and names the file.
local Problem = {}
local function fail(field, fmt, ...)
  error(setmetatable({ field = field, msg = fmt:format(...) }, Problem), 0)
end

local function describe(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return type(v) == "table" and "a table" or tostring(v)
end

-- Raises unless every key of table t is in `allowed` (a set).
local function only(t, allowed, field)
  for k in pairs(t) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      fail(field, "unknown field %s (known: %s)", describe(k), table.concat(names, ", "))
    end
  end
end

local function set(...)
  local s = {}
  for _, k in ipairs{ ... } do s[k] = true end
  return s
end

local function number(v, field, least, what)
  if type(v) ~= "number" or v ~= v or v == math.huge or v < least then
    fail(field, "want %s >= %g, got %s", what or "a number", least, describe(v))
  end
  return v
end

local function integer(v, field, least)
  number(v, field, least, "a whole number")
  if v ~= math.floor(v) then fail(field, "want a whole number >= %d, got %s", least, describe(v)) end
  return v
end

local function table_of(v, field, what)
  if type(v) ~= "table" then fail(field, "want %s, got %s", what, describe(v)) end
  return v
end

-- A list (t[1..n], nothing else) of what `each(item, field)` returns.
local function list(v, field, what, each)
  table_of(v, field, "a list of " .. what)
  local out = {}
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) or k > #v then
      fail(field, "want a list of %s, found key %s", what, describe(k))
    end
  end
  for i, item in ipairs(v) do out[i] = each(item, ("%s[%d]"):format(field, i)) end
  return out
end

-- Distributions, in milliseconds in the file: a number (constant) or
-- { dist = kind, <its parameters> }.  The parameters are prt_sim_dist's a, b.
local DISTS = { const = { "value" }, exp = { "mean" }, uniform = { "min", "max" },
                lognormal = { "median", "p99" } }

local function dist(v, field)
  if type(v) == "number" then return { kind = "const", a = number(v, field, 0) / 1000, b = 0 } end
  table_of(v, field, 'milliseconds: a number or { dist = "const"|"exp"|"uniform"|"lognormal", ... }')
  local params = DISTS[v.dist]
  if not params then
    fail(field .. ".dist", 'want "const", "exp", "uniform" or "lognormal", got %s', describe(v.dist))
  end
  only(v, set("dist", unpack(params)), field)
  local a = number(v[params[1]], field .. "." .. params[1], 0)
  local b = params[2] and number(v[params[2]], field .. "." .. params[2], 0) or 0
  if v.dist == "uniform" and b < a then fail(field, "max (%g) is below min (%g)", b, a) end
  if v.dist == "lognormal" and (a <= 0 or b < a) then
    fail(field, "want 0 < median <= p99, got median %g, p99 %g", a, b)
  end
  return { kind = v.dist, a = a / 1000, b = b / 1000 }
end

-- Steps {{from_s, value}, ...} in increasing time order, each as
-- { at = from_s, [key] = value(step[2], its field) }; `shape` names the
-- pair in errors ("{from_s, ms}").
local function steps(v, field, shape, key, value)
  local last = -1
  return list(v, field, shape .. " steps", function(step, f)
    table_of(step, f, shape)
    if #step ~= 2 then fail(f, "want %s, got %d values", shape, #step) end
    local at = number(step[1], f .. "[1]", 0, "a time in seconds")
    if at <= last then fail(f, "steps must be in increasing time order (%g after %g)", at, last) end
    last = at
    return { at = at, [key] = value(step[2], f .. "[2]") }
  end)
end

-- Arrival rates: a number (acquires/s from 0 on) or steps {{from_s, per_s}, ...}.
local function rate(v, field)
  if v == nil then return {} end
  if type(v) == "number" then return { { at = 0, per_s = number(v, field, 0) } } end
  return steps(v, field, "{from_s, acquires_per_s}", "per_s",
               function(x, f) return number(x, f, 0, "acquires per second") end)
end

local function bursts(v, field)
  if v == nil then return {} end
  return list(v, field, "{ at = s, n = acquires }", function(b, f)
    table_of(b, f, "{ at = s, n = acquires }")
    only(b, set("at", "n"), f)
    return { at = number(b.at, f .. ".at", 0), n = integer(b.n, f .. ".n", 1) }
  end)
end

-- libpq's target_session_attrs words (docs/clusters.md).
local ATTRS = set("any", "read-write", "primary", "read-only", "standby", "prefer-standby")

-- Pool options as rt:pool() takes them, checked by poolrt's own rule.
local function pool_opts(v, field)
  if v == nil then return {} end
  table_of(v, field, "a table of pool options (as rt:pool)")
  local problem = I.opts_problem(v, I.pool_fields, "pool")
  if problem then fail(field, "%s", problem) end
  if v.conninfo then fail(field .. ".conninfo", "a simulated pool has no server to name") end
  return v
end

-- What every source shares: options, threads, what an acquire does.
local function work(v, field, src)
  src.opts = pool_opts(v.opts, field .. ".opts")
  src.threads = v.threads == nil and (src.opts.threads or 0) or integer(v.threads, field .. ".threads", 0)
  src.hold = dist(v.hold_ms == nil and 0 or v.hold_ms, field .. ".hold_ms")
  src.statements = v.statements == nil and 1 or integer(v.statements, field .. ".statements", 0)
  if v.background ~= nil and type(v.background) ~= "boolean" then
    fail(field .. ".background", "want true or false, got %s", describe(v.background))
  end
  src.background = v.background == true
  src.replay_t, src.replay_hold = {}, {}
  if v.target_session_attrs ~= nil and not ATTRS[v.target_session_attrs] then
    fail(field .. ".target_session_attrs", "want one of libpq's: any, read-write, primary, read-only, standby, "
         .. "prefer-standby; got %s", describe(v.target_session_attrs))
  end
  src.attrs = v.target_session_attrs
  if v.reads ~= nil then
    number(v.reads, field .. ".reads", 0, "a fraction")
    if v.reads > 1 then fail(field .. ".reads", "want a fraction of the acquires, 0 to 1, got %s", describe(v.reads)) end
    if v.target_session_attrs ~= nil then
      fail(field .. ".target_session_attrs", "reads makes two pools, NAME (read-write) and NAME.read "
           .. "(prefer-standby): leave target_session_attrs out")
    end
    src.reads = v.reads
  end
  return src
end

local POOL_FIELDS = set("name", "opts", "threads", "background", "rate", "hold_ms", "statements", "bursts",
                        "target_session_attrs", "reads")

local function pool(v, field)
  table_of(v, field, "a pool: { name = ..., rate = ..., hold_ms = ... }")
  only(v, POOL_FIELDS, field)
  if type(v.name) ~= "string" or v.name == "" then fail(field .. ".name", "want a pool name, got %s", describe(v.name)) end
  local src = work(v, field, { name = v.name })
  src.rate, src.bursts = rate(v.rate, field .. ".rate"), bursts(v.bursts, field .. ".bursts")
  return src
end

local TENANT_FIELDS = set("count", "prefix", "opts", "threads", "background", "rate", "popularity", "zipf_s",
                          "hold_ms", "statements", "target_session_attrs", "reads")

-- Shares of the total rate, tenant 1 the most popular: zipf (1/i^s,
-- normalised) or uniform.
local function shares(n, popularity, s)
  local w, sum = {}, 0
  for i = 1, n do
    w[i] = popularity == "uniform" and 1 or 1 / i ^ s
    sum = sum + w[i]
  end
  for i = 1, n do w[i] = w[i] / sum end
  return w
end

-- A tenants group: `count` pools prefix1..prefixN sharing one total rate.
local function tenants(v, field, out)
  table_of(v, field, "{ count = n, rate = total acquires/s, ... }")
  only(v, TENANT_FIELDS, field)
  local n = integer(v.count, field .. ".count", 1)
  local prefix = v.prefix == nil and "tenant_" or v.prefix
  if type(prefix) ~= "string" then fail(field .. ".prefix", "want a string, got %s", describe(prefix)) end
  local popularity = v.popularity == nil and "zipf" or v.popularity
  if popularity ~= "zipf" and popularity ~= "uniform" then
    fail(field .. ".popularity", 'want "zipf" or "uniform", got %s', describe(popularity))
  end
  local s = v.zipf_s == nil and 1 or number(v.zipf_s, field .. ".zipf_s", 0)
  local total = rate(v.rate, field .. ".rate")
  local template = work(v, field, {})
  for i, share in ipairs(shares(n, popularity, s)) do
    local src = setmetatable({ name = prefix .. i, replay_t = {}, replay_hold = {}, bursts = {}, rate = {} },
                             { __index = template })
    for k, step in ipairs(total) do src.rate[k] = { at = step.at, per_s = step.per_s * share } end
    out[#out + 1] = src
  end
end

local ENDPOINT_FIELDS = set("name", "connect_ms", "query_ms", "outages", "role", "lag_ms")

-- A standby's replay lag: a distribution (milliseconds, from time 0) or
-- steps {{from_s, ms}, ...} whose ms is a number or a distribution.
local function lag(v, field)
  if v == nil then return {} end
  if type(v) ~= "table" or v.dist ~= nil then return { { at = 0, lag = dist(v, field) } } end
  return steps(v, field, "{from_s, ms}", "lag", dist)
end

local function endpoint(v, field, i)
  table_of(v, field, "an endpoint: { name = ..., connect_ms = ..., query_ms = ... }")
  only(v, ENDPOINT_FIELDS, field)
  local name = v.name == nil and ("endpoint" .. i) or v.name
  if type(name) ~= "string" then fail(field .. ".name", "want a string, got %s", describe(name)) end
  return {
    name = name,
    connect = dist(v.connect_ms == nil and 2.7 or v.connect_ms, field .. ".connect_ms"),
    query = dist(v.query_ms == nil and 0 or v.query_ms, field .. ".query_ms"),
    outages = v.outages == nil and {} or list(v.outages, field .. ".outages", "{ at = s, seconds = s }",
      function(o, f)
        table_of(o, f, "{ at = s, seconds = s }")
        only(o, set("at", "seconds"), f)
        return { at = number(o.at, f .. ".at", 0), seconds = number(o.seconds, f .. ".seconds", 0) }
      end),
    role = v.role == nil and "primary" or (v.role == "primary" or v.role == "standby") and v.role
           or fail(field .. ".role", 'want "primary" or "standby", got %s', describe(v.role)),
    lag = lag(v.lag_ms, field .. ".lag_ms"),
  }
end

-- promote = { { at = s, endpoint = "name" }, ... }: endpoint names to indices.
local function promotions(v, endpoints)
  if v == nil then return {} end
  local index = {}
  for i, e in ipairs(endpoints) do index[e.name] = i end
  return list(v, "promote", '{ at = s, endpoint = "name" }', function(p, f)
    table_of(p, f, '{ at = s, endpoint = "name" }')
    only(p, set("at", "endpoint"), f)
    local i = index[p.endpoint]
    if not i then fail(f .. ".endpoint", "want the name of one of the endpoints, got %s", describe(p.endpoint)) end
    return { at = number(p.at, f .. ".at", 0), endpoint = i }
  end)
end

-- A source with `reads` as rt:cluster's two pools: NAME (read-write) gets
-- 1 - reads of its arrivals and bursts, NAME.read (prefer-standby) the rest.
local function split_reads(src)
  local function part(name, attrs, share)
    local rate, bursts = {}, {}
    for k, step in ipairs(src.rate) do rate[k] = { at = step.at, per_s = step.per_s * share } end
    for _, b in ipairs(src.bursts) do
      local n = math.floor(b.n * share + 0.5)
      if n > 0 then bursts[#bursts + 1] = { at = b.at, n = n } end
    end
    return setmetatable({ name = name, attrs = attrs, rate = rate, bursts = bursts, replay_t = {}, replay_hold = {} },
                        { __index = src })
  end
  return part(src.name, "read-write", 1 - src.reads), part(src.name .. ".read", "prefer-standby", src.reads)
end

-- Options of poolrt.runtime{} that mean something without a server.
local RUNTIME_FIELDS = set("max_pools", "max_connections", "reap_interval", "pool_idle_timeout", "pools_overflow",
                           "hook_steps", "policy_budget", "server_sample_interval")

local function runtime(v, field)
  if v == nil then return {} end
  table_of(v, field, "a table of poolrt.runtime{} options")
  for k in pairs(v) do
    if k == "policy" then fail(field .. ".policy", "the policies to simulate come from the command line") end
    if I.runtime_fields[k] and not RUNTIME_FIELDS[k] then
      fail(field .. "." .. tostring(k), "has no meaning in a simulation")
    end
  end
  only(v, RUNTIME_FIELDS, field)
  local problem = I.opts_problem(v, I.runtime_fields, "runtime")
  if problem then fail(field, "%s", problem) end
  if v.pools_overflow ~= nil and v.pools_overflow ~= "fail" and v.pools_overflow ~= "allow" then
    fail(field .. ".pools_overflow", 'want "fail" or "allow", got %s', describe(v.pools_overflow))
  end
  return v
end

-- Reads a recorded trace (docs/sim.md#traces; poolrt --record writes it) into replays
-- on the sources named in it (src.replay_t, src.replay_hold: seconds, in
-- file order -- the engine sorts them by t, as lines are written at
-- release), creating a source (from `template`) for each pool the
-- workload does not define.  Flat arrays and one pattern match per plain
-- line: an hour of busy traffic is millions of lines.  Returns the latest
-- moment a replayed acquire ends.
local TRACE_HEADER = "# poolrt trace v1"
local TRACE_COLUMNS = "t,pool,wait_ms,hold_ms,query_ms,queries,result"
local PLAIN_LINE = "^([^,]*),([^,]*),[^,]*,([^,]*),[^,]*,[^,]*,([^,]*)$"

-- The fields of one CSV line: a field in double quotes may hold commas,
-- and "" inside it is one quote (how the recorder writes such pool names).
local function csv_fields(line)
  local out, i = {}, 1
  while i <= #line + 1 do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then return {} end                       -- unterminated: not a trace line
        buf[#buf + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) ~= '"' then j = q + 1 break end
        buf[#buf + 1], j = '"', q + 2
      end
      out[#out + 1] = table.concat(buf)
      if j <= #line and line:sub(j, j) ~= "," then return {} end
      i = j + 1
    else
      local comma = line:find(",", i, true) or #line + 1
      out[#out + 1] = line:sub(i, comma - 1)
      i = comma + 1
    end
  end
  return out
end

-- t, pool, hold_ms of one trace line; nil when it is not one.  Only the
-- pool name can be quoted: the plain pattern first, CSV rules when the
-- name starts with a quote (or the line has too many commas for it).
local function trace_line(line)
  local t, name, hold, result = line:match(PLAIN_LINE)
  if not t or name:byte(1) == 34 --[[ " ]] then
    local fields = csv_fields(line)
    t, name, hold = nil, nil, nil
    if #fields == 7 then t, name, hold, result = fields[1], fields[2], fields[4], fields[7] end
  end
  t, hold = tonumber(t), tonumber(hold)
  if t and t >= 0 and hold and hold >= 0 and name ~= "" then return t, name, hold, result == "ok" end
end

-- A line that timed out or failed recorded no hold (it is read as -1);
-- replayed, it holds its pool's median served hold if it gets a
-- connection.  Callers racing for one release are recorded with t a few
-- microseconds out of the order they queued in: one that timed out but
-- sorts first would otherwise be served and hold nothing, letting an
-- extra caller in behind it.
local function fill_unserved(src)
  local served, holds = {}, src.replay_hold
  for i = 1, #holds do
    if holds[i] >= 0 then served[#served + 1] = holds[i] end
  end
  table.sort(served)
  local typical = served[math.ceil(#served / 2)] or 0
  for i = 1, #holds do
    if holds[i] < 0 then holds[i] = typical end
  end
end

function W.read_trace(path, field, by_name, sources, template)
  local f, err = io.open(path)
  if not f then fail(field, "cannot read the trace: %s", err) end
  local n, last, touched = 0, 0, {}
  local last_src, ts, holds, k
  for line in f:lines() do
    n = n + 1
    if n == 1 and line ~= TRACE_HEADER then
      f:close()
      fail(("%s (%s:1)"):format(field, path), "not a poolrt trace: want %q first, got %q", TRACE_HEADER, line:sub(1, 60))
    end
    local first = line:byte(1)
    if first and first ~= 35 --[[ # ]] and line ~= TRACE_COLUMNS then
      local t, name, hold, ok = trace_line(line)
      if not t then
        f:close()
        fail(("%s (%s:%d)"):format(field, path, n), "want %s, got %q", TRACE_COLUMNS, line:sub(1, 80))
      end
      local src = by_name[name]
      if not src then
        src = setmetatable({ name = name, replay_t = {}, replay_hold = {}, rate = {}, bursts = {} },
                           { __index = template })
        by_name[name] = src
        sources[#sources + 1] = src
      end
      if src ~= last_src then                   -- runs of one pool: no length lookup per line
        last_src, ts, holds, k = src, src.replay_t, src.replay_hold, #src.replay_t
        touched[src] = true
      end
      k, hold = k + 1, hold / 1000
      ts[k], holds[k] = t, ok and hold or -1
      if t + hold > last then last = t + hold end
    end
  end
  f:close()
  if n == 0 then fail(field, "%s is empty (want %q first)", path, TRACE_HEADER) end
  for src in pairs(touched) do fill_unserved(src) end
  return last
end

-- trace = "FILE" or { file = "FILE", opts = {...}, threads = n }: FILE
-- relative to the workload's directory.
local function trace(v, field, dir, by_name, sources)
  if v == nil then return nil end
  if type(v) == "string" then v = { file = v } end
  table_of(v, field, 'a file name or { file = "...", opts = {...} }')
  only(v, set("file", "opts", "threads"), field)
  if type(v.file) ~= "string" then fail(field .. ".file", "want a file name, got %s", describe(v.file)) end
  local path = v.file:sub(1, 1) == "/" and v.file or dir .. v.file
  local template = work(v, field, {})
  return W.read_trace(path, field, by_name, sources, template)
end

local TOP_FIELDS = set("duration", "runtime", "endpoints", "pools", "tenants", "trace", "plot_step", "promote")

-- The checked workload of table `v` read from `file` (limits: max_endpoints).
local function normalise(v, file, limits)
  table_of(v, "(the file)", "the file to return a table")
  only(v, TOP_FIELDS, "(top level)")
  local wl = { file = file, runtime = runtime(v.runtime, "runtime"), sources = {} }
  wl.endpoints = v.endpoints == nil and {} or list(v.endpoints, "endpoints", "endpoints", function(e, f)
    return endpoint(e, f, tonumber(f:match("%[(%d+)%]$")))
  end)
  if #wl.endpoints > limits.max_endpoints then
    fail("endpoints", "at most %d endpoints, got %d", limits.max_endpoints, #wl.endpoints)
  end
  -- Several sources may share a pool (foreground and background work, two
  -- kinds of request); the first one's opts make the pool.
  for _, src in ipairs(v.pools == nil and {} or list(v.pools, "pools", "pools", pool)) do
    wl.sources[#wl.sources + 1] = src
  end
  if v.tenants ~= nil then
    local groups = (type(v.tenants) == "table" and v.tenants[1] ~= nil) and v.tenants or { v.tenants }
    for i, g in ipairs(groups) do tenants(g, groups == v.tenants and ("tenants[%d]"):format(i) or "tenants", wl.sources) end
  end
  wl.promote = promotions(v.promote, wl.endpoints)
  local split = {}
  for _, src in ipairs(wl.sources) do
    if src.reads then
      local w, r = split_reads(src)
      split[#split + 1], split[#split + 2] = w, r
    else
      split[#split + 1] = src
    end
  end
  wl.sources = split
  local by_name = {} -- a trace's lines go to the first foreground source of their pool
  for i = #wl.sources, 1, -1 do
    local src = wl.sources[i]
    if not src.background then by_name[src.name] = src end
  end
  local dir = file:match("^(.*/)") or ""
  local trace_end = trace(v.trace, "trace", dir, by_name, wl.sources)
  if #wl.sources == 0 then fail("(top level)", "nothing to simulate: give pools, tenants or a trace") end
  if v.duration == nil and not trace_end then fail("duration", "want the virtual seconds to simulate") end
  wl.duration = v.duration == nil and math.ceil(trace_end) + 1 or number(v.duration, "duration", 0)
  if wl.duration <= 0 then fail("duration", "want a number > 0, got %s", describe(v.duration)) end
  wl.plot_step = v.plot_step ~= nil and number(v.plot_step, "plot_step", 0) or nil
  return wl
end

-- The checked workload from `file`, or nil and "file: field: problem"
-- (or the Lua error, which names file:line, when the file does not run).
-- limits.max_endpoints: how many endpoints the engine reports on.
function W.load(file, limits)
  local chunk, err = loadfile(file)
  if not chunk then return nil, err end
  local ok, v = pcall(chunk)
  if not ok then return nil, tostring(v) end
  local done, wl = pcall(normalise, v, file, limits or { max_endpoints = 16 })
  if done then return wl end
  if getmetatable(wl) == Problem then return nil, ("%s: %s: %s"):format(file, wl.field, wl.msg) end
  error(wl, 0)
end

return W
