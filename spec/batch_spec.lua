-- pool:query_batch (prt_pool_query_batch, src/batch.c and mux_spread.c's
-- batch rounds) against the real server, in both modes: n statements in
-- one call, each with a Sync of its own.
local poolrt = require "poolrt"
local H = require "spec.helper"

local W = "spec.support.batch_workers"

for _, mode in ipairs({ "exclusive", "multiplex" }) do
  local mux = mode == "multiplex"
  describe("pool:query_batch (" .. mode .. ")", function()
    local rt
    setup(function() rt = H.runtime() end)
    teardown(function() rt:close() end)

    it("returns typed rows in order, and a failing statement's error for it only", function()
      local pool = rt:pool("bx_order_" .. mode, { max = 2, multiplex = mux })
      local stmts = {}
      for k = 1, 20 do stmts[k] = { "select $1::int as k, $2::text as s, $3::bool as b", k, "s" .. k, k % 2 == 0 } end
      stmts[11] = { "select 1 / $1::int as x", 0 }
      stmts[12] = { "selec 1" }
      local res, errs = pool:query_batch(stmts)
      assert.equal(20, #res)
      for k = 1, 20 do
        if k == 11 or k == 12 then
          assert.is_false(res[k])
        else
          assert.same({ k = k, s = "s" .. k, b = k % 2 == 0 }, res[k][1], "statement " .. k)
          assert.equal(1, #res[k])
          assert.is_nil(errs[k])
        end
      end
      assert.matches('pool "bx_order_' .. mode .. '": division by zero %(SQLSTATE 22012%)', errs[11])
      assert.matches("syntax error", errs[12])
      res, errs = pool:query_batch({ { "select 1 as n" }, { "select 2 as n" } })
      assert.is_nil(errs)
      assert.same({ { n = 1 }, { n = 2 } }, { res[1][1], res[2][1] })
      res, errs = pool:query_batch({})
      assert.same({}, res)
      assert.is_nil(errs)
      assert.equal(0, rt:stats()["bx_order_" .. mode].waiting)
    end)

    it("runs a fresh state's first batch when none of its statements has parameters", function()
      rt:pool("bx_noparams_" .. mode, { max = 1, multiplex = mux })
      assert.same({ "1,2" }, assert(rt:spawn(1, W, "first_without_params", "bx_noparams_" .. mode)))
    end)

    it("gives clear errors and does not hang when the connection is terminated mid-batch", function()
      local pool = rt:pool("bx_broken_" .. mode, { max = 2, multiplex = mux, query_timeout = 30 })
      local k = H.sleep_killer()
      local t0 = poolrt.now()
      local res, errs = H.quietly(pool.query_batch, pool, { { "select 1 as a" }, { "select pg_sleep($1) as s, 2 as b", 2.0 },
                                                            { "select 3 as c" }, { "select 4 as d" } })
      local out = k:read("*a")
      k:close()
      assert.matches("^killed %d+", out)
      assert.is_true(poolrt.now() - t0 < 10, "the batch took " .. (poolrt.now() - t0) .. " s")
      assert.same({ a = 1 }, res[1][1])
      for i = 2, 4 do
        assert.is_false(res[i])
        assert.matches('^pool "bx_broken_' .. mode .. '": connection lost while the ', errs[i], nil, "statement " .. i)
      end
      assert.matches("terminating connection due to administrator command", errs[2])
      assert.equal(1, rt:stats()["bx_broken_" .. mode].connections_closed_total.broken)
      res, errs = pool:query_batch({ { "select 5 as e" }, { "select 6 as f" } }) -- a new connection serves
      assert.is_nil(errs)
      assert.same({ { e = 5 }, { f = 6 } }, { res[1][1], res[2][1] })
    end)

    it("times out the statements not done by query_timeout and keeps the ones done", function()
      local pool = rt:pool("bx_timeout_" .. mode, { max = 1, multiplex = mux, query_timeout = 1.0 })
      local t0 = poolrt.now()
      local res, errs = pool:query_batch({ { "select 1 as a" }, { "select pg_sleep(5) as s" }, { "select 3 as c" } })
      assert.is_true(poolrt.now() - t0 < 4, "the batch took " .. (poolrt.now() - t0) .. " s")
      assert.same({ a = 1 }, res[1][1])
      for i = 2, 3 do
        assert.is_false(res[i])
        assert.matches("timed out", errs[i], nil, "statement " .. i)
      end
      assert.equal(7, assert(pool:query("select 7 as n"))[1].n) -- the pool goes on serving
      res, errs = pool:query_batch({ { "select 8 as n" } })
      assert.is_nil(errs)
      assert.equal(8, res[1][1].n)
    end)
  end)
end

describe("pool:query_batch (multiplex only)", function()
  local rt
  setup(function() rt = H.runtime() end)
  teardown(function() rt:close() end)

  it("spreads a batch over connections with spread = true, each result still its statement's", function()
    local pool = rt:pool("bx_spread", { max = 4, multiplex = true })
    local stmts = {}
    for k = 1, 64 do stmts[k] = { "select $1::int as k, pg_backend_pid() as pid", k } end
    stmts[30] = { "select 1 / $1::int as k", 0 }
    local function run(opts)
      local res, errs = pool:query_batch(stmts, opts)
      local pids, n = {}, 0
      for k = 1, 64 do
        if k == 30 then
          assert.is_false(res[k])
          assert.matches("division by zero", errs[k])
        else
          assert.equal(k, res[k][1].k, "statement " .. k)
          if not pids[res[k][1].pid] then pids[res[k][1].pid], n = true, n + 1 end
        end
      end
      return n
    end
    assert.equal(4, run({ spread = true })) -- 4 chunks of 16, a connection each
    assert.equal(1, run()) -- in order on one connection
    assert.has_error(function() pool:query_batch(stmts, "spread") end, "poolrt: query_batch(stmts, { spread = })")
  end)

  it("times out only the spread chunk that was not done by query_timeout", function()
    local pool = rt:pool("bx_spread_slow", { max = 3, multiplex = true, query_timeout = 0.3 })
    local stmts = {}
    for k = 1, 48 do stmts[k] = { "select $1::int as k", k } end
    stmts[20] = { "select pg_sleep($1) as s, 20 as k", 5 }
    local t0 = poolrt.now()
    local res, errs = H.quietly(pool.query_batch, pool, stmts, { spread = true })
    assert.is_true(poolrt.now() - t0 < 3, "the batch took " .. (poolrt.now() - t0) .. " s")
    for i = 1, 48 do
      if i >= 20 and i <= 32 then
        assert.is_false(res[i], "statement " .. i)
        assert.matches("query timed out", errs[i])
      else
        assert.equal(i, res[i][1].k, "statement " .. i)
      end
    end
    assert.same({ n = 1 }, pool:query("select 1 as n")[1])
  end)

  it("fails only the chunk a terminated backend ran", function()
    local pool = rt:pool("bx_spread_kill", { max = 3, multiplex = true, query_timeout = 30 })
    local stmts = {}
    for k = 1, 48 do stmts[k] = { "select $1::int as k", k } end -- 3 chunks of 16
    stmts[20] = { "select pg_sleep($1) as s, 20 as k", 2.0 }
    local k = H.sleep_killer()
    local res, errs = H.quietly(pool.query_batch, pool, stmts, { spread = true })
    local out = k:read("*a")
    k:close()
    assert.matches("^killed %d+", out)
    for i = 1, 48 do
      if i >= 20 and i <= 32 then
        assert.is_false(res[i], "statement " .. i)
        assert.matches("connection lost while the ", errs[i])
      else
        assert.equal(i, res[i][1].k, "statement " .. i) -- its chunk ran on another server process
      end
    end
  end)

  it("refuses BEGIN in a batch for that statement only", function()
    local pool = rt:pool("bx_tx", { max = 1, multiplex = true })
    local res, errs = pool:query_batch({ { "select 1 as n" }, { "begin" }, { "select 2 as n" } })
    assert.same({ n = 1 }, res[1][1])
    assert.is_false(res[2])
    assert.matches("pool:transaction", errs[2])
    assert.same({ n = 2 }, res[3][1])
  end)

  it("hands many threads x batches on 3 connections each statement its own result", function()
    local pool = rt:pool("bx_many", { max = 3, multiplex = true })
    local res = assert(rt:spawn(12, W, "batches", "bx_many", 15, 40, 7))
    for i, r in ipairs(res) do assert.equal("ok=525 failed=75", r, "thread " .. i) end
    assert.is_true(rt:stats().bx_many.total <= 3)
    assert(pool:query("select 1"))
  end)

  it("mixes batches and single statements from many threads on one connection", function()
    rt:pool("bx_mix", { max = 1, multiplex = true })
    local res = assert(rt:spawn(6, W, "mixed", "bx_mix", 10, 30))
    for i, r in ipairs(res) do assert.equal("ok", r, "thread " .. i) end
    assert.equal(1, rt:stats().bx_mix.connections_created_total)
  end)
end)
