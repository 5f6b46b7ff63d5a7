-- A pool over a primary and a streaming standby (issue 21), against a real
-- pair of servers (spec/support/pair.lua): target_session_attrs chooses the
-- server, the runtime keeps each server's facts, and a switchover under
-- load.  Where a query ran is always asked of the server
-- (pg_is_in_recovery(), inet_server_port()), never of poolrt.
local poolrt = require "poolrt"
local H = require "spec.helper"
local pair = require "spec.support.pair"
local promtool = require "spec.support.promtool"

local WHERE = "select pg_is_in_recovery() as standby, inet_server_port() as port"

-- Runs `sql` on pool, returning the row, or nil, err.
local function try(pool, sql, ...)
  local rows, err = pool:query(sql, ...)
  if not rows then return nil, err end
  return rows[1]
end

local function endpoint(rt, port)
  for _, e in ipairs(rt:runtime_stats().endpoints) do
    if e.name == "127.0.0.1:" .. port then return e end
  end
end

describe("a pool over a primary and a standby", function()
  teardown(pair.stop_all)

  it("sends prefer-standby reads to the standby and read-write writes to the primary, and knows each role", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local rt = poolrt.runtime{ reap_interval = 0 }
    finally(function() rt:close() end)
    local reads = rt:pool("reads", { conninfo = p:conninfo("target_session_attrs=prefer-standby"), max = 4 })
    local writes = rt:pool("writes", { conninfo = p:conninfo("target_session_attrs=read-write"), max = 4 })
    assert(writes:query("create table cl_t(x int)"))

    local on_standby, n = 0, 200
    for _ = 1, n do
      local r = assert(try(reads, WHERE))
      if r.standby then
        on_standby = on_standby + 1
        assert.equal(p.standby_port, r.port)
      end
    end
    assert.is_true(on_standby >= 0.9 * n, ("%d of %d reads on the standby"):format(on_standby, n))
    for i = 1, 50 do
      local r = assert(try(writes, "insert into cl_t values ($1) returning pg_is_in_recovery() as standby, "
                                   .. "inet_server_port() as port", i))
      assert.is_false(r.standby)
      assert.equal(p.primary_port, r.port)
    end

    local prim, stby = endpoint(rt, p.primary_port), endpoint(rt, p.standby_port)
    assert.equal("primary", prim.role)
    assert.equal("standby", stby.role)
    assert.is_true(prim.up and stby.up)
    assert.equal(2, #rt:runtime_stats().endpoints, "two pools naming the same servers share their endpoints")
    local m = rt:metrics()
    assert.matches(('poolrt_endpoint_role{endpoint="127.0.0.1:%d",role="primary"} 1'):format(p.primary_port), m, 1, true)
    assert.matches(('poolrt_endpoint_role{endpoint="127.0.0.1:%d",role="standby"} 1'):format(p.standby_port), m, 1, true)
    assert.matches(('poolrt_endpoint_up{endpoint="127.0.0.1:%d"} 1'):format(p.standby_port), m, 1, true)
    for _, fam in ipairs{ "poolrt_endpoint_open", "poolrt_endpoint_failures", "poolrt_endpoint_connects_total",
                          "poolrt_endpoint_failovers_total", "poolrt_endpoint_lag_bytes", "poolrt_endpoint_lag_seconds" } do
      assert.matches("# TYPE " .. fam .. " ", m, 1, true)
    end
    local out, rc = promtool.check(m) -- the endpoint families pass promtool's lint
    assert.equal("", out)
    assert.equal(0, rc)
  end)

  it("comes through a switchover: writes fail only until shortly after the promotion, and reads come back to a standby",
     function()
    local p = pair.start()
    finally(function() p:stop() end)
    local a, b = p.primary_port, p.standby_port
    local rt = poolrt.runtime{ reap_interval = 0.2, server_sample_interval = 0.5 }
    finally(function() rt:close() end)
    local reads = rt:pool("reads", { conninfo = p:conninfo("target_session_attrs=prefer-standby connect_timeout=2"),
                                     max = 4, acquire_timeout = 1 })
    local writes = rt:pool("writes", { conninfo = p:conninfo("target_session_attrs=read-write connect_timeout=2"),
                                       max = 4, acquire_timeout = 1 })
    assert(writes:query("create table cl_t(x int)"))

    local job = H.background("tools/pg-pair.sh switchover " .. p.dir)
    local promoted, ended, t_end
    local log = {} -- { t, kind ("w"/"r"), ok, standby, port, err }
    local i = 0
    while not t_end or poolrt.now() < t_end do
      i = i + 1
      local t = poolrt.now()
      local w, werr = try(writes, "insert into cl_t values ($1) returning pg_is_in_recovery() as standby, "
                                  .. "inet_server_port() as port", i)
      log[#log + 1] = { t = t, kind = "w", ok = w ~= nil, standby = w and w.standby, port = w and w.port, err = werr }
      local r, rerr = try(reads, WHERE)
      log[#log + 1] = { t = poolrt.now(), kind = "r", ok = r ~= nil, standby = r and r.standby, port = r and r.port,
                        err = rerr }
      if not promoted and H.read_file(job.out):find("promoted", 1, true) then promoted = poolrt.now() end
      if not ended and job:done() then
        ended = poolrt.now()
        t_end = ended + 6
      end
      assert.is_true(poolrt.now() - log[1].t < 90, "the switchover did not end within 90 s")
      poolrt.sleep(0.005)
    end
    local out, rc = job:wait(1)
    assert.equal(0, rc, out)
    p:_load_env() -- the roles as pg-pair.sh left them
    assert.is_number(promoted, out)

    local wfail, late_w, late_r, reads_after, on_standby_after, wlast, rfail = 0, {}, {}, 0, 0, nil, 0
    for _, e in ipairs(log) do
      if e.kind == "w" then
        if e.ok then
          assert.is_false(e.standby, "a write ran on a standby")
        else
          wfail = wfail + 1
          wlast = e.t
          if e.t > promoted + 1 then late_w[#late_w + 1] = e.err end
        end
      else
        if not e.ok then rfail = rfail + 1 end
        if not e.ok and e.t > ended + 2 then late_r[#late_r + 1] = e.err end
        if e.ok and e.t > ended + 3 then
          reads_after = reads_after + 1
          if e.standby then on_standby_after = on_standby_after + 1 end
        end
      end
    end
    print(("\n  switchover: %d writes failed, the last %.2f s after the promotion returned (1 s allowed); "
           .. "%d reads failed; %d of %d reads on a standby from 3 s after it ended")
          :format(wfail, wlast and wlast - promoted or 0, rfail, on_standby_after, reads_after))
    assert.same({}, late_w)
    assert.same({}, late_r)
    assert.equal(0, rfail, "reads are served throughout, by whichever server is up")
    assert.is_true(reads_after > 0)
    assert.is_true(on_standby_after >= 0.9 * reads_after,
                   ("%d of %d reads on a standby after the switchover"):format(on_standby_after, reads_after))
    -- The new primary is b; a is its standby now, and the runtime saw both roles change.
    assert.equal(b, p.primary_port)
    assert.equal(a, p.standby_port)
    assert.equal("primary", endpoint(rt, b).role)
    assert.equal(1, endpoint(rt, b).role_changes_total)
  end)
end)
