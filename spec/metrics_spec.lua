-- Prometheus metrics (src/metrics.c) as Prometheus itself judges them:
-- `promtool check metrics` must accept rt:metrics() and the host's
-- --metrics endpoint, with no complaint at all.  resty.poolrt's /metrics is
-- linted the same way in spec/openresty_spec.lua, where its nginx runs.
local H = require "spec.helper"
local promtool = require "spec.support.promtool"

local function assert_lint_clean(text)
  local out, rc = promtool.check(text)
  assert.equal("", out)
  assert.equal(0, rc)
end

-- Each family's HELP and TYPE once, or a scrape is rejected.
local function families(text)
  local seen, n = {}, 0
  for fam in text:gmatch("# TYPE (%S+)") do
    assert.is_nil(seen[fam], "duplicate TYPE " .. fam)
    seen[fam], n = true, n + 1
  end
  return seen, n
end

describe("metrics under promtool", function()
  it("the linter is really consulted: it rejects the names poolrt once used", function()
    local out, rc = promtool.check("# HELP poolrt_pool_total Server connections.\n"
                                   .. "# TYPE poolrt_pool_total gauge\npoolrt_pool_total{pool=\"a\"} 1\n")
    assert.equal(3, rc)
    assert.matches('non-counter metrics should not have "_total" suffix', out, 1, true)
  end)

  it("rt:metrics() passes, with awkward pool names and every kind of series populated", function()
    local rt = H.runtime{ max_pools = 2 }
    assert(rt:pool("app"):query("select 1"))
    assert(rt:pool('t"q\\x'):query("select 1"))
    assert(rt:pool("third"):query("select 1"))  -- over max_pools: an eviction or an over-cap admission
    local text = rt:metrics()
    rt:close()
    assert_lint_clean(text)
    local fams = families(text)
    for _, name in ipairs{ "poolrt_cl_active", "poolrt_cl_waiting", "poolrt_sv_active", "poolrt_sv_idle",
                           "poolrt_maxwait_seconds", "poolrt_pool_connections", "poolrt_pool_max",
                           "poolrt_acquire_wait_seconds", "poolrt_connections" } do
      assert.is_true(fams[name], name)
    end
    assert.is_nil(fams.poolrt_pool_total)
    assert.is_nil(fams.poolrt_maxwait)
    assert.matches('\npoolrt_sv_idle{pool="t\\"q\\\\x"} 1\n', text, 1, true)
    assert.is_nil(text:find("runtime=", 1, true), "one runtime needs no runtime label")
  end)

  it("a fleet runtime's budget and server sample pass too", function()
    local policy = H.write_file("return { budget = function(server) return server.sampled_at > 0 and 7 or 3 end }\n")
    local rt = H.runtime{ fleet = "metrics", policy = policy, max_connections = 20, server_sample_interval = 0.2 }
    assert(rt:pool("app"):query("select 1"))
    -- the pool's connection and the sampler's, once a sample has seen both
    H.wait_until(function() return rt:runtime_stats().server.own_backends == 2 end, 10, "a server sample")
    local text = rt:metrics()
    rt:close()
    assert_lint_clean(text)
    local fams = families(text)
    for _, name in ipairs{ "poolrt_budget", "poolrt_budget_waiting", "poolrt_server_sampled_timestamp_seconds",
                           "poolrt_server_samples_total", "poolrt_server_full_total", "poolrt_server_max_connections",
                           "poolrt_server_backends", "poolrt_fleet_members" } do
      assert.is_true(fams[name], name)
    end
    assert.matches("\npoolrt_budget 7\n", text, 1, true)
    assert.matches('\npoolrt_server_backends{of="process"} 2\n', text, 1, true)
    assert.matches("\npoolrt_fleet_members 1\n", text, 1, true)
    local ts = tonumber(text:match("\npoolrt_server_sampled_timestamp_seconds (%d+)\n"))
    assert.is_true(math.abs(ts - os.time()) < 60, tostring(ts))
  end)

  it("the host's --metrics passes with several runtimes: each family once, runtimes told apart", function()
    local ready, done = H.tmpname(), H.tmpname()
    local app = H.write_file(([[
      local poolrt = require "poolrt"
      local one = poolrt.runtime{ reap_interval = 0 }
      local two = poolrt.runtime{ reap_interval = 0 }
      assert(one:pool("app"):query("select 1"))
      assert(one:pool("jobs"):query("select 1"))
      assert(two:pool("app"):query("select 1"))
      local f = assert(io.open(%q, "w")) f:write("ready") f:close()
      local deadline = poolrt.now() + 60
      while poolrt.now() < deadline and not io.open(%q) do poolrt.sleep(0.01) end -- the spec has scraped
      print("done")
    ]]):format(ready, done))
    local port = H.free_port()
    local out = H.tmpname()
    os.execute(("build/poolrt --metrics 127.0.0.1:%d %s > %s 2>&1 &"):format(port, app, out))
    local started, why = pcall(H.wait_file, ready, "^ready$", 30, "the host's runtimes")
    assert(started, tostring(why) .. "; host output: " .. H.read_file(out))
    local text, rc = H.run(("curl -sSf -m 10 http://127.0.0.1:%d/metrics"):format(port))
    H.write_file("", done)
    H.wait_file(out, "done\n", 30, "the host to finish")
    assert.equal(0, rc, text)
    assert_lint_clean(text)
    local _, n = families(text)
    assert.is_true(n >= 20, "families: " .. n)
    local ids = {}
    for id in text:gmatch('poolrt_sv_idle{pool="app",runtime="(%d+)"} 1\n') do ids[#ids + 1] = id end
    assert.equal(2, #ids)
    assert.are_not.equal(ids[1], ids[2])
    local one = text:match('\npoolrt_maxwait_seconds{pool="jobs",runtime="(%d+)"} 0\n')
    assert.is_string(one, "jobs' runtime")
    local two = one == ids[1] and ids[2] or ids[1]
    assert.matches('\npoolrt_pools{runtime="' .. one .. '"} 2\n', text, 1, true)
    assert.matches('\npoolrt_pools{runtime="' .. two .. '"} 1\n', text, 1, true)
  end)
end)
