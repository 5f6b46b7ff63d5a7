-- Multiplexed queries (pool option `multiplex`, src/multiplex.c) against
-- the real server: statements of many callers pipelined on shared
-- connections, each with a Sync of its own.
local poolrt = require "poolrt"
local H = require "spec.helper"

local W = "spec.support.mux_workers"

-- Every spawned thread's result must be the string `want` (a pattern).
local function all_match(res, want)
  for i, r in ipairs(res) do assert.matches(want, tostring(r), nil, "thread " .. i) end
end

describe("multiplex", function()
  local rt, level
  setup(function()
    rt = H.runtime()
    level = poolrt.log_level()
  end)
  teardown(function() rt:close() poolrt.set_log_level(level) end)

  it("runs pool:query without holding a connection and returns typed rows and errors", function()
    local pool = rt:pool("mx_basic", { max = 2, multiplex = true })
    assert.same({ n = 42 }, assert(pool:query("select $1::int + 1 as n", 41))[1])
    local rows, err = pool:query("select 1 / 0")
    assert.is_nil(rows)
    assert.matches('pool "mx_basic": division by zero %(SQLSTATE 22012%)', err)
    rows, err = pool:query("selec 1")
    assert.is_nil(rows)
    assert.matches("syntax error", err)
    assert.equal(7, assert(pool:query("select 7 as n"))[1].n) -- the connection goes on serving
    local st = rt:stats().mx_basic
    assert.equal(0, st.waiting)
    assert.is_true(st.total >= 1 and st.total <= 2)
  end)

  it("refuses BEGIN and friends on a shared connection, and keeps exclusive connections for with/transaction", function()
    local pool = rt:pool("mx_tx", { max = 2, multiplex = true })
    for _, sql in ipairs({ "begin", "  START TRANSACTION", "commit", "rollback", "END", "Abort", "savepoint s",
                           "\n(RELEASE s)" }) do
      local rows, err = pool:query(sql)
      assert.is_nil(rows, sql)
      assert.matches("pool:transaction", err)
    end
    for _, sql in ipairs({ "select 1 as ending", "Endx", "(select 1 as beginning)" }) do -- a word's prefix is not the word
      local rows, err = pool:query(sql)
      assert.is_nil(err and err:match("pool:transaction"), sql)
      if sql == "Endx" then
        assert.matches("syntax error", err)
      else
        local _, v = next(rows[1])
        assert.equal(1, v)
      end
    end
    local n = assert(pool:transaction(function(conn)
      assert(conn:query("create temp table mx_tmp (x int)"))
      assert(conn:query("insert into mx_tmp values (1), (2)"))
      return conn:query("select count(*) as n from mx_tmp")[1].n
    end))
    assert.equal(2, n)
    assert.equal(3, pool:with(function(conn) return conn:query("select 3 as n")[1].n end))
  end)

  it("gives a failing statement's error to its caller only: 8 threads on one pipelined connection", function()
    local pool = rt:pool("mx_iso", { max = 1, multiplex = true })
    local res = assert(rt:spawn(8, W, "values", "mx_iso", 300, 7))
    all_match(res, "^ok=258 failed=42$")
    assert.equal(1, rt:stats().mx_iso.connections_created_total) -- one server connection for all of them
    assert(pool:query("select 1"))
  end)

  it("hands many threads x many statements on 4 connections each its own result", function()
    local pool = rt:pool("mx_many", { max = 4, multiplex = true })
    local res = assert(rt:spawn(24, W, "values", "mx_many", 400, 0))
    all_match(res, "^ok=400 failed=0$")
    local st = rt:stats().mx_many
    assert.is_true(st.total <= 4, "total " .. st.total)
    assert(pool:query("select 1"))
    -- The multiplexer's counters: every statement answered once, none left in flight.
    local m = rt:stats().mx_many.multiplex
    assert.same({ statements_total = 24 * 400 + 1, in_flight = 0, rerouted_total = 0, lost_total = 0 },
                { statements_total = m.statements_total, in_flight = m.in_flight, rerouted_total = m.rerouted_total,
                  lost_total = m.lost_total })
    assert.is_true(m.connections >= 1 and m.connections <= 4, "connections " .. m.connections)
    local text = rt:metrics()
    assert.matches('\npoolrt_multiplex_statements_total{pool="mx_many"[^}]*} 9601\n', text)
    assert.matches('\npoolrt_multiplex_in_flight{pool="mx_many"[^}]*} 0\n', text)
    local plain = rt:pool("mx_plain", { max = 1 }) -- a pool without the multiplexer: zeros
    assert(plain:query("select 1"))
    assert.same({ connections = 0, in_flight = 0, statements_total = 0, rerouted_total = 0, lost_total = 0 },
                rt:stats().mx_plain.multiplex)
  end)

  it("gives a connection with no statement for idle_timeout back to the pool at the next reap", function()
    local pool = rt:pool("mx_idle", { max = 2, multiplex = true, idle_timeout = 0.2 })
    assert(pool:query("select 1"))
    assert.equal(1, rt:stats().mx_idle.in_use) -- held by the multiplexer between statements
    rt:reap() -- notes that it has no statement in flight
    H.wait_until(function() rt:reap() return rt:stats().mx_idle.in_use == 0 end, 5, "the connection to go back")
    assert(pool:query("select 2")) -- taken again
    assert.equal(1, rt:stats().mx_idle.in_use)
  end)

  it("keeps each caller's statements in order", function()
    H.admin("create table if not exists mux_order (id bigserial primary key, caller int, seq int)")
    H.admin("truncate mux_order")
    rt:pool("mx_order", { max = 3, multiplex = true })
    assert(rt:spawn(6, W, "ordered", "mx_order", 150))
    local rows = H.admin("select caller, seq from mux_order order by id")
    assert.equal(900, #rows)
    local last = {}
    for _, r in ipairs(rows) do
      assert.equal((last[r.caller] or 0) + 1, r.seq, "caller " .. r.caller)
      last[r.caller] = r.seq
    end
    H.admin("drop table mux_order")
  end)

  it("fails only the statements in flight on a broken connection, with a clear error, and re-routes the rest", function()
    poolrt.set_log_level("off")
    local pool = rt:pool("mx_broken", { max = 2, multiplex = true })
    -- Six callers each start a 1 s statement (spread over both connections), then run 20 short
    -- ones.  rt:spawn blocks this thread, so another process finds a backend running the sleep
    -- and terminates it while the statements are in flight.
    local killer = H.sleep_killer()
    local res = assert(rt:spawn(6, W, "sleeper", "mx_broken", 1.0, 20))
    local out = killer:read("*a")
    killer:close()
    assert.matches("^killed %d+", out)
    local lost, ok = 0, 0
    for i, r in ipairs(res) do
      if r:find("^sleep:ok") then ok = ok + 1
      else
        assert.matches("^sleep:err pool \"mx_broken\": connection lost while the statement was in flight on a " ..
                       "multiplexed connection", r, nil, "thread " .. i)
        lost = lost + 1
      end
      assert.matches("after_failed=0$", r, nil, "thread " .. i) -- the rest were routed to a live connection
    end
    assert.is_true(lost >= 1, "no statement saw the broken connection")
    assert.is_true(ok >= 1, "every statement failed, not only those on the broken connection")
    assert.equal(1, rt:stats().mx_broken.connections_closed_total.broken)
    local m = rt:stats().mx_broken.multiplex
    assert.equal(lost, m.lost_total) -- the sleeps in flight on it, nothing else
    assert.equal(0, m.in_flight)
    assert(pool:query("select 1"))
  end)

  it("times out only its own statement's caller; the rest of the pipeline gets its results", function()
    local pool = rt:pool("mx_timeout", { max = 1, multiplex = true, query_timeout = 1.0 })
    -- Thread 1 sleeps 5 s (times out at 1 s, cancelled: it is the statement the server runs);
    -- threads 2..4 queue 20 short statements each behind it, starting 0.4 s later.
    local res = assert(rt:spawn(4, W, "sleeper", "mx_timeout", 0, 0)) -- warm: the connection exists
    all_match(res, "^sleep:ok after_failed=0$")
    res = assert(rt:spawn(4, "spec.support.mux_workers", "timeout_mix", "mx_timeout"))
    assert.matches("^sleep:err pool \"mx_timeout\": query timed out after 1%.000s", res[1])
    for i = 2, 4 do assert.equal("short:ok", res[i], "thread " .. i) end
    assert.equal(1, rt:stats().mx_timeout.connections_created_total) -- the connection survived
    assert.equal(5, assert(pool:query("select 5 as n"))[1].n)
    assert.equal(0, rt:stats().mx_timeout.multiplex.in_flight) -- the abandoned statement's result came in
  end)
end)

describe("route hook", function()
  local rt, level
  local GOOD = H.write_file([[
return {
  route = function(conns, pool)
    local best = 1
    for i = 2, #conns do if conns[i].id > conns[best].id then best = i end end
    assert(conns[best].in_flight >= 0 and conns[best].endpoint == 1 and conns[best].uses >= 0)
    assert(pool.max >= 1)
    return best
  end,
}
]])
  -- Sane on `poolrt check`'s sample pool, out of range on a live one.
  local BAD = H.write_file([[
return { route = function(conns, pool) if pool.name == "sample" then return 1 end return #conns + 5 end }
]])
  local WORSE = H.write_file("return { route = function(conns) return #conns + 5 end }\n")
  setup(function() level = poolrt.log_level() end)
  teardown(function() poolrt.set_log_level(level) end)

  it("is called for every multiplexed statement with a view per connection", function()
    rt = H.runtime{ policy = GOOD }
    local pool = rt:pool("mx_route", { max = 3, multiplex = true })
    local calls0 = rt:policy_stats().calls.route
    for k = 1, 20 do assert.equal(k, assert(pool:query("select $1::int as k", k))[1].k) end
    assert.is_true(rt:policy_stats().calls.route >= calls0 + 19) -- all but the first, which opens a connection
    assert.equal(0, rt:policy_stats().errors.route)
    rt:close()
  end)

  it("falls back to the fewest-in-flight rule on a bad answer and counts it", function()
    poolrt.set_log_level("off")
    rt = H.runtime{ policy = BAD }
    local pool = rt:pool("mx_route_bad", { max = 2, multiplex = true })
    for k = 1, 10 do assert.equal(k, assert(pool:query("select $1::int as k", k))[1].k) end
    assert.is_true(rt:policy_stats().errors.route >= 9) -- the first statement opens the first connection
    assert.matches("hook route: returned number %d+ %(want an integer index in 1%.%.%d%)", rt:policy_stats().last_error)
    rt:close()
  end)

  it("is dry-run by poolrt check", function()
    local out, rc = H.run("build/poolrt check " .. GOOD)
    assert.equal(0, rc)
    assert.matches("route +[^\n]+%-> number 3", out) -- the sample connection with the largest id
    out, rc = H.run("build/poolrt check " .. WORSE)
    assert.equal(1, rc)
    assert.matches("hook route: returned number 8", out)
  end)
end)
