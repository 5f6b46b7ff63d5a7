-- Faults against real servers and sockets: the pool keeps serving what it
-- can, fails fast with a clear error where it cannot, recovers by itself,
-- and leaks nothing.  (Killed backends: spec/pool_spec.lua; a server that
-- accepts and never answers: tests/test_pool.c.)
local poolrt = require "poolrt"
local H = require "spec.helper"
local S = require "spec.support.pgserver"

describe("server restart under load", function()
  local srv
  setup(function() srv = S.start() end)
  teardown(function() srv:destroy() end)

  it("fails clearly during a 2 s outage, never hangs, and recovers within 1 s of the restart", function()
    local rt = H.runtime{ conninfo = srv.conninfo, log_level = "off" }
    rt:pool("restart", { max = 4, acquire_timeout = 1, validate_idle = 0.5 })
    local n, now = 9, poolrt.now()
    local res = assert(rt:spawn(n, "spec.support.fault_workers", "restart", n, srv.dir, now + 0.5, 2.0, now + 4.5))
    poolrt.set_log_level("warn")
    local down, up = res[n].down, res[n].up
    for i = 1, n - 1 do
      local failed_during, recovered = 0, nil
      for _, call in ipairs(res[i]) do
        assert.is_true(call.took < 1.5, ("a call took %.2fs"):format(call.took))
        if not call.ok then
          assert.matches('^pool "restart": ', call.err)
          -- after recovery, no dead connection is handed out again
          assert.is_nil(recovered, "failed after recovering: " .. tostring(call.err))
          if call.t > down then failed_during = failed_during + 1 end
        elseif call.t > up and not recovered then
          recovered = call.t + call.took
        end
      end
      assert.is_true(failed_during > 0, "thread " .. i .. " never saw the outage")
      assert.is_truthy(recovered, "thread " .. i .. " never recovered")
      assert.is_true(recovered - up < 1.0, ("thread %d recovered %.2fs after the restart"):format(i, recovered - up))
    end
    local s = rt:stats().restart
    assert.is_true(s.total <= 4)
    assert.equal(0, s.in_use)
    rt:close()
  end)
end)

describe("connect failures", function()
  local rt
  before_each(function() rt = H.runtime{ log_level = "off" } end)
  after_each(function() rt:close() poolrt.set_log_level("warn") end)

  it("a refused connection names the pool, and retries back off instead of hammering the server", function()
    local pool = rt:pool("refused", { conninfo = "host=127.0.0.1 port=1 user=postgres", connect_backoff_max = 0.5 })
    local _, first = pool:query("select 1")
    assert.matches('^pool "refused": connect failed: .*Connection refused', first)
    local t0 = poolrt.now()
    local calls = 0
    while poolrt.now() - t0 < 0.3 do
      local rows, err = pool:query("select 1")
      assert.is_nil(rows)
      assert.matches('^pool "refused": ', err)
      calls = calls + 1
    end
    local s = rt:stats().refused
    assert.is_true(calls > 20)
    -- 50 ms, 100 ms, 200 ms...: a handful of real attempts in 0.3 s
    assert.is_true(s.connect_errors_total <= 5, "attempts: " .. s.connect_errors_total)
    assert.is_true(s.connect_backoff_total >= calls - 5)
    local _, later = pool:query("select 1")
    assert.matches("connect failed %d+ time%(s%) in a row; next attempt in %d%.%d%ds; last error: .*refused", later)
    assert.equal(0, s.total)
  end)

  it("a wrong password or unknown database gives a clear error that never shows the password", function()
    H.admin("drop role if exists poolrt_pw")
    H.admin("create role poolrt_pw login password 'right-secret'")
    local base = H.conninfo:gsub("user=%S+", "")
    local bad = rt:pool("badpw", { conninfo = base .. " user=poolrt_pw password=wrong-secret" })
    local _, err = bad:query("select 1")
    assert.matches('^pool "badpw": connect failed: .*password authentication failed for user "poolrt_pw"', err)
    assert.is_nil(err:find("secret", 1, true))
    local good = rt:pool("goodpw", { conninfo = base .. " user=poolrt_pw password=right-secret" })
    assert(good:query("select 1"))
    local nodb = rt:pool("nodb", { conninfo = H.conninfo .. " dbname=no_such_db" })
    local _, err2 = nodb:query("select 1")
    assert.matches('^pool "nodb": connect failed: .*database "no_such_db" does not exist', err2)
  end)
end)

describe("leaks", function()
  it("warns about a connection held past leak_threshold, naming the pool and how long, and counts it", function()
    local app = H.write_file([[
      local poolrt = require "poolrt"
      local rt = poolrt.runtime{ reap_interval = 0.02 }
      local pool = rt:pool("leaky", { leak_threshold = 0.1 })
      local held = assert(pool:acquire())
      local deadline = poolrt.now() + 5
      while rt:stats().leaky.leaks_total == 0 and poolrt.now() < deadline do poolrt.sleep(0.01) end
      print("leaks_total", rt:stats().leaky.leaks_total)
      held:release()
    ]])
    local out, rc = H.run("build/poolrt " .. app)
    assert.equal(0, rc)
    assert.matches("leaks_total\t1", out)
    assert.matches('pool "leaky": connection 1 held for 0%.%d+s, over leak_threshold=0%.100s', out)
    assert.matches('pool "leaky": connection 1 released after %d%.%d+s %(reported as a possible leak%)', out)
  end)
end)

describe("exhaustion", function()
  local srv
  setup(function() srv = S.start{ max_connections = 20 } end)
  teardown(function() srv:destroy() end)

  it("200 callers, a pool of 10, a server allowing 20: no 'too many clients' reaches a caller", function()
    local rt = H.runtime{ conninfo = srv.conninfo }
    rt:pool("exhaust", { max = 10, acquire_timeout = 30 })
    local res = assert(rt:spawn(200, "spec.support.fault_workers", "exhaust", 5))
    for i = 1, 200 do assert.same({}, res[i]) end
    local s = rt:stats().exhaust
    assert.equal(1000, s.acquire_total)
    assert.is_true(s.connections_created_total <= 10)
    rt:close()
  end)
end)

describe("shutdown", function()
  it("SIGTERM while 8 threads are mid-query: queries finish, every server connection closes, exit 0", function()
    local app_name = "poolrt_sigterm_spec"
    local ready, out, moddir = H.tmpname(), H.tmpname(), H.tmpname()
    os.execute("mkdir -p " .. moddir)
    local worker = H.write_file([[
      local poolrt = require "poolrt"
      local ffi = require "ffi"
      pcall(ffi.cdef, "int getpid(void);")
      local M = {}
      function M.run(rt, i, ready)
        local pool = rt:pool("busy")
        if i == 9 then
          while rt:stats().busy.in_use < 8 do poolrt.sleep(0.005) end
          local f = io.open(ready, "w") f:write(ffi.C.getpid()) f:close()
          return
        end
        while true do assert(pool:query("select pg_sleep(0.3)")) end
      end
      return M
    ]], moddir .. "/poolrt_sigterm_worker.lua")
    local app = H.write_file(([[
      require("ffi").cdef "int getpid(void);"
      package.path = "%s/?.lua;" .. package.path
      local poolrt = require "poolrt"
      local rt = poolrt.runtime{ conninfo = os.getenv("POOLRT_CONNINFO") .. " application_name=%s" }
      rt:pool("busy", { max = 8 })
      rt:spawn(9, "poolrt_sigterm_worker", "run", %q)
    ]]):format(moddir, app_name, ready))
    local t0 = poolrt.now()
    os.execute(("sh -c 'build/poolrt --log-level info --grace 5 %s; echo exit=$?' > %s 2>&1 &"):format(app, out))
    local pid = tonumber(H.wait_file(ready, "^%d+$", 10, "8 connections in use"))
    -- In use is not yet on the server: a thread may still be preparing its
    -- statement or between two queries.  Wait for the server to see all 8.
    H.wait_until(function()
      return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = $1 "
                              .. "and state = 'active'", app_name)[1].n) == 8
    end, 5, "8 queries active on the server")
    os.execute("kill -TERM " .. pid)
    -- Up to the newline: echo's one write could be read half done.
    local log = H.wait_file(out, "exit=%d+\n", 10, "the host to exit")
    assert.matches("exit=0", log)
    assert.matches("SIGTERM: draining %(grace 5%.0s%)", log)
    assert.matches("drained; exiting", log)
    assert.is_true(poolrt.now() - t0 < 10)
    H.wait_until(function()
      return H.admin("select count(*) as n from pg_stat_activity where application_name = $1", app_name)[1].n == 0
    end, 5, "every server connection of the host to close")
    os.remove(worker)
  end)
end)
