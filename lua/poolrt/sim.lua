-- poolrt.sim -- `poolrt sim POLICY.lua WORKLOAD.lua [--compare P2.lua ...]
-- [--csv] [--plot FILE.png] [--seed N]`: what a policy does to a workload,
-- before it goes live.
--
-- The host (host/main.c) hands `poolrt sim`'s arguments to main() here.
-- The workload file is read and checked by poolrt/sim_workload.lua; each
-- policy gets its own prt_sim (src/sim/: the real runtime, pools and
-- hooks on a virtual clock, simulated server connections), fed the same
-- workload and seed, and run; poolrt/sim_report.lua prints the results
-- side by side, as CSV, or as a gnuplot chart.  M.run is the same
-- without the command line, for scripts and specs.
local ffi = require "ffi"
local poolrt = require "poolrt"
local I = require "poolrt.internal"
local W = require "poolrt.sim_workload"
local R = require "poolrt.sim_report"
local C = poolrt.C

local M = {}

local ERRLEN = 512
local errbuf = ffi.new("char[?]", ERRLEN)
local function lasterr() return ffi.string(errbuf) end

-- The engine's limits and names, from C.
M.MAX_ENDPOINTS = C.PRT_SIM_MAX_ENDPOINTS
local KINDS = { const = C.PRT_SIM_CONST, exp = C.PRT_SIM_EXP, uniform = C.PRT_SIM_UNIFORM,
                lognormal = C.PRT_SIM_LOGNORMAL }

local function cdist(d) return ffi.new("prt_sim_dist", { kind = KINDS[d.kind], a = d.a, b = d.b }) end

-- Raises unless the prt_sim_* call returned >= 0 (the result otherwise).
local function ck(rc, what)
  if rc < 0 then error(("poolrt sim: %s: %s"):format(what, ffi.string(C.prt_strerror(rc))), 0) end
  return rc
end

-- Feeds workload wl to simulation s.  Returns what must stay referenced
-- as long as s lives (the pool options a source re-creates its pool from).
local function feed(s, wl)
  for i, e in ipairs(wl.endpoints) do
    local idx = ck(C.prt_sim_endpoint(s, e.name, cdist(e.connect), cdist(e.query)), "endpoint " .. e.name)
    for _, o in ipairs(e.outages) do
      ck(C.prt_sim_outage(s, idx, o.at, o.seconds), ("endpoints[%d].outages"):format(i))
    end
    ck(C.prt_sim_role(s, idx, e.role == "standby" and C.PRT_ROLE_STANDBY or C.PRT_ROLE_PRIMARY),
       ("endpoints[%d].role"):format(i))
    for _, l in ipairs(e.lag) do ck(C.prt_sim_lag(s, idx, l.at, cdist(l.lag)), ("endpoints[%d].lag_ms"):format(i)) end
  end
  for i, p in ipairs(wl.promote) do
    ck(C.prt_sim_promote(s, p.endpoint - 1, p.at), ("promote[%d]"):format(i))
  end
  local keep = {}
  for _, src in ipairs(wl.sources) do
    local o, anchor = I.pool_opts(src.opts)
    keep[#keep + 1] = { o, anchor }
    local what = "pool " .. src.name
    local i = ck(C.prt_sim_source(s, src.name, o, src.threads, src.background and 1 or 0), what)
    ck(C.prt_sim_work(s, i, cdist(src.hold), src.statements), what)
    if src.attrs then ck(C.prt_sim_attrs(s, i, src.attrs), what) end
    for _, step in ipairs(src.rate) do ck(C.prt_sim_rate(s, i, step.at, step.per_s), what) end
    for _, b in ipairs(src.bursts) do ck(C.prt_sim_burst(s, i, b.at, b.n), what) end
    local t, hold = src.replay_t, src.replay_hold
    for k = 1, #t do ck(C.prt_sim_replay(s, i, t[k], hold[k]), what) end
  end
  return keep
end

-- A prt_sim of `policy` (a file) fed workload wl, or nil, err when the
-- policy does not load.  run_sim frees it (the GC, if it never runs).
local function new_sim(policy, wl, seed)
  local out = ffi.new("prt_sim*[1]")
  if C.prt_sim_new(I.runtime_opts(wl.runtime), policy, seed, out, errbuf, ERRLEN) ~= 0 then
    return nil, lasterr()
  end
  local sim = { s = ffi.gc(out[0], C.prt_sim_free), policy = policy }
  sim.keep = feed(sim.s, wl)
  return sim
end

-- prt_sim_result.closed_by's order, named by the core (PRT_CLOSE_*).
local CLOSE_REASONS = {}
for r = 0, C.PRT_CLOSE_NREASONS - 1 do CLOSE_REASONS[r + 1] = ffi.string(C.prt_close_reason_name(r)) end

-- prt_sim_result as a Lua table (counts as numbers).
local function result_table(r, wl)
  local n = tonumber
  local t = { acquires = n(r.acquires), timeouts = n(r.timeouts), errors = n(r.errors),
              wait_p50_ms = r.wait_p50_ms, wait_p99_ms = r.wait_p99_ms, wait_max_ms = r.wait_max_ms,
              opened = n(r.opened), closed = n(r.closed), closed_by = {},
              peak_connections = r.peak_connections, endpoint_max_min = r.endpoint_max_min, endpoints = {},
              pools_evicted = n(r.pools_evicted), pools_recreated = n(r.pools_recreated),
              hook_calls = n(r.hook_calls), hook_errors = n(r.hook_errors),
              background_jobs = n(r.background_jobs), background_peak = n(r.background_peak),
              wall_seconds = r.wall_seconds, virtual_seconds = r.virtual_seconds, events = n(r.events),
              reads = n(r.reads), stale_reads = n(r.stale_reads), writes = n(r.writes),
              role_refusals = n(r.role_refusals),
              close_reasons = CLOSE_REASONS }
  for i, reason in ipairs(CLOSE_REASONS) do t.closed_by[reason] = n(r.closed_by[i - 1]) end
  for i = 0, r.nendpoints - 1 do
    local e = wl.endpoints[i + 1]
    t.endpoints[i + 1] = { name = e and e.name or "default", acquires = n(r.endpoint_acquires[i]),
                           writes = n(r.endpoint_writes[i]) }
  end
  return t
end

-- The time series of a finished simulation, one point per `step` virtual
-- seconds up to `duration`, each the mean (in use, open) or p99 (wait) over
-- its step and placed at the step's middle: { t = {...}, in_use = {...},
-- open = {...}, wait_p99_ms = {...} }.
local function series(s, duration, step)
  local max = math.max(1, math.ceil(duration / step - 1e-9))
  local in_use, open, p99 = ffi.new("double[?]", max), ffi.new("double[?]", max), ffi.new("double[?]", max)
  local n = C.prt_sim_series(s, step, in_use, open, p99, max)
  local out = { t = {}, in_use = {}, open = {}, wait_p99_ms = {} }
  for i = 0, n - 1 do
    out.t[i + 1], out.in_use[i + 1], out.open[i + 1], out.wait_p99_ms[i + 1] = (i + 0.5) * step, in_use[i], open[i], p99[i]
  end
  return out
end

-- Runs simulation `sim` over wl; returns its result table (with .series
-- when `step` is given), or raises with the engine's error.
local function run_sim(sim, wl, step)
  local r = ffi.new("prt_sim_result")
  if C.prt_sim_run(sim.s, wl.duration, r, errbuf, ERRLEN) ~= 0 then
    error(("poolrt sim: %s: %s"):format(sim.policy, lasterr()), 0)
  end
  local t = result_table(r, wl)
  t.policy, t.file = sim.policy:match("([^/]*)$"), sim.policy
  if step then t.series = series(sim.s, wl.duration, step) end
  ffi.gc(sim.s, nil)
  C.prt_sim_free(sim.s)
  sim.s = nil
  return t
end

-- How finely the plot samples: the workload's plot_step, else ~400 points.
function M.plot_step(wl)
  return wl.plot_step or math.max(wl.duration / 400, 0.001)
end

-- Loads workload `file`; the checked workload, or nil, err.
function M.load(file)
  return W.load(file, { max_endpoints = M.MAX_ENDPOINTS })
end

-- Simulates workload wl (from M.load) under each policy file in `policies`
-- with the same seed; returns the result tables in that order, or nil, err
-- when a policy does not load (none is run then).  opts: seed (default 1),
-- series = true to collect the time series for plots.
function M.run(policies, wl, opts)
  opts = opts or {}
  local sims = {}
  for i, policy in ipairs(policies) do
    local f, ferr = io.open(policy)
    if not f then return nil, "cannot read policy " .. ferr end
    f:close()
    local sim, err = new_sim(policy, wl, opts.seed or 1)
    if not sim then return nil, ("policy %s: %s"):format(policy, err) end
    sims[i] = sim
  end
  local step = opts.series and M.plot_step(wl) or nil
  local results = {}
  for i, sim in ipairs(sims) do results[i] = run_sim(sim, wl, step) end
  return results
end

local USAGE = [[
usage: poolrt sim POLICY.lua WORKLOAD.lua [--compare POLICY2.lua ...] [--csv] [--plot FILE.png] [--seed N]

Runs WORKLOAD.lua (docs/sim.md#try-a-policy-before-you-ship-it) through the
real pool code on a virtual clock, once per policy with the same seed,
and prints the results side by side.
  --compare P.lua ...  more policies to run against the same workload
  --csv                one CSV row per policy instead of the table
  --plot FILE.png      chart connections in use and acquire wait p99 over
                       time, one line per policy (needs gnuplot: Debian
                       package gnuplot-nox)
  --seed N             random seed (default 1); the same seed, the same run
]]

-- The command line as { policies = {...}, workload, csv, plot, seed }, or
-- nil, err.
local function parse(args)
  local o, pos, i = { policies = {}, seed = 1 }, {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--csv" then
      o.csv = true
    elseif a == "--plot" or a == "--seed" then
      local v = args[i + 1]
      if v == nil then return nil, a .. " needs a value" end
      i = i + 1
      if a == "--plot" then
        o.plot = v
      else
        o.seed = tonumber(v)
        if not o.seed or o.seed < 0 or o.seed ~= math.floor(o.seed) or o.seed >= 2 ^ 53 then
          return nil, "--seed needs a whole number >= 0, got " .. v
        end
      end
    elseif a == "--compare" then
      local n = 0
      while args[i + 1] and args[i + 1]:sub(1, 2) ~= "--" do
        i, n = i + 1, n + 1
        o.policies[#o.policies + 1] = args[i]
      end
      if n == 0 then return nil, "--compare needs at least one policy file" end
    elseif a == "--help" or a == "-h" then
      o.help = true
    elseif a:sub(1, 2) == "--" then
      return nil, "unknown option " .. a
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if o.help then return o end
  if #pos ~= 2 then return nil, "want POLICY.lua WORKLOAD.lua, got " .. #pos .. " file(s)" end
  table.insert(o.policies, 1, pos[1])
  o.workload = pos[2]
  return o
end

-- `poolrt sim ...`: returns the exit code (0 done, 1 a bad policy,
-- workload or chart, 2 a bad command line).
function M.main(args)
  local o, err = parse(args)
  if not o then
    io.stderr:write("poolrt sim: ", err, "\n", USAGE)
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  local function failed(msg)
    io.stderr:write("poolrt sim: ", msg, "\n")
    return 1
  end
  if o.plot then
    local ok, perr = R.can_plot(o.plot)
    if not ok then return failed(perr) end
  end
  local wl, werr = M.load(o.workload)
  if not wl then return failed(werr) end
  -- The engine's refusals (ck, run_sim) are raised as "poolrt sim: ..." messages; others are bugs.
  local ok, results, rerr = pcall(M.run, o.policies, wl, { seed = o.seed, series = o.plot ~= nil })
  if not ok then
    if type(results) == "string" and results:find("^poolrt sim: ") then return failed(results:sub(13)) end
    error(results, 0)
  end
  if not results then return failed(rerr) end
  io.stdout:write(o.csv and R.csv(results) or R.table(results, wl, o.seed))
  if o.plot then
    local ok, perr = R.plot(results, wl, o.plot)
    if not ok then return failed(perr) end
    io.stderr:write("poolrt sim: chart written to ", o.plot, "\n")
  end
  return 0
end

return M
