-- poolrt.workers (lua/poolrt/workers.lua) against the real server: n
-- coroutine workers in one Lua state, whose pool:query statements go out
-- together, one batch per pool and round, in both pool modes.
local poolrt = require "poolrt"
local H = require "spec.helper"

for _, mode in ipairs({ "exclusive", "multiplex" }) do
  local mux = mode == "multiplex"
  describe("poolrt.workers (" .. mode .. ")", function()
    local rt
    setup(function() rt = H.runtime() end)
    teardown(function() rt:close() end)

    it("runs each worker's statements in its order, the workers' together, and returns their results", function()
      local pool = rt:pool("wk_order_" .. mode, { max = 2, multiplex = mux })
      local log = {}
      local before = rt:stats()["wk_order_" .. mode].acquire_total
      local out = assert(poolrt.workers(8, function(k, base)
        local seen = {}
        for i = 1, 5 do
          log[#log + 1] = ("%d:%d"):format(k, i)
          local rows = assert(pool:query("select $1::int as v, $2::text as t", base + k * 10 + i, "w" .. k))
          seen[i] = rows[1].v
          assert(rows[1].t == "w" .. k, "worker " .. k .. " got another worker's row")
        end
        return seen
      end, 1000))
      for k = 1, 8 do
        assert.same({ 1000 + k * 10 + 1, 1000 + k * 10 + 2, 1000 + k * 10 + 3, 1000 + k * 10 + 4, 1000 + k * 10 + 5 },
                    out[k])
      end
      -- every worker issued statement i before any got statement i's rows
      for i = 1, 5 do
        for k = 1, 8 do assert.equal(("%d:%d"):format(k, i), log[(i - 1) * 8 + k]) end
      end
      if not mux then -- one batch per round: 5 rounds, one connection each
        assert.equal(5, rt:stats()["wk_order_" .. mode].acquire_total - before)
      end
    end)

    it("gives a failing statement's error to its worker only", function()
      local pool = rt:pool("wk_err_" .. mode, { max = 2, multiplex = mux })
      local out = assert(poolrt.workers(4, function(k)
        local rows, err = pool:query("select 10 / $1::int as x", k == 3 and 0 or k)
        if k == 3 then return { rows = rows, err = err } end
        return rows[1].x
      end))
      assert.equal(10, out[1])
      assert.equal(5, out[2])
      assert.equal(2, out[4])
      assert.is_nil(out[3].rows) -- as pool:query outside workers: nil, err
      assert.matches('pool "wk_err_' .. mode .. '": division by zero', out[3].err)
    end)

    it("raises bad parameters in the worker, and names the workers that raised", function()
      local pool = rt:pool("wk_raise_" .. mode, { max = 1, multiplex = mux })
      local ok_rows
      local out, err = poolrt.workers(3, function(k)
        if k == 2 then return pool:query("select $1::int", function() end) end
        if k == 3 then error("boom") end
        ok_rows = pool:query("select 1 as one")
        return true
      end)
      assert.is_nil(out)
      assert.matches("^worker 2: .*query parameter of type function", err)
      assert.matches("; worker 3: .*boom$", err)
      assert.same({ one = 1 }, ok_rows[1])
    end)

    it("lets a worker yield to the others, and a coroutine of its own run pool:query itself", function()
      local pool = rt:pool("wk_yield_" .. mode, { max = 1, multiplex = mux })
      local log = {}
      local out = assert(poolrt.workers(2, function(k)
        log[#log + 1] = "a" .. k
        coroutine.yield()
        log[#log + 1] = "b" .. k
        local gen = coroutine.wrap(function() coroutine.yield(pool:query("select $1::int as n", k)) end)
        return gen()[1].n
      end))
      assert.same({ 1, 2 }, out)
      assert.same({ "a1", "a2", "b1", "b2" }, log)
    end)

    it("runs statements for two pools in one round, and pool:query as before outside workers", function()
      local a = rt:pool("wk_two_a_" .. mode, { max = 1, multiplex = mux })
      local b = rt:pool("wk_two_b_" .. mode, { max = 1, multiplex = mux })
      local out = assert(poolrt.workers(4, function(k)
        local p = k % 2 == 0 and a or b
        return p:query("select current_setting('application_name') as app, $1::int as k", k)[1].k
      end))
      assert.same({ 1, 2, 3, 4 }, out)
      assert.same({ n = 5 }, a:query("select 5 as n")[1])
      assert.same({ n = 6 }, b:exec_simple("select 6 as n")[1])
      if not mux then -- exec_simple in a worker runs at once, with the simple protocol's several statements
        out = assert(poolrt.workers(2, function(k)
          local rows = assert(a:exec_simple("select 1 as one; select " .. k .. " as k"))
          return rows[1].k
        end))
        assert.same({ 1, 2 }, out)
      end
    end)

    it("fails the statements a terminated backend took down, each in its worker, and goes on", function()
      local pool = rt:pool("wk_kill_" .. mode, { max = 2, multiplex = mux, query_timeout = 30 })
      local k = H.sleep_killer()
      local t0 = poolrt.now()
      local out = assert(H.quietly(poolrt.workers, 4, function(w)
        local rows, err
        if w == 2 then rows, err = pool:query("select pg_sleep($1) as s", 2.0)
        else rows, err = pool:query("select $1::int as w", w) end
        local after = pool:query("select $1::int as again", w) -- the next round, on a live connection
        return { first = rows and rows[1].w or err, again = after and after[1].again }
      end))
      local killed = k:read("*a")
      k:close()
      assert.matches("^killed %d+", killed)
      assert.is_true(poolrt.now() - t0 < 10, "the workers took " .. (poolrt.now() - t0) .. " s")
      assert.equal(1, out[1].first) -- done before the backend went
      for w = 2, 4 do
        assert.matches('^pool "wk_kill_' .. mode .. '": connection lost while the ', out[w].first, nil, "worker " .. w)
      end
      for w = 1, 4 do assert.equal(w, out[w].again) end
    end)

    it("times out a round's statements not done by query_timeout, in their workers only", function()
      local pool = rt:pool("wk_slow_" .. mode, { max = 2, multiplex = mux, query_timeout = 0.3 })
      local t0 = poolrt.now()
      local out = assert(poolrt.workers(3, function(w)
        local rows, err = pool:query(w == 2 and "select pg_sleep(5) as s, $1::int as w" or "select $1::int as w", w)
        local after = pool:query("select $1::int as again", w)
        return { first = rows and rows[1].w or err, again = after and after[1].again }
      end))
      assert.is_true(poolrt.now() - t0 < 3, "the workers took " .. (poolrt.now() - t0) .. " s")
      assert.equal(1, out[1].first)
      assert.matches('^pool "wk_slow_' .. mode .. '": query timed out', out[2].first)
      -- worker 3's statement was behind the slow one in the same pipeline: the batch's deadline ended it too
      assert.matches("query timed out", out[3].first)
      for w = 1, 3 do assert.equal(w, out[w].again) end
    end)

    it("hands every worker the error when its round's batch cannot run", function()
      local pool = rt:pool("wk_down_" .. mode, { max = 1, multiplex = mux, acquire_timeout = 0.2 })
      local held = assert(pool:acquire())
      local out = assert(poolrt.workers(3, function()
        local rows, err = pool:query("select 1")
        return rows == nil and err or "rows"
      end))
      held:release()
      for k = 1, 3 do assert.matches('pool "wk_down_' .. mode .. '".*timed out', out[k]) end
    end)
  end)
end

describe("poolrt.workers on a multiplexed pool", function()
  local rt
  setup(function() rt = H.runtime() end)
  teardown(function() rt:close() end)

  -- The server processes each round i (1..3) of 40 workers ran on.
  local function pids_per_round(pool, sql)
    local seen = { {}, {}, {} }
    assert(poolrt.workers(40, function()
      for i = 1, 3 do seen[i][assert(pool:query(sql))[1].pid] = true end
    end))
    local n = {}
    for i = 1, 3 do
      n[i] = 0
      for _ in pairs(seen[i]) do n[i] = n[i] + 1 end
    end
    return n
  end

  it("keeps quick statements' rounds on one connection and spreads slow ones over several", function()
    -- The rule is "slower than spread_above per statement" (0.1 ms): judged
    -- here against 3 ms, which a pipelined select stays under and a 10 ms
    -- statement stays over however loaded the machine (a sanitizer build
    -- on 2 busy cores took the select over 0.1 ms).
    local I = require "poolrt.internal"
    local was = I.spread_above
    I.spread_above = 3e-3
    local pool = rt:pool("wk_spread", { max = 4, multiplex = true })
    local quick = pids_per_round(pool, "select pg_backend_pid() as pid")
    local slow = pids_per_round(pool, "select pg_backend_pid() as pid, pg_sleep(0.01)")
    I.spread_above = was
    assert.same({ 1, 1, 1 }, quick)
    -- round 1 is not measured, round 2 is (40 x 10 ms on one server process), round 3 is spread
    assert.same({ 1, 1 }, { slow[1], slow[2] })
    assert.is_true(slow[3] >= 2, "round 3 on " .. slow[3] .. " connection(s)")
  end)
end)

describe("poolrt.workers and poolrt.sleep", function()
  local rt
  setup(function() rt = H.runtime() end)
  teardown(function() rt:close() end)

  it("lets the other workers run while one sleeps, and sleeps the thread only when all do", function()
    local pool = rt:pool("wk_sleep", { max = 1, multiplex = true })
    local log = {}
    local t0 = poolrt.now()
    local out = assert(poolrt.workers(4, function(k)
      if k <= 2 then
        poolrt.sleep(0.3)
        log[#log + 1] = "woke" .. k
        return poolrt.now() - t0
      end
      for i = 1, 5 do assert(pool:query("select $1::int", i)) end
      log[#log + 1] = "queried" .. k
      return poolrt.now() - t0
    end))
    assert.same({ "queried3", "queried4", "woke1", "woke2" }, log)
    assert.is_true(out[1] >= 0.3 and out[2] >= 0.3, "woke before 0.3 s: " .. out[1] .. ", " .. out[2])
    -- side by side: one after the other, the second would wake 0.3 s after the first
    assert.is_true(out[2] - out[1] < 0.25, "the sleeps did not overlap: " .. out[1] .. ", " .. out[2])
    assert.is_true(out[3] < 0.3 and out[4] < 0.3, "the queries waited for the sleepers")
  end)

  it("sleeps as before outside workers", function()
    local t0 = poolrt.now()
    poolrt.sleep(0.05)
    assert.is_true(poolrt.now() - t0 >= 0.05)
  end)
end)

describe("poolrt.workers arguments", function()
  it("refuses a bad count or function, and runs zero workers", function()
    assert.has_error(function() poolrt.workers(-1, function() end) end, "poolrt: workers count must be an integer >= 0")
    assert.has_error(function() poolrt.workers(1.5, function() end) end, "poolrt: workers count must be an integer >= 0")
    assert.has_error(function() poolrt.workers(2, "f") end, "poolrt: workers(n, fn, ...): fn must be a function")
    assert.same({}, poolrt.workers(0, function() end))
  end)
end)
