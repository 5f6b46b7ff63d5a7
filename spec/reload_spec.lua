-- Hot reload under load: rt:reload, SIGHUP and --watch.  A reload never
-- fails an acquire, and a bad policy never replaces a good one.
local poolrt = require "poolrt"
local H = require "spec.helper"

local SIZE10 = H.write_file("return { size = function(pool) return 10 end, pick = 'mru' }\n")
local LRU10 = H.write_file("return { size = function(pool) return 10 end, pick = function(idle, pool) return 1 end }\n")
local BROKEN = H.write_file("return { size = function(pool) return 'ten' end }\n")
local SIZE2 = H.write_file("return { size = function(pool) return 2 end }\n")

describe("reload under load", function()
  it("200 reloads (two good policies and a bad one) while 8 threads query: no query fails", function()
    local rt = H.runtime{ policy = SIZE10 }
    rt:pool("storm", { max = 4, acquire_timeout = 10 })
    local n, count = 9, 200
    local res = assert(H.quietly(rt.spawn, rt, n, "spec.support.reload_workers", "storm", n, "storm",
                                 { LRU10, SIZE10, BROKEN }, count))
    local queries = 0
    for i = 1, n - 1 do
      assert.same({}, res[i].failures)
      queries = queries + res[i].queries
    end
    local reloader = res[n]
    local ps = rt:policy_stats()
    -- every third reload is the broken policy
    assert.equal(math.floor(count / 3), reloader.failed)
    assert.equal(count - reloader.failed, reloader.ok)
    assert.equal(reloader.ok, ps.reloads.ok)
    assert.equal(reloader.failed, ps.reloads.failed)
    assert.equal(1 + reloader.ok, ps.generation)
    local s = rt:stats().storm
    assert.equal(queries, s.acquire_total)
    assert.equal(0, s.acquire_timeouts_total)
    assert.equal(10, s.max)
    rt:close()
  end)

  it("shrinking max from 10 to 2 under load ends with at most 2 connections and no query lost", function()
    local rt = H.runtime{ policy = SIZE10 }
    rt:pool("shrink", { max = 10, acquire_timeout = 10,
                        conninfo = H.conninfo .. " application_name=reload_spec_shrink" })
    local n = 9
    local res = assert(rt:spawn(n, "spec.support.reload_workers", "shrink", n, "shrink", SIZE2))
    for i = 1, n - 1 do assert.same({}, res[i].failures) end
    local s = rt:stats().shrink
    assert.equal(2, s.max)
    assert.is_true(s.total <= 2)
    assert.is_true(s.connections_closed_total.shrink >= 8 - 2)
    -- and the server agrees: at most 2 backends left for this pool
    H.wait_until(function()
      return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = 'reload_spec_shrink'")[1].n) <= 2
    end, 5, "the server to see at most 2 connections")
    rt:close()
  end)
end)

-- Starts `build/poolrt ARGS app.lua` in the background; the app writes its
-- pid to a ready file once its runtime exists.  Returns the pid and a
-- function that waits for the app's output.
local function start_host(args, app_src)
  local ready = H.tmpname()
  local app = H.write_file(([[
    local ffi = require "ffi"
    ffi.cdef "int getpid(void);"
    local poolrt = require "poolrt"
    local rt = poolrt.runtime{ reap_interval = 0 }
    local f = assert(io.open(%q, "w")) f:write(ffi.C.getpid()) f:close()
  ]]):format(ready) .. app_src)
  local out = H.tmpname()
  os.execute("build/poolrt " .. args .. " " .. app .. " > " .. out .. " 2>&1 &")
  local pid = tonumber(H.wait_file(ready, "^%d+$", 10, "the host to start"))
  return pid, function() return H.wait_file(out, "\ndone", 15, "the host to finish") end
end

-- App tail: wait until `n` reloads happened (or 10 s), then 0.5 s more to
-- see that no extra reload follows, and print the counts.
local WAIT_RELOADS = [[
  local n = tonumber(arg[1] or 1)
  local deadline = poolrt.now() + 10
  while rt:policy_stats().reloads.ok < n and poolrt.now() < deadline do poolrt.sleep(0.01) end
  poolrt.sleep(0.5)
  local ps = rt:policy_stats()
  print("reloads", ps.reloads.ok, ps.reloads.failed, "generation", ps.generation)
  print("done")
]]

describe("host reload triggers", function()
  it("SIGHUP reloads the policy", function()
    local policy = H.write_file("return { pick = 'mru' }\n")
    local pid, output = start_host("--policy " .. policy, WAIT_RELOADS)
    os.execute("kill -HUP " .. pid)
    assert.matches("reloads\t1\t0\tgeneration\t2", output())
  end)

  it("--watch reloads exactly once when an editor replaces the file by rename", function()
    local policy = H.write_file("return { pick = 'mru' }\n")
    local _, output = start_host("--watch --policy " .. policy, WAIT_RELOADS)
    -- what editors do: write a temporary file, then rename it over the original
    local tmp = H.write_file("return { pick = 'lru' }\n", policy .. ".swp")
    assert(os.rename(tmp, policy))
    assert.matches("reloads\t1\t0\tgeneration\t2", output())
  end)
end)
