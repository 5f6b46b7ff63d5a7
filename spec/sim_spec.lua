-- `poolrt sim`, run as a user runs it: the CSV contract, --compare order,
-- --seed, the messages for bad workloads and policies, --plot, trace
-- replay, and each of examples/sim/ showing the effect it is about.
-- No database: the simulator's connections are simulated.
local H = require "spec.helper"
local run, write = H.run, H.write_file

local HEADER = "policy,acquires,wait_p50_ms,wait_p99_ms,wait_max_ms,timeouts,opened,closed,peak_connections,"
               .. "endpoint_max_min,pools_evicted,hook_errors"

-- Rows of `poolrt sim --csv` output as tables keyed by the header's names.
local function parse_csv(out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local names = {}
  for n in lines[1]:gmatch("[^,]+") do names[#names + 1] = n end
  local rows = {}
  for i = 2, #lines do
    local row, k = {}, 0
    for v in (lines[i] .. ","):gmatch("([^,]*),") do
      k = k + 1
      row[names[k]] = k == 1 and v or (v == "inf" and math.huge or tonumber(v))
    end
    rows[#rows + 1] = row
  end
  return lines[1], rows
end

-- Runs `poolrt sim ARGS --csv`; asserts exit 0 and returns the header and rows.
local function sim_csv(args)
  local out, rc = run("build/poolrt sim " .. args .. " --csv 2>/dev/null")
  assert.equal(0, rc, out)
  return parse_csv(out)
end

local SMALL = [[
return {
  duration = 30,
  endpoints = { { name = "a", connect_ms = 3, query_ms = 1 }, { name = "b", connect_ms = 3, query_ms = 1 } },
  pools = { { name = "app", opts = { max = 4, acquire_timeout = 0.5 }, rate = 200,
              hold_ms = { dist = "exp", mean = 5 }, statements = 1, bursts = { { at = 10, n = 30 } } } },
}
]]

describe("poolrt sim", function()
  it("prints exactly the CSV header and one row per policy, in --compare order", function()
    local wl = write(SMALL)
    local header, rows = sim_csv("policies/mru.lua " .. wl .. " --compare policies/lru.lua policies/random.lua")
    assert.equal(HEADER, header)
    assert.equal(3, #rows)
    assert.same({ "mru.lua", "lru.lua", "random.lua" }, { rows[1].policy, rows[2].policy, rows[3].policy })
    for _, r in ipairs(rows) do
      assert.is_true(r.acquires > 4000, r.policy)              -- 200/s for 30 s, and the burst
      assert.is_true(r.opened >= 1 and r.peak_connections <= 4, r.policy)
      assert.is_true(r.wait_p50_ms <= r.wait_p99_ms and r.wait_p99_ms <= r.wait_max_ms, r.policy)
    end
  end)

  it("prints the side-by-side table by default, a column per policy", function()
    local wl = write(SMALL)
    local out, rc = run("build/poolrt sim policies/mru.lua " .. wl .. " --compare policies/lru.lua")
    assert.equal(0, rc, out)
    assert.matches("%s+mru%.lua%s+lru%.lua\n", out)
    for _, label in ipairs{ "acquires", "wait p99 %(ms%)", "timeouts", "connections opened", "  idle",
                            "peak connections", "endpoint a", "endpoint b", "endpoint max/min",
                            "pools evicted", "hook errors", "wall time %(s%)" } do
      assert.matches("\n" .. label .. "%s+[%d.%-inf]+%s+[%d.%-inf]+\n", out)
    end
  end)

  it("gives the same numbers for the same --seed and others for another", function()
    local wl = write(SMALL)
    local _, a = sim_csv("policies/random.lua " .. wl .. " --seed 7")
    local _, b = sim_csv("policies/random.lua " .. wl .. " --seed 7")
    local _, c = sim_csv("policies/random.lua " .. wl .. " --seed 8")
    assert.same(a, b)
    assert.are_not.same(a, c)
  end)

  it("refuses a bad workload with exit 1, naming the file and the field", function()
    local cases = {
      { "return { duration = 10, pools = { { name = 'app', rat = 5 } } }", 'pools%[1%]: unknown field "rat"' },
      { "return { duration = 10, pools = { { name = 'app', hold_ms = { dist = 'lognormal', median = 5 } } } }",
        "pools%[1%]%.hold_ms%.p99: want a number" },
      { "return { duration = 10, pools = { { name = 'app', opts = { maxx = 2 } } } }",
        'pools%[1%]%.opts: unknown pool option "maxx"' },
      { "return { duration = 10, pools = { { name = 'app', rate = { {0, 5}, {0, 9} } } } }",
        "pools%[1%]%.rate%[2%]: steps must be in increasing time order" },
      { "return { duration = 10, tenants = { count = 5, rate = 1, popularity = 'pareto' } }",
        'tenants%.popularity: want "zipf" or "uniform"' },
      { "return { pools = { { name = 'app', rate = 1 } } }", "duration: want the virtual seconds" },
      { "return { duration = 10 }", "nothing to simulate" },
      { "return { duration = 10, runtime = { conninfo = 'x' }, pools = { { name = 'a' } } }",
        "runtime%.conninfo: has no meaning in a simulation" },
      { "return { duration = 10,\n pools = {", ":2: unexpected symbol" },        -- Lua syntax: file:line
    }
    for _, case in ipairs(cases) do
      local wl = write(case[1])
      local out, rc = run("build/poolrt sim policies/mru.lua " .. wl)
      assert.equal(1, rc, case[1])
      assert.matches("^poolrt sim: " .. wl:gsub("%p", "%%%0") .. "[: ]", out)
      assert.matches(case[2], out)
    end
  end)

  it("refuses a bad policy with exit 1, naming the policy and the problem", function()
    local wl = write(SMALL)
    local bad = write("return { pick = function(idle, pool) return 1 end,\n size = }\n")
    local out, rc = run("build/poolrt sim policies/mru.lua " .. wl .. " --compare " .. bad)
    assert.equal(1, rc)
    assert.matches("poolrt sim: policy " .. bad:gsub("%p", "%%%0") .. ": .*:2:", out)
    assert.not_matches("\nacquires", out)                              -- nothing is run
    out, rc = run("build/poolrt sim /nonexistent/policy.lua " .. wl)
    assert.equal(1, rc)
    assert.matches("cannot read policy /nonexistent/policy%.lua", out)
  end)

  it("is in the host's --help, and has its own", function()
    local out, rc = run("build/poolrt --help")
    assert.equal(0, rc)
    assert.matches("poolrt sim POLICY%.lua WORKLOAD%.lua %[%-%-compare POLICY2%.lua %.%.%.%]", out)
    out, rc = run("build/poolrt sim --help")
    assert.equal(0, rc)
    assert.matches("%-%-plot FILE%.png", out)
  end)

  it("exits 2 on a bad command line", function()
    local wl = write(SMALL)
    for _, args in ipairs{ "", "policies/mru.lua", "policies/mru.lua " .. wl .. " --seed x",
                           "policies/mru.lua " .. wl .. " --compare", "policies/mru.lua " .. wl .. " --bogus" } do
      local out, rc = run("build/poolrt sim " .. args)
      assert.equal(2, rc, args)
      assert.matches("usage: poolrt sim POLICY%.lua WORKLOAD%.lua", out)
    end
  end)

  it("replays a recorded trace, sorted by t, on the pools it names", function()
    local trace = H.tmpname(".trace")
    -- written at release: out of t order; one timeout line (hold 0)
    write(table.concat({
      "# poolrt trace v1", "# started 1764672000.25", "t,pool,wait_ms,hold_ms,query_ms,queries,result",
      "0.300,app,0.01,50,40,2,ok", "0.100,app,0.01,500,1,1,ok", "0.200,app,0.01,500,1,1,ok",
      '0.250,"jobs,nightly",0.02,10,5,1,ok', "0.400,app,2000,0,0,0,timeout", "" }, "\n"), trace)
    local wl = write(([[return { trace = { file = %q, opts = { max = 2, acquire_timeout = 0.05 } } }]]):format(trace))
    local _, rows = sim_csv("policies/mru.lua " .. wl)
    -- app: two 500 ms holds from 0.1 and 0.2 fill max = 2, so the 0.3 and
    -- 0.4 acquires time out after 50 ms; "jobs,nightly" is a pool of its own.
    assert.equal(3, rows[1].acquires)
    assert.equal(2, rows[1].timeouts)
    assert.equal(3, rows[1].opened)
    local W = require "poolrt.sim_workload"
    local names = {}
    for _, src in ipairs(assert(W.load(wl)).sources) do names[#names + 1] = src.name .. "=" .. #src.replay_t end
    assert.same({ "app=4", "jobs,nightly=1" }, names)

    write("t,pool\n0.1,app\n", trace)
    local out, rc = run("build/poolrt sim policies/mru.lua " .. wl)
    assert.equal(1, rc)
    assert.matches("trace %(.*:1%): not a poolrt trace", out)
  end)

  it("--plot draws a PNG with gnuplot, and says what to install without it", function()
    local wl, png = write(SMALL), H.tmpname(".png")
    local out, rc = run("build/poolrt sim policies/mru.lua " .. wl .. " --compare policies/lru.lua --plot " .. png)
    assert.equal(0, rc, out)
    assert.equal("\137PNG", H.read_file(png):sub(1, 4))
    assert.matches("chart written to " .. png:gsub("%p", "%%%0"), out)
    -- no gnuplot on PATH: refused before simulating
    os.remove(png)
    out, rc = run("PATH=/nonexistent build/poolrt sim policies/mru.lua " .. wl .. " --plot " .. png)
    assert.equal(1, rc)
    assert.matches("%-%-plot needs gnuplot.*apt%-get install gnuplot%-nox", out)
    assert.equal("", H.read_file(png))
  end)

  describe("workload files", function()
    local W = require "poolrt.sim_workload"

    it("split a tenants group's total rate by popularity, steps and all", function()
      local wl = assert(W.load(write([[return { duration = 10, tenants = {
        count = 4, prefix = "t", rate = { { 0, 100 }, { 5, 20 } }, popularity = "zipf", hold_ms = 2 } }]])))
      assert.equal(4, #wl.sources)
      local sum = 0
      for i, src in ipairs(wl.sources) do
        assert.equal("t" .. i, src.name)
        assert.equal(0.002, src.hold.a)
        assert.equal(5, src.rate[2].at)
        assert.near(src.rate[1].per_s / 5, src.rate[2].per_s, 1e-9)
        sum = sum + src.rate[1].per_s
      end
      assert.near(100, sum, 1e-9)
      assert.near(2, wl.sources[1].rate[1].per_s / wl.sources[2].rate[1].per_s, 1e-9) -- 1/i
      wl = assert(W.load(write("return { duration = 1, tenants = { count = 4, rate = 8, popularity = 'uniform' } }")))
      for _, src in ipairs(wl.sources) do assert.equal(2, src.rate[1].per_s) end
    end)

    it("read distributions in milliseconds into prt_sim_dist's seconds", function()
      local wl = assert(W.load(write([[return { duration = 1,
        endpoints = { { query_ms = { dist = "uniform", min = 1, max = 3 } } },
        pools = { { name = "a", hold_ms = { dist = "lognormal", median = 2, p99 = 40 } } } }]])))
      assert.same({ kind = "uniform", a = 0.001, b = 0.003 }, wl.endpoints[1].query)
      assert.same({ kind = "const", a = 0.0027, b = 0 }, wl.endpoints[1].connect)
      assert.same({ kind = "lognormal", a = 0.002, b = 0.04 }, wl.sources[1].hold)
      assert.equal("endpoint1", wl.endpoints[1].name)
    end)

    it("read clusters: role, lag_ms as steps or a distribution, promote by name, reads as two pools", function()
      local wl = assert(W.load(write([[return { duration = 10,
        endpoints = { { name = "p" }, { name = "s", role = "standby", lag_ms = { { 0, 0 }, { 5, { dist = "exp", mean = 800 } } } },
                      { name = "t", role = "standby", lag_ms = 200 } },
        promote = { { at = 7, endpoint = "s" } },
        pools = { { name = "app", reads = 0.75, rate = { { 0, 100 }, { 5, 40 } }, bursts = { { at = 1, n = 8 } } },
                  { name = "w", target_session_attrs = "read-write" } } }]])))
      assert.equal("primary", wl.endpoints[1].role)
      assert.equal("standby", wl.endpoints[2].role)
      assert.same({ { at = 0, lag = { kind = "const", a = 0, b = 0 } }, { at = 5, lag = { kind = "exp", a = 0.8, b = 0 } } },
                  wl.endpoints[2].lag)
      assert.same({ { at = 0, lag = { kind = "const", a = 0.2, b = 0 } } }, wl.endpoints[3].lag)
      assert.same({ { at = 7, endpoint = 2 } }, wl.promote)
      assert.equal(3, #wl.sources)
      local w, r = wl.sources[1], wl.sources[2]
      assert.same({ "app", "read-write", "app.read", "prefer-standby" }, { w.name, w.attrs, r.name, r.attrs })
      assert.near(25, w.rate[1].per_s, 1e-9)
      assert.near(30, r.rate[2].per_s, 1e-9)
      assert.same({ { at = 1, n = 2 } }, w.bursts)
      assert.same({ { at = 1, n = 6 } }, r.bursts)
      assert.equal("read-write", wl.sources[3].attrs)
      local bad = {
        { "endpoints = { { role = 'leader' } }", 'endpoints%[1%]%.role: want "primary" or "standby"' },
        { "endpoints = { { name = 'a' } }, promote = { { at = 1, endpoint = 'b' } }",
          "promote%[1%]%.endpoint: want the name of one of the endpoints" },
        { "pools = { { name = 'a', reads = 1.5 } }", "pools%[1%]%.reads: want a fraction" },
        { "pools = { { name = 'a', reads = 0.5, target_session_attrs = 'any' } }", "leave target_session_attrs out" },
        { "pools = { { name = 'a', target_session_attrs = 'master' } }", "target_session_attrs: want one of libpq's" },
        { "endpoints = { { lag_ms = { { 5, 1 }, { 2, 1 } } } }", "lag_ms%[2%]: steps must be in increasing time order" },
      }
      for _, case in ipairs(bad) do
        local text = "return { duration = 1, pools = { { name = 'x' } }, " .. case[1] .. " }"
        local ok, err = W.load(write(text))
        assert.is_nil(ok, case[1])
        assert.matches(case[2], err)
      end
    end)

    it("take a trace's duration from its last release when none is given", function()
      local trace = write("# poolrt trace v1\nt,pool,wait_ms,hold_ms,query_ms,queries,result\n"
                          .. "7.5,app,0,2000,1,1,ok\n1.0,app,0,10,1,1,ok\n", H.tmpname(".trace"))
      local wl = assert(W.load(write(("return { trace = %q }"):format(trace))))
      assert.equal(11, wl.duration)                                     -- ceil(7.5 + 2) + 1
      assert.same({ 7.5, 1.0 }, wl.sources[1].replay_t)                -- the engine sorts them
      assert.same({ 2, 0.01 }, wl.sources[1].replay_hold)
    end)
  end)

  describe("examples/sim", function()
    it("replicas: at light load mru piles the queries on one replica, lru and random spread them", function()
      local _, r = sim_csv("policies/mru.lua examples/sim/replicas.lua --compare policies/lru.lua policies/random.lua")
      local mru, lru, random = r[1], r[2], r[3]
      assert.is_true(lru.endpoint_max_min < 1.1, "lru " .. lru.endpoint_max_min)
      assert.is_true(random.endpoint_max_min < 1.2, "random " .. random.endpoint_max_min)
      assert.is_true(mru.endpoint_max_min > 1.4, "mru " .. mru.endpoint_max_min)
    end)

    it("clamp: with 25 threads on a pool configured for 5, the clamp to 20 cuts waits and timeouts", function()
      local _, r = sim_csv("policies/default.lua examples/sim/clamp.lua --compare policies/clamp.lua")
      local default, clamp = r[1], r[2]
      assert.equal(5, default.peak_connections)
      assert.is_true(clamp.peak_connections > 5 and clamp.peak_connections <= 20, clamp.peak_connections)
      assert.is_true(clamp.wait_p99_ms * 5 < default.wait_p99_ms, clamp.wait_p99_ms .. " vs " .. default.wait_p99_ms)
      assert.is_true(clamp.timeouts < default.timeouts)
    end)

    it("tenants: 500 tenants over max_pools 20 evict and recreate pools; evict_idle beats waiting at the cap", function()
      local _, r = sim_csv("policies/default.lua examples/sim/tenants.lua --compare policies/tenant_reaper.lua")
      for _, row in ipairs(r) do
        assert.is_true(row.pools_evicted > 1000, row.policy .. " " .. row.pools_evicted)
        assert.is_true(row.opened > 1000, row.policy)
        assert.is_true(row.peak_connections <= 16, row.policy)          -- max_connections
        assert.equal(0, row.hook_errors)
      end
      local default, reaper = r[1], r[2]
      assert.is_true(default.timeouts > 100, default.timeouts)         -- waits for a slot idle pools hold
      assert.equal(0, reaper.timeouts)                                   -- closes another pool's idle one
    end)

    it("replay: a recorded trace of 1,200 acquires replays in full; clamp's bigger pool takes the queue away", function()
      local _, r = sim_csv("policies/default.lua examples/sim/replay.lua --compare policies/clamp.lua")
      local default, clamp = r[1], r[2]
      assert.equal(1200, default.acquires)
      assert.equal(1200, clamp.acquires)
      assert.equal(4, default.peak_connections)
      assert.is_true(clamp.peak_connections > 4, clamp.peak_connections)
      assert.is_true(clamp.wait_p99_ms < default.wait_p99_ms, clamp.wait_p99_ms .. " vs " .. default.wait_p99_ms)
    end)

    it("failover: replicas.lua serves far fewer stale reads than default.lua; writes move to the new primary", function()
      local sim = require "poolrt.sim"
      local wl = assert(sim.load("examples/sim/failover.lua"))
      local policies = { "policies/default.lua", "policies/replicas.lua" }
      local full = assert(sim.run(policies, wl, { seed = 1 }))
      local default, replicas = full[1], full[2]
      assert.is_true(default.stale_reads > 0.3 * default.reads, default.stale_reads .. " of " .. default.reads)
      assert.is_true(replicas.stale_reads * 100 < default.stale_reads, replicas.stale_reads .. " vs " .. default.stale_reads)
      wl.duration = 37                                   -- the same run up to before the primary fails
      local before = assert(sim.run(policies, wl, { seed = 1 }))
      for i, r in ipairs(full) do
        local b = before[i]
        assert.equal(0, b.errors, r.policy)
        assert.is_true(r.errors > 10, r.policy .. " " .. r.errors)  -- writes lost on the old primary, connects refused
        assert.is_true(r.role_refusals > 0, r.policy)
        local function gained(k) return r.endpoints[k].writes - b.endpoints[k].writes end
        assert.equal(b.writes, b.endpoints[1].writes, r.policy)     -- before: every write on the primary
        assert.is_true(gained(2) > 0.9 * (r.writes - b.writes), r.policy .. " " .. gained(2))  -- after: standby_a
        assert.is_true(gained(1) < 0.1 * (r.writes - b.writes), r.policy .. " " .. gained(1))
        assert.equal(0, r.endpoints[3].writes, r.policy)
      end
      local out, rc = run("build/poolrt sim policies/default.lua examples/sim/failover.lua --compare policies/replicas.lua")
      assert.equal(0, rc, out)
      for _, label in ipairs{ "reads", "  stale %(lag > 1 s%)", "writes", "  on standby_a", "role refusals" } do
        assert.matches("\n" .. label .. "%s+%d+%s+%d+\n", out)
      end
    end)

    it("background: a greedy background policy makes requests wait, background_share does not", function()
      local _, r = sim_csv("policies/background_share.lua examples/sim/background.lua"
                           .. " --compare examples/sim/greedy_background.lua")
      local share, greedy = r[1], r[2]
      assert.is_true(share.wait_p99_ms * 5 < greedy.wait_p99_ms, share.wait_p99_ms .. " vs " .. greedy.wait_p99_ms)
    end)
  end)
end)
