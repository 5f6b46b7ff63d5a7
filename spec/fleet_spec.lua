-- One budget for many processes (README "One budget for many processes"):
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

describe("a fleet of 4 processes on a server of 60 connections", function()
  local srv
  setup(function() srv = S.start{ max_connections = 60 } end)
  teardown(function() srv:destroy() end)

  it("never exceeds 57 backends, fails no query, holds fair shares and regrows when two members exit", function()
    local t0 = poolrt.now()
    local short_stop, long_stop = t0 + 5, t0 + 10
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
    -- (12 pooled + the sampler's), within 3 sampling intervals of all 4
    -- being visible; then (54 / 2) = 27 each once two have gone.
    local t_all, t_two, checked4, checked2 = nil, nil, 0, 0
    for _, s in ipairs(samples) do
      if not t_all and s.members == 4 then t_all = s.t end
      if not t_two and s.t > short_stop - t0 and s.members == 2 then t_two = s.t end
      if t_all and s.t >= t_all + 1.5 and s.t < short_stop - t0 - 0.2 then
        for i = 1, 4 do
          local n = s.by[pid[i]] or 0
          assert.is_true(n >= 11 and n <= 15, ("t=%.1f member %d holds %d, want 13 +- 2"):format(s.t, i, n))
        end
        checked4 = checked4 + 1
      end
      if t_two and s.t >= t_two + 1.5 and s.t < long_stop - t0 - 0.2 then
        for i = 1, 2 do
          local n = s.by[pid[i]] or 0
          assert.is_true(n >= 24 and n <= 29, ("t=%.1f member %d holds %d, want 27 -3/+2"):format(s.t, i, n))
        end
        checked2 = checked2 + 1
      end
    end
    assert.is_true(checked4 >= 5, "samples with 4 members settled: " .. checked4)
    assert.is_true(checked2 >= 5, "samples with 2 members settled: " .. checked2)
  end)
end)
