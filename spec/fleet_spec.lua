-- One budget for many processes (docs/budgets.md#across-hosts-a-fleet):
-- fleet members tag their connections, sample the server and share it
-- through the `budget` hook, against a server of this spec's own with
-- max_connections = 60.
local poolrt = require "poolrt"
local H = require "spec.helper"
local S = require "spec.support.pgserver"

local MEMBER = [[
local poolrt = require "poolrt"
local ffi = require "ffi"
ffi.cdef "int getpid(void);"
print("pid=" .. ffi.C.getpid())
io.stdout:flush()
local rt = poolrt.runtime{ conninfo = %q, policy = poolrt.policy_file("fair_share"), fleet = "hb",
                           max_connections = 50, server_sample_interval = 0.5 }
rt:pool("default", { max = 50, acquire_timeout = 20 })
local res = assert(rt:spawn(30, "spec.support.fleet_workers", "query", %.3f))
local q, errs = 0, {}
for _, r in ipairs(res) do
  q = q + r.n
  for _, e in ipairs(r.errors) do errs[#errs + 1] = e end
end
local s = rt:runtime_stats()
print(("queries=%%d errors=%%d server_full=%%d samples=%%d sample_errors=%%d"):format(
  q, #errs, s.server_full_total, s.samples_total, s.sample_errors_total))
for i = 1, math.min(#errs, 5) do print("error: " .. errs[i]) end
rt:close()
print("done")
]]

-- Backends of fleet "hb" per member pid, as the server sees them.
local function holdings(monitor)
  local rows = monitor:query([[
    select split_part(application_name, ':', 4) as pid, count(*)::int as n from pg_stat_activity
    where backend_type = 'client backend' and left(application_name, 10) = 'poolrt:hb:' group by 1]])
  local by, total, members = {}, 0, 0
  for _, r in ipairs(assert(rows)) do
    by[r.pid], total, members = r.n, total + r.n, members + 1
  end
  return by, total, members
end

describe("fleet options and the budget hook", function()
  it("tags connections poolrt:NAME:HOST:PID, keeping the user's application_name as a suffix", function()
    local function app_name(conninfo)
      local rt = H.runtime{ conninfo = conninfo, fleet = "t_1%" }
      local name = assert(rt:pool("p"):query("select current_setting('application_name') as a"))[1].a
      local sampler = rt:runtime_stats()
      rt:close()
      return name, sampler
    end
    local plain = app_name(H.conninfo)
    assert.matches("^poolrt:t_1%%:[^:]+:%d+$", plain)
    assert.equal(plain .. ":mine", app_name(H.conninfo .. " application_name=mine"))
    -- a URI conninfo, and quoting on the way through
    local uri = ("postgresql://%s@%s:%s/%s?application_name=it%%27s"):format(
      H.conninfo:match("user=(%S+)"), H.conninfo:match("host=(%S+)"), H.conninfo:match("port=(%S+)"),
      H.conninfo:match("dbname=(%S+)"))
    assert.equal(plain .. ":it's", app_name(uri))
  end)

  it("rejects fleet names that cannot go into application_name, and a bad server_sample_interval", function()
    for _, bad in ipairs{ "a:b", "", ("x"):rep(33), "caf\195\169" } do
      local ok, err = pcall(poolrt.runtime, { fleet = bad })
      assert.is_false(ok)
      assert.matches("fleet .* must be 1..32 printable ASCII characters without ':'", err)
    end
    local ok, err = pcall(poolrt.runtime, { fleet = "f", server_sample_interval = 0 })
    assert.is_false(ok)
    assert.matches("server_sample_interval must be in %(0, 86400%] seconds", err)
    H.runtime{ fleet = ("x"):rep(32) }:close()
  end)

  it("is asked once at creation (unsampled); a bad answer counts as an error and keeps max_connections", function()
    local seen = H.write_file("return { budget = function(server, rt) "
      .. "if server.sampled_at == 0 and rt.budget == rt.max_connections then return 3 end end }\n")
    local rt = H.runtime{ policy = seen, max_connections = 9 }
    assert.equal(3, rt:runtime_stats().budget)
    assert.equal(1, rt:policy_stats().calls.budget)
    rt:close()
    -- (the dry run's sample runtime has max_connections 50, so the file loads)
    local bad = H.write_file("return { budget = function(server, rt) return rt.max_connections == 9 and 0 or 2 end }\n")
    rt = H.quietly(H.runtime, { policy = bad, max_connections = 9 })
    assert.equal(9, rt:runtime_stats().budget)
    assert.equal(1, rt:policy_stats().errors.budget)
    assert.matches("hook budget: returned number 0 %(want nil or an integer in 1..1000000%)", rt:policy_stats().last_error)
    rt:close()
    local unlimited = H.write_file("return { budget = function() return nil end }\n")
    rt = H.runtime{ policy = unlimited, max_connections = 0 }
    assert.equal(0, rt:runtime_stats().budget)
    rt:close()
  end)

  it("applies a reloaded policy's budget at once, and max_connections again when the new policy has none", function()
    local three = H.write_file("return { budget = function() return 3 end }\n")
    local rt = H.runtime{ policy = three, max_connections = 9 }
    assert.equal(3, rt:runtime_stats().budget)
    assert(rt:reload(H.write_file("return { budget = function() return 5 end }\n")))
    assert.equal(5, rt:runtime_stats().budget)
    assert(rt:reload(H.write_file("return { pick = \"lru\" }\n")))
    assert.equal(9, rt:runtime_stats().budget)
    rt:close()
  end)
end)

describe("a fleet of 4 processes on a server of 60 connections", function()
  local srv
  setup(function() srv = S.start{ max_connections = 60 } end)
  teardown(function() srv:destroy() end)

  it("never exceeds 57 backends, fails no query, holds fair shares and regrows when two members exit", function()
    local t0 = poolrt.now()
    local short_stop, long_stop = t0 + 6, t0 + 11
    local outs = {}
    for i = 1, 4 do
      local app = H.write_file(MEMBER:format(srv.conninfo, i <= 2 and long_stop or short_stop))
      outs[i] = H.tmpname()
      os.execute(("build/poolrt %s > %s 2>&1 &"):format(app, outs[i]))
    end
    local monitor_rt = H.runtime{ conninfo = srv.conninfo }
    local monitor = monitor_rt:pool("monitor", { max = 1 })
    local samples, max_total = {}, 0
    local function finished(i) return H.read_file(outs[i]):find("\ndone\n") end
    while poolrt.now() < t0 + 25 and not (finished(1) and finished(2)) do
      local by, total, members = holdings(monitor)
      samples[#samples + 1] = { t = poolrt.now() - t0, by = by, members = members }
      max_total = math.max(max_total, total)
      poolrt.sleep(0.1)
    end
    monitor_rt:close()
    local pid = {}
    for i = 1, 4 do
      local out = H.wait_file(outs[i], "\ndone\n", 10, "member " .. i .. " to finish")
      pid[i] = out:match("pid=(%d+)")
      assert.matches("errors=0 ", out, 1, true)
      assert.is_nil(out:find("too many clients", 1, true), out)
    end
    -- The figures, for the record.
    local lines = {}
    for k = 1, #samples, 5 do
      local s, cells = samples[k], {}
      for i = 1, 4 do cells[i] = tostring(s.by[pid[i]] or 0) end
      lines[#lines + 1] = ("t=%.1f %s"):format(s.t, table.concat(cells, "/"))
    end
    print(("\nfleet: max backends %d; members 1/2/3/4 over time: %s"):format(max_total, table.concat(lines, " ")))
    for i = 1, 4 do print("member " .. i .. ": " .. H.read_file(outs[i]):match("queries=[^\n]*")) end
    assert.is_true(max_total <= 57, "fleet backends peaked at " .. max_total)
    -- Fair share: (60 - 3 reserved - 1 monitor - 2 headroom) / 4 = 13 each
    -- (12 pooled + the sampler's), within 3 sampling intervals of every
    -- member's first sample (seen as 3 backends or more: before it, a
    -- member holds its budget of 1 and the sampler's); then (54 / 2) = 27
    -- each within 3 intervals of two having gone.
    local t_all, t_two
    local function all_sampled(s)
      for i = 1, 4 do if (s.by[pid[i]] or 0) < 3 then return false end end
      return true
    end
    for _, s in ipairs(samples) do
      if not t_all and all_sampled(s) then t_all = s.t end
      if not t_two and s.t > short_stop - t0 and s.members == 2 then t_two = s.t end
    end
    print(("fleet: every member sampled at t=%.1f, two left at t=%.1f"):format(t_all or -1, t_two or -1))
    -- Members 1..n hold lo..hi backends in every sample from `from` + 3
    -- intervals until shortly before `to`; returns how many samples that was.
    local function settled(from, to, n, lo, hi)
      local checked = 0
      for _, s in ipairs(samples) do
        if s.t >= from + 1.5 and s.t < to - t0 - 0.2 then
          for i = 1, n do
            local held = s.by[pid[i]] or 0
            assert.is_true(held >= lo and held <= hi,
                           ("t=%.1f member %d holds %d, want %d..%d"):format(s.t, i, held, lo, hi))
          end
          checked = checked + 1
        end
      end
      return checked
    end
    assert.is_true(settled(assert(t_all, "every member sampled"), short_stop, 4, 11, 15) >= 5, "4 members settled")
    assert.is_true(settled(assert(t_two, "two members left"), long_stop, 2, 24, 29) >= 5, "2 members settled")
  end)

  it("a connect refused as too many clients waits for the budget instead of failing the query", function()
    local policy = H.write_file("return { budget = function() return 10 end }\n")
    local rt = H.runtime{ conninfo = srv.conninfo, fleet = "full", policy = policy, max_connections = 10,
                          server_sample_interval = 0.2 }
    rt:pool("default", { max = 10, acquire_timeout = 10 })
    assert(rt:pool("default"):query("select 1"))
    H.wait_until(function() return rt:runtime_stats().samples_total > 0 end, 10, "a first sample")
    -- Another client takes every connection the server has left, then gives 3 back.
    local hog = H.runtime{ conninfo = srv.conninfo }
    local hp, held = hog:pool("hog", { max = 60, acquire_timeout = 2 }), {}
    H.quietly(function()
      while true do
        local c, err = hp:acquire()
        if not c then
          -- the server's own words, its code (recognised in any language), no source location
          assert.matches('^pool "hog": connect failed: .*FATAL:  sorry, too many clients already %(SQLSTATE 53300%)', err)
          assert.is_nil(err:find("LOCATION", 1, true), err)
          break
        end
        held[#held + 1] = c
      end
    end)
    for _ = 1, 3 do table.remove(held):release(true) end
    local res = assert(rt:spawn(8, "spec.support.fleet_workers", "query", poolrt.now() + 1))
    for i = 1, 8 do assert.same({}, res[i].errors) end
    local s = rt:runtime_stats()
    assert.is_true(s.server_full_total >= 1, "server_full_total " .. s.server_full_total)
    assert.is_true(rt:stats().default.connections_created_total <= 4)
    for _, c in ipairs(held) do c:release() end
    hog:close()
    rt:close()
  end)

  it("keeps the last budget while the server cannot be sampled, and says so once", function()
    local policy = H.write_file("return { budget = function(server) return server.sampled_at == 0 and 3 or 6 end }\n")
    local app = H.write_file(([[
      package.path = "./?.lua;" .. package.path
      local poolrt = require "poolrt"
      local S = require "spec.support.pgserver"
      local srv = { dir = %q }
      for line in io.lines(srv.dir .. "/env") do
        local k, v = line:match("^export ([%%w_]+)='(.*)'$")
        if k then srv[k] = v end
      end
      setmetatable(srv, S)
      local rt = poolrt.runtime{ conninfo = srv.POOLRT_CONNINFO, fleet = "gone", policy = %q, max_connections = 20,
                                 server_sample_interval = 0.2, log_level = "info" }
      local function wait(cond, what)
        local deadline = poolrt.now() + 15
        while not cond() do
          if poolrt.now() > deadline then error("timed out waiting for " .. what) end
          poolrt.sleep(0.02)
        end
      end
      local function stats() return rt:runtime_stats() end
      assert(rt:pool("default"):query("select 1"))
      wait(function() return stats().samples_total > 0 end, "a first sample")
      print("sampled: budget=" .. stats().budget)
      srv:stop_server()
      local errors = stats().sample_errors_total
      wait(function() return stats().sample_errors_total >= errors + 3 end, "failed samples")
      print("down: budget=" .. stats().budget)
      srv:start_server()
      local samples = stats().samples_total
      wait(function() return stats().samples_total > samples end, "a sample after the restart")
      print("up: budget=" .. stats().budget)
      rt:close()
      print("done")
    ]]):format(srv.dir, policy))
    local out, rc = H.run("timeout 60 build/poolrt " .. app)
    assert.equal(0, rc, out)
    assert.matches("sampled: budget=6\n", out, 1, true)
    assert.matches("down: budget=6\n", out, 1, true)
    assert.matches("up: budget=6\ndone\n", out, 1, true)
    local _, failures = out:gsub("cannot sample the server, the budget stays at 6", "")
    local _, recoveries = out:gsub("sampling the server works again", "")
    assert.equal(1, failures, out)
    assert.equal(1, recoveries, out)
  end)
end)
