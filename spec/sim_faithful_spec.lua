-- Faithfulness of `poolrt sim` (issue 13, item 5): one small workload runs
-- for 10 s live -- the real test server, real time, real threads, a pool
-- over two endpoints -- while the runtime records a trace; then `poolrt
-- sim` simulates the same workload twice, once from a workload file that
-- spells out the same arrivals and once by replaying the recorded trace.
-- Connections opened, timeouts and the split over the two endpoints must
-- agree with the live run within 10% or 2.
--
-- The workload: a pool of 4 (acquire_timeout 0.5 s, max_lifetime 3 s, so
-- connections are recycled and reopened), the shipped lru policy (so the
-- endpoint split is a property of the pool, not of chance), Poisson
-- arrivals at 10/s for 10 s each holding its connection for one
-- `select pg_sleep(0.2)`, and a burst of 40 acquires at once at 5 s, of
-- which about 30 time out.  The burst's timing has 100 ms of margin both
-- ways (rounds of 0.2 s against a 0.5 s timeout), so a loaded machine
-- shifts nothing by a whole round.
local H = require "spec.helper"
local poolrt = require "poolrt"
local SW = require "spec.support.sim_workers"

local WORKLOAD = { seed = 42, rate = 10, hold = 0.2, seconds = 10, burst = 40, burst_at = 5 }
local POOL = { max = 4, acquire_timeout = 0.5, max_lifetime = 3 }
local BASE_THREADS = 16 -- the Poisson arrivals' threads (a thread is busy <= 0.7 s, 0.6 arrivals/s each)

-- The test server named twice: a pool over two endpoints that are one server.
local function two_endpoints()
  local port = assert(H.conninfo:match("port=(%d+)"), "POOLRT_CONNINFO has no port")
  return (H.conninfo:gsub("host=%S+", "host=127.0.0.1,127.0.0.1"):gsub("port=%d+", ("port=%s,%s"):format(port, port)))
end

-- Runs the workload live, recording into `trace`; returns what happened.
local function live(trace)
  local rt = H.runtime{ record = trace, reap_interval = 0.25, policy = "policies/lru.lua" }
  local opts = { conninfo = two_endpoints() }
  for k, v in pairs(POOL) do opts[k] = v end
  rt:pool("app", opts)
  local n = WORKLOAD.burst + BASE_THREADS
  local t0 = poolrt.now() + 0.5 -- every thread started and waiting
  local res = assert(rt:spawn(n, "spec.support.sim_workers", "drive", n, "app", t0, WORKLOAD))
  local out = { ok = 0, timeouts = 0, errors = 0, endpoint = { 0, 0 } }
  for _, r in ipairs(res) do
    out.ok, out.timeouts, out.errors = out.ok + r.ok, out.timeouts + r.timeouts, out.errors + r.errors
    for e = 1, 2 do out.endpoint[e] = out.endpoint[e] + r.endpoint[e] end
  end
  out.opened = rt:stats().app.connections_created_total
  rt:close()
  return out
end

-- The median hold of the trace's served acquires, in ms: what one
-- `select pg_sleep(0.2)` took on this server, for the simulated endpoints.
local function median_hold(trace)
  local holds = {}
  for line in H.read_file(trace):gmatch("[^\n]+") do
    local hold = line:match("^[%d.]+,app,[%d.]+,([%d.]+),[%d.]+,1,ok$")
    if hold then holds[#holds + 1] = tonumber(hold) end
  end
  table.sort(holds)
  return assert(holds[math.ceil(#holds / 2)], "no served acquire in the trace")
end

-- The workload file: the same endpoints, pool, policy and arrivals (each
-- Poisson arrival a burst of one at its moment, the burst of 40 as one).
local function workload_file(hold_ms)
  local bursts = { { at = WORKLOAD.burst_at, n = WORKLOAD.burst } }
  for _, t in ipairs(SW.arrivals(WORKLOAD.seed, WORKLOAD.rate, WORKLOAD.seconds)) do
    bursts[#bursts + 1] = { at = t, n = 1 }
  end
  return H.write_file("return " .. require("poolrt.internal").serialize{
    duration = WORKLOAD.seconds + 1,
    runtime = { reap_interval = 0.25 },
    endpoints = { { name = "a", connect_ms = 3, query_ms = hold_ms }, { name = "b", connect_ms = 3, query_ms = hold_ms } },
    pools = { { name = "app", opts = POOL, threads = WORKLOAD.burst + BASE_THREADS, rate = 0, hold_ms = 0,
                statements = 1, bursts = bursts } },
  })
end

-- The same pool replaying the trace: each line an acquire at t holding hold_ms.
local function trace_file(trace)
  return H.write_file("return " .. require("poolrt.internal").serialize{
    runtime = { reap_interval = 0.25 },
    endpoints = { { name = "a", connect_ms = 3 }, { name = "b", connect_ms = 3 } },
    trace = { file = trace, opts = POOL, threads = WORKLOAD.burst + BASE_THREADS },
  })
end

-- `poolrt sim policies/lru.lua WORKLOAD --csv`, as a table keyed by the header.
local function sim_csv(workload)
  local out, rc = H.run("build/poolrt sim policies/lru.lua " .. workload .. " --csv")
  assert(rc == 0, out)
  local header, row = out:match("^(policy,[^\n]*)\n([^\n]+)")
  assert(header, "no CSV in: " .. out)
  local t, names = {}, {}
  for name in header:gmatch("[^,]+") do names[#names + 1] = name end
  local i = 0
  for v in row:gmatch("[^,]+") do
    i = i + 1
    t[names[i]] = tonumber(v) or v
  end
  return t
end

-- The same through the Lua API, for the per-endpoint acquires.
local function sim_run(workload)
  local sim = require "poolrt.sim"
  local wl = assert(sim.load(workload))
  return assert(sim.run({ "policies/lru.lua" }, wl, { seed = 1 }))[1]
end

local function close(what, live_n, sim_n)
  local slack = math.max(2, 0.1 * live_n)
  assert.is_true(math.abs(live_n - sim_n) <= slack,
                 ("%s: live %d, simulated %d (allowed: within %.1f)"):format(what, live_n, sim_n, slack))
end

describe("poolrt sim against the live pool", function()
  local trace, got
  setup(function()
    trace = H.tmpname(".trace")
    got = live(trace)
  end)

  it("the live run itself: the burst timed out and both endpoints served", function()
    assert.equal(0, got.errors)
    assert.is_true(got.timeouts >= 20, "timeouts: " .. got.timeouts)
    assert.is_true(got.endpoint[1] > 0 and got.endpoint[2] > 0)
    assert.is_true(got.opened >= 8, "opened: " .. got.opened) -- 4 at a time, recycled every ~3 s
  end)

  local function compare(r)
    close("connections opened", got.opened, r.opened)
    close("timeouts", got.timeouts, r.timeouts)
    close("endpoint 1 acquires", got.endpoint[1], r.endpoints[1].acquires)
    close("endpoint 2 acquires", got.endpoint[2], r.endpoints[2].acquires)
  end

  it("simulating the workload file agrees within 10% or 2", function()
    local wl = workload_file(median_hold(trace))
    compare(sim_run(wl))
  end)

  it("replaying the recorded trace agrees within 10% or 2, and the CLI says the same", function()
    local wl = trace_file(trace)
    local r = sim_run(wl)
    compare(r)
    local row = sim_csv(wl)
    assert.equal(r.opened, row.opened)
    assert.equal(r.timeouts, row.timeouts)
    assert.equal(r.acquires, row.acquires)
  end)
end)
