-- Recording real traffic (src/record.c): the host's --record FILE, the
-- runtime option `record` and resty.poolrt's `record` write the trace that
-- `poolrt sim` replays, against the real test server.
local H = require "spec.helper"
local N = require "spec.support.nginx"
local poolrt = require "poolrt"

local COLUMNS = "t,pool,wait_ms,hold_ms,query_ms,queries,result"

-- The trace at path: its comment lines, its column line and its records
-- (t, pool, wait_ms, hold_ms, query_ms, queries, result).
local function read_trace(path)
  local tr = { comments = {}, rows = {} }
  for line in H.read_file(path):gmatch("[^\n]+") do
    if line:sub(1, 1) == "#" then
      tr.comments[#tr.comments + 1] = line
    elseif line == COLUMNS then
      tr.columns = (tr.columns or 0) + 1
    else
      local t, pool, w, h, q, n, res = line:match('^([%d.]+),(.-),([%d.]+),([%d.]+),([%d.]+),(%d+),(%a+)$')
      assert(t, "not a trace line: " .. line)
      tr.rows[#tr.rows + 1] = { t = tonumber(t), pool = pool, wait = tonumber(w), hold = tonumber(h),
                                query = tonumber(q), queries = tonumber(n), result = res }
    end
  end
  return tr
end

local function by_result(tr, pool, result)
  local out = {}
  for _, r in ipairs(tr.rows) do
    if r.pool == pool and r.result == result then out[#out + 1] = r end
  end
  return out
end

describe("recording a trace", function()
  it("poolrt --record FILE writes the header and one line per acquire, timeouts as timeout", function()
    local trace = H.tmpname(".trace")
    local script = H.write_file([[
      local poolrt = require "poolrt"
      local rt = poolrt.runtime{ reap_interval = 0 }
      local p = rt:pool("app", { max = 1 })
      for _ = 1, 5 do assert(p:query("select pg_sleep(0.01)")) end
      p:with(function(c)
        assert(c:query("select 1"))
        assert(c:query("select 2"))
        poolrt.sleep(0.03)                       -- client time: held, not in a query
      end)
      local c = assert(p:acquire())
      assert(p:acquire(0.05) == nil)             -- a timeout while c is held
      c:release()
      assert(rt:pool('we"ird,name', { max = 1 }):query("select 1"))
    ]])
    local out, rc = H.run("build/poolrt --record " .. N.q(trace) .. " " .. script)
    assert.equal(0, rc, out)
    local tr = read_trace(trace)
    assert.same({ "# poolrt trace v1" }, { tr.comments[1] })
    assert.matches("^# started %d+%.%d+", tr.comments[2])
    assert.equal(1, tr.columns)
    local ok = by_result(tr, "app", "ok")
    assert.equal(7, #ok)
    for i = 1, 5 do
      local r = ok[i]
      assert.equal(1, r.queries)
      assert.is_true(r.query >= 9 and r.query < 1000, "a 10 ms query took " .. r.query .. " ms")
      assert.is_true(r.hold >= r.query, ("hold %.3f ms < query %.3f ms"):format(r.hold, r.query))
      assert.is_true(r.t >= 0 and r.t < 60)
    end
    assert.equal(2, ok[6].queries)
    assert.is_true(ok[6].hold >= 29 and ok[6].hold >= ok[6].query + 25,
                   ("client-side 30 ms hold: hold %.3f ms, query %.3f ms"):format(ok[6].hold, ok[6].query))
    local timeouts = by_result(tr, "app", "timeout")
    assert.equal(1, #timeouts)
    assert.is_true(timeouts[1].wait >= 49 and timeouts[1].wait < 2000, "waited " .. timeouts[1].wait .. " ms")
    assert.equal(0, timeouts[1].hold)
    -- the held connection's line comes at its release, after the timeout's
    assert.is_true(ok[7].hold >= timeouts[1].wait)
    assert.equal(1, #by_result(tr, '"we""ird,name"', "ok"))
    assert.equal(#tr.rows, 9)

    -- A second run appends to the same trace: no second header, t from
    -- the first run's start.
    out, rc = H.run("build/poolrt --record " .. N.q(trace) .. " " .. script)
    assert.equal(0, rc, out)
    local again = read_trace(trace)
    assert.equal(1, again.columns)
    assert.equal(2, #again.comments)
    assert.equal(18, #again.rows)
    assert.is_true(again.rows[18].t > tr.rows[9].t)
    os.remove(trace)
    os.remove(script)
  end)

  it("refuses a record file it cannot open, or one that is not a trace, with a clear error", function()
    local err = select(2, pcall(poolrt.runtime, { record = "/nonexistent/dir/x.trace" }))
    assert.matches('cannot open the record file "/nonexistent/dir/x.trace": No such file or directory', err)
    local other = H.write_file("hello\n", H.tmpname(".txt"))
    err = select(2, pcall(poolrt.runtime, { record = other }))
    assert.matches("is not a poolrt trace", err)
    assert.equal("hello\n", H.read_file(other))
    local script = H.write_file("require('poolrt').runtime{}\n")
    local out, rc = H.run("build/poolrt --record /nonexistent/dir/x.trace " .. script)
    assert.equal(1, rc)
    assert.matches("cannot open the record file", out)
    os.remove(other)
    os.remove(script)
  end)

  it("poolrt.runtime{ record = } records threads of rt:spawn into one trace", function()
    local trace = H.tmpname(".trace")
    local rt = H.runtime{ record = trace }
    rt:pool("spawned", { conninfo = H.conninfo, max = 2 })
    assert.equal(4, #assert(rt:spawn(4, "spec.support.workers", "hammer", "spawned", 25)))
    local tr = read_trace(trace)
    assert.equal(100, #by_result(tr, "spawned", "ok"))
    for _, r in ipairs(tr.rows) do assert.is_true(r.hold >= r.query and r.queries == 1) end
  end)
end)

describe("replaying a trace (poolrt.sim_workload)", function()
  it("replays a line that timed out holding its pool's median served hold, a served one its own", function()
    local trace = H.write_file(table.concat({
      "# poolrt trace v1", "# started 1764672000.5", COLUMNS,
      "0.1,app,0.1,10.000,9.0,1,ok", "0.2,app,0.1,30.000,29.0,1,ok", "0.3,app,500.2,0.000,0.000,0,timeout",
      "0.4,app,0.1,20.000,19.0,1,ok", "0.5,other,2.0,0.000,0.000,0,error", "" }, "\n"), H.tmpname(".trace"))
    local wl = assert(require("poolrt.sim_workload").load(H.write_file(("return { trace = %q }"):format(trace))))
    local by = {}
    for _, src in ipairs(wl.sources) do by[src.name] = src end
    assert.same({ 0.01, 0.03, 0.02, 0.02 }, by.app.replay_hold)
    assert.same({ 0 }, by.other.replay_hold) -- no served line to take a hold from
  end)
end)

describe("recording in nginx (resty.poolrt option record)", function()
  local n, dir
  setup(function()
    N.check_deps()
    dir = N.scratch_dir()
    H.run("chmod 777 " .. N.q(dir)) -- the workers run as www-data when we are root
  end)
  teardown(function()
    N.cleanup(n)
    if dir then H.run("rm -rf " .. N.q(dir)) end
  end)

  it("every worker appends to one trace under one header", function()
    local trace = dir .. "/nginx.trace"
    n = N.start_nginx{ app = "poolrt-record-spec", workers = 2, pool_max = 2, env = { POOLRT_NGINX_RECORD = trace } }
    for i = 1, 20 do
      local body, status = N.get(n.url .. "/query?sleep=0.005&n=" .. i)
      assert.equal(200, status, body)
    end
    N.stop_nginx(n) -- the workers' last lines are written by then
    local tr = read_trace(trace)
    assert.equal(1, tr.columns)
    assert.equal("# poolrt trace v1", tr.comments[1])
    local ok = by_result(tr, "app", "ok")
    assert.equal(20, #ok)
    for _, r in ipairs(ok) do
      assert.equal(1, r.queries)
      assert.is_true(r.query >= 4 and r.hold >= r.query)
    end
  end)
end)
