-- A budget shared by runtimes (src/shared_budget.c).  Here two runtimes of
-- one process stand in for two nginx workers: the budget's rules are the
-- same whichever process a member lives in (spec/nginx_budget_spec.lua runs
-- them across real nginx workers, with a worker killed).
local poolrt = require "poolrt"
local H = require "spec.helper"

describe("shared budget", function()
  local b, a, c

  before_each(function()
    b = poolrt.shared_budget(2)
    a = H.runtime{ shared_budget = b }
    c = H.runtime{ shared_budget = b }
  end)

  after_each(function()
    a:close()
    c:close()
  end)

  it("caps the members' connections together, each pool keeping its own max", function()
    local pa = a:pool("app", { max = 5, acquire_timeout = 0.3 })
    local pc = c:pool("app", { max = 5, acquire_timeout = 0.3 })
    local x, y = assert(pa:acquire()), assert(pc:acquire())
    local z, err = pc:acquire()
    assert.is_nil(z)
    assert.matches("acquire timed out", err)
    -- The timed-out caller no longer counts as waiting once c's budget thread looked again.
    H.wait_until(function() return b:stats().waiting == 0 end, 2, "the waiting count to drop")
    local s = b:stats()
    assert.same({ 2, 2, 2 }, { s.max, s.used, s.members })
    assert.equal(1, a:runtime_stats().shared_budget.held)
    assert.equal(1, c:runtime_stats().shared_budget.held)
    x:release() y:release()
    assert.equal(2, b:stats().used) -- idle connections keep their units
  end)

  it("moves a unit to a member that waits: the holder closes its least recently used idle connection", function()
    local pa = a:pool("app", { max = 5 })
    local pc = c:pool("app", { max = 5, acquire_timeout = 3 })
    local x, y = assert(pa:acquire()), assert(pa:acquire())
    x:release() y:release()
    assert.equal(2, a:stats().app.idle)
    local t0 = poolrt.now()
    local got = {}
    for i = 1, 2 do got[i] = assert(pc:acquire()) end
    assert.is_true(poolrt.now() - t0 < 1.5, "the waiter was served promptly")
    assert.equal(0, a:stats().app.total)
    assert.equal(2, a:stats().app.connections_closed_total.evicted)
    local sa, sc = a:runtime_stats().shared_budget, c:runtime_stats().shared_budget
    assert.equal(2, sa.given_total)
    assert.is_true(sc.asked_total >= 1)
    assert.same({ 0, 2 }, { sa.held, sc.held })
    assert.equal(2, b:stats().evictions_given_total)
    for _, conn in ipairs(got) do conn:release() end
  end)

  it("gives a member's units back when its runtime closes", function()
    local pc = c:pool("app", { max = 5 })
    assert(pc:query("select 1"))
    assert.equal(1, b:stats().used)
    c:close()
    assert.same({ 0, 1 }, { b:stats().used, b:stats().members })
  end)

  it("shows up in the runtime's metrics", function()
    assert(a:pool("app", { max = 5 }):query("select 1"))
    local m = a:metrics()
    assert.matches("\npoolrt_shared_budget_max 2\n", m, 1, true)
    assert.matches("\npoolrt_shared_budget_used 1\n", m, 1, true)
    assert.matches("\npoolrt_shared_budget_held 1\n", m, 1, true)
    local lint, rc = require("spec.support.promtool").check(m)
    assert.equal("", lint)
    assert.equal(0, rc)
  end)
end)
