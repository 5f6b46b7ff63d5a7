-- policies/replicas.lua and the endpoint hook against a real primary and
-- standby (spec/support/pair.lua): reads leave a standby whose replay is
-- paused and come back after it resumes; a refused standby is banned after
-- three failed connects and then tried exactly once per ban; the hook's
-- answers are checked.  Where a query ran is asked of the server.
local poolrt = require "poolrt"
local H = require "spec.helper"
local pair = require "spec.support.pair"

local WHERE = "select pg_is_in_recovery() as standby"

local function endpoint(rt, port)
  for _, e in ipairs(rt:runtime_stats().endpoints) do
    if e.name == "127.0.0.1:" .. port then return e end
  end
end

-- Of n reads, how many ran on a standby.
local function on_standby(pool, n)
  local k = 0
  for _ = 1, n do
    if assert(pool:query(WHERE))[1].standby then k = k + 1 end
  end
  return k
end

describe("policies/replicas.lua", function()
  teardown(pair.stop_all)

  it("moves reads off a standby whose replay is paused, and back once it resumes", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local rt = poolrt.runtime{ policy = "policies/replicas.lua", reap_interval = 0.2, server_sample_interval = 0.2 }
    finally(function() rt:close() end)
    local reads = rt:pool("reads", { conninfo = p:conninfo("target_session_attrs=prefer-standby"), max = 4 })
    local writes = rt:pool("writes", { conninfo = p:conninfo("target_session_attrs=read-write"), max = 2 })
    assert(writes:query("create table rp_t(x int)"))
    H.wait_until(function() return on_standby(reads, 20) >= 18 end, 10, "reads on the standby")

    p:sql("standby", "select pg_wal_replay_pause()")
    local paused = poolrt.now()
    local moved
    H.wait_until(function()
      assert(writes:query("insert into rp_t values (1)")) -- WAL the standby receives but does not replay
      local k = on_standby(reads, 10)
      moved = k == 0
      return moved
    end, 10, "reads leaving the paused standby")
    local took = poolrt.now() - paused
    -- max_lag (1 s) plus one sample interval, and a margin for a busy machine
    assert.is_true(took < 1 + 0.2 + 2, ("reads left after %.2f s"):format(took))
    assert.is_true(endpoint(rt, p.standby_port).lag_seconds > 1)

    p:sql("standby", "select pg_wal_replay_resume()")
    H.wait_until(function() return on_standby(reads, 20) >= 18 end, 10, "reads back on the standby")
    H.wait_until(function() return endpoint(rt, p.standby_port).lag_seconds == 0 end, 5, "the lag back at 0")
  end)

  it("bans a refused standby after three failed connects, then tries it exactly once per ban", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local rt = poolrt.runtime{ policy = "policies/replicas.lua", reap_interval = 0, server_sample_interval = 60 }
    finally(function() rt:close() end)
    local port = p.standby_port
    p:halt("standby")
    local ro = rt:pool("ro", { conninfo = p:conninfo("target_session_attrs=standby"), max = 1,
                               acquire_timeout = 0.2, connect_backoff_max = 0.05 })
    local function connects() return (endpoint(rt, port) or { connects_total = 0 }).connects_total end
    -- Three failures in a row open the circuit ...
    H.wait_until(function() ro:query("select 1") return connects() >= 3 end, 5, "three connects to the standby")
    local opened = poolrt.now()
    assert.equal(3, connects())
    -- ... and for the first second nothing reaches the server.
    local errs = {}
    while poolrt.now() - opened < 0.8 do
      local _, err = ro:query("select 1")
      errs[#errs + 1] = err
      poolrt.sleep(0.02)
    end
    assert.equal(3, connects())
    -- replicas.lua answers nil (no server it may use): the pool says so
    assert.matches("the endpoint hook chose no server", table.concat(errs, "\n"), 1, true)
    -- When the ban ends, one trial; it fails, so the next ban is 2 s long.
    H.wait_until(function() ro:query("select 1") return connects() == 4 end, 3, "the trial connect")
    local t4 = poolrt.now()
    while poolrt.now() - t4 < 1.5 do
      ro:query("select 1")
      poolrt.sleep(0.02)
    end
    assert.equal(4, connects(), "one trial per ban")
    assert.is_true(endpoint(rt, port).failures >= 4)
    -- Back up: the next trial succeeds and the circuit closes.
    p:resume("standby")
    H.wait_until(function() return ro:query("select 1") ~= nil end, 10, "the standby serving again")
    assert.equal(0, endpoint(rt, port).failures)
  end)

  it("reads go on from the primary while the standby is stopped (SIGSTOP), and nothing hangs", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local rt = poolrt.runtime{ policy = "policies/replicas.lua", reap_interval = 0.2, server_sample_interval = 0.3 }
    finally(function() rt:close() end)
    local reads = rt:pool("reads", { conninfo = p:conninfo("target_session_attrs=prefer-standby connect_timeout=2"),
                                     max = 4, acquire_timeout = 8, query_timeout = 1 })
    H.wait_until(function() return on_standby(reads, 20) >= 18 end, 10, "reads on the standby")
    -- The postmaster first (it forks no more), then every child (each backend
    -- is a process group of its own, so no group signal reaches them all);
    -- children from /proc, since a fresh Debian has no procps.  Everything is
    -- continued before the pair stops, whatever happens here.
    local pid = assert(tonumber(H.read_file(p.env.POOLRT_STANDBY_PGDATA .. "/postmaster.pid"):match("^(%d+)")))
    local port = p.standby_port
    local kids = ""
    finally(function() H.run("kill -CONT " .. pid .. " " .. kids .. " 2>/dev/null") end)
    H.run("kill -STOP " .. pid) -- before its children are listed: it forks none after this
    kids = H.run("for f in /proc/[0-9]*/stat; do read -r p c s pp rest < $f 2>/dev/null && "
                 .. "[ \"$pp\" = " .. pid .. " ] && echo $p; done"):gsub("%s+", " ")
    H.run("kill -STOP " .. kids .. " 2>/dev/null")
    local all = pid .. " " .. kids
    assert.matches("^%d+ %(.-%) T", H.read_file("/proc/" .. pid .. "/stat"), 1, false, "the postmaster is not stopped")
    local t_end, worst, ok_after, n = poolrt.now() + 10, 0, 0, 0
    while poolrt.now() < t_end do
      local t0 = poolrt.now()
      local rows, err = reads:query(WHERE)
      local took = poolrt.now() - t0
      worst = math.max(worst, took)
      n = n + 1
      -- query_timeout 1 s, the cancel waited for 1 s at most, its drain 1 s, connect_timeout 2 s
      assert.is_true(took < 6, ("a read took %.2f s: %s"):format(took, tostring(err)))
      if rows and poolrt.now() > t_end - 4 then
        assert.is_false(rows[1].standby) -- the standby is stopped: the primary serves
        ok_after = ok_after + 1
      end
      poolrt.sleep(0.002)
    end
    print(("\n  SIGSTOP: %d reads, the slowest %.2f s, %d served by the primary in the last 4 s"):format(n, worst, ok_after))
    assert.is_true(ok_after > 10)
    assert.is_false(endpoint(rt, port).up)
    H.run("kill -CONT " .. all .. " 2>/dev/null")
    -- Resumed, it serves reads again.
    H.wait_until(function() return on_standby(reads, 20) >= 18 end, 15, "reads back on the resumed standby")
  end)

  it("checks the endpoint hook's answers: an index it may not use is an error, nil is no server", function()
    local p = pair.start()
    finally(function() p:stop() end)
    local policy = H.write_file([[
      return { endpoint = function(endpoints, pool)
        if pool.name == "sample" then return 1 end -- the dry run (poolrt check) gets a good answer
        if pool.name == "none" then return nil end
        for i = 1, #endpoints do if not endpoints[i].allowed then return i end end
        return 99
      end }
    ]])
    local rt = poolrt.runtime{ policy = policy, reap_interval = 0 }
    finally(function() rt:close() end)
    local rw = rt:pool("rw", { conninfo = p:conninfo("target_session_attrs=read-write"), max = 2 })
    -- Its first answer (99) is not an index: the built-in order serves, on the primary.
    assert.is_false(assert(rw:query(WHERE))[1].standby)
    local errors = rt:policy_stats().errors.endpoint
    assert.is_true(errors >= 1)
    local none = rt:pool("none", { conninfo = p:conninfo(), max = 1 })
    local rows, err = none:query("select 1")
    assert.is_nil(rows)
    assert.matches("the endpoint hook chose no server", err)
  end)
end)
