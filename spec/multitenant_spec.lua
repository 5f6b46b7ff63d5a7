-- Pools by name: admission over max_pools, whole-pool eviction, a global
-- connection cap with overflow policies, bounded background work, metrics.
local poolrt = require "poolrt"
local ffi = require "ffi"
local H = require "spec.helper"

pcall(ffi.cdef, "int setenv(const char *, const char *, int);")

local function backends(app)
  return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = $1", app)[1].n)
end

describe("pools by name", function()
  it("rt:pool is fetch-or-create, atomic across threads", function()
    local rt = H.runtime()
    local res = assert(rt:spawn(8, "spec.support.tenant_workers", "same_pool", "shared"))
    for i = 1, 8 do assert.equal(1, res[i]) end
    assert.equal(8, rt:stats().shared.acquire_total)
    rt:close()
  end)

  it("admits a new pool over max_pools by evicting the least recently used idle one", function()
    local rt = H.runtime{ max_pools = 3 }
    for _, name in ipairs({ "a", "b", "c" }) do assert(rt:pool(name):query("select 1")) end
    assert(rt:pool("a"):query("select 1")) -- a is now the most recent; b the least
    assert(rt:pool("d"):query("select 1"))
    local s = rt:stats()
    assert.is_nil(s.b)
    assert.is_truthy(s.a and s.c and s.d)
    assert.equal(1, rt:runtime_stats().pools_evicted_total.lru)
    -- b's acquire re-admits its pool (evicting c, now the LRU): the same
    -- pool, its counters going on (its first connection closed at eviction)
    assert(rt:pool("b"):query("select 1"))
    assert.equal(2, rt:stats().b.connections_created_total)
    assert.equal(1, rt:stats().b.connections_closed_total.evicted)
    assert.is_nil(rt:stats().c)
    assert.equal(2, rt:runtime_stats().pools_evicted_total.lru)
    rt:close()
  end)

  it("never evicts the default pool, protected or pinned pools, or pools in use", function()
    local rt = H.runtime{ max_pools = 4 }
    assert(rt:pool("default"):query("select 1"))
    assert(rt:pool("prot", { protected = true }):query("select 1"))
    assert(rt:pool("pin", { pinned = true }):query("select 1"))
    local held = assert(rt:pool("busy"):acquire())
    local p, err = pcall(rt.pool, rt, "new")
    assert.is_false(p)
    assert.matches('pool "new": max_pools=4 reached; no idle pool to evict', err, 1, true)
    held:release()
    assert(rt:pool("new"):query("select 1")) -- now busy is idle and the LRU unprotected pool
    assert.is_nil(rt:stats().busy)
    rt:close()
  end)

  it("admits over the cap with pools_overflow = \"allow\", and counts it", function()
    local rt = H.runtime{ max_pools = 1, pools_overflow = "allow" }
    local held = assert(rt:pool("one"):acquire())
    assert(rt:pool("two"):query("select 1"))
    assert.equal(1, rt:runtime_stats().pools_over_cap_total)
    assert.equal(2, rt:runtime_stats().pools)
    held:release()
    rt:close()
  end)

  it("rt:evict closes idle connections at once and in-use ones on release", function()
    local rt = H.runtime()
    local app = "mt_evict"
    local pool = rt:pool("ev", { max = 3, conninfo = H.conninfo .. " application_name=" .. app })
    local a, b, c = assert(pool:acquire()), assert(pool:acquire()), assert(pool:acquire())
    b:release() c:release()
    assert(rt:evict("ev"))
    assert.is_nil(rt:stats().ev)
    H.wait_until(function() return backends(app) == 1 end, 5, "idle backends to close")
    assert(a:query("select 1")) -- the caller's connection keeps working until released
    a:release()
    H.wait_until(function() return backends(app) == 0 end, 5, "the in-use backend to close")
    local again = rt:pool("ev", { max = 3 })
    assert(again:query("select 1"))
    assert.equal(1, rt:stats().ev.connections_created_total)
    local ok, err = rt:evict("nope")
    assert.is_nil(ok)
    assert.equal('pool "nope": no such pool', err)
    rt:close()
  end)

  it("the reap cycle evicts pools idle past pool_idle_timeout, skipping protected ones, and calls on_evict", function()
    local policy = H.write_file("return { on_evict = function(name, reason) local x = name .. reason end }\n")
    local rt = H.runtime{ pool_idle_timeout = 0.05, policy = policy }
    assert(rt:pool("old"):query("select 1"))
    assert(rt:pool("kept", { protected = true }):query("select 1"))
    local held = assert(rt:pool("inuse"):acquire())
    H.wait_until(function()
      local _, pools = rt:reap()
      return rt:stats().old == nil and pools >= 0
    end, 5, "the idle pool to be evicted")
    local s = rt:stats()
    assert.is_truthy(s.kept and s.inuse)
    assert.equal(1, rt:runtime_stats().pools_evicted_total.idle)
    assert.equal(1, rt:policy_stats().calls.on_evict)
    held:release()
    rt:close()
  end)

  it("tenant_reaper.lua: 200 tenants against a cap of 20, LRU eviction, protection, never a pool in use", function()
    ffi.C.setenv("POOLRT_POOL_IDLE_TIMEOUT", "3600", 1)
    local rt = H.runtime{ max_pools = 20, policy = poolrt.policy_file("tenant_reaper") }
    assert(rt:pool("default"):query("select 1"))
    assert(rt:pool("vip", { pinned = true }):query("select 1"))
    local held = {}
    for t = 1, 200 do
      local name = ("tenant_%03d"):format(t)
      local pool = rt:pool(name, { max = 1, idle_timeout = 0.001 })
      if t % 50 == 0 then
        held[name] = assert(pool:acquire()) -- in use: must survive everything below
      else
        assert(pool:query("select 1"))
      end
      assert.is_true(rt:runtime_stats().pools <= 20)
    end
    local s = rt:stats()
    assert.is_truthy(s.default and s.vip)
    for name, conn in pairs(held) do
      assert.is_truthy(s[name], name .. " was evicted while in use")
      assert(conn:query("select 1"))
    end
    -- the survivors besides protected ones are the most recently used tenants
    for t = 1, 180 do
      local name = ("tenant_%03d"):format(t)
      if not held[name] then assert.is_nil(s[name], name .. " should have been evicted (LRU)") end
    end
    assert.is_truthy(s.tenant_199 and s.tenant_198)
    assert.is_true(rt:runtime_stats().pools_evicted_total.lru >= 180 - 4)
    for _, conn in pairs(held) do conn:release() end
    rt:close()
  end)
end)

describe("global max_connections", function()
  local function setup_cap(overflow)
    local path = H.write_file(("return { overflow = %q }\n"):format(overflow))
    local rt = H.runtime{ max_connections = 4, policy = path }
    local a, b = rt:pool("a", { max = 4 }), rt:pool("b", { max = 4, acquire_timeout = 0.3 })
    local conns = {}
    for i = 1, 4 do conns[i] = assert(a:acquire()) end
    return rt, a, b, conns
  end

  it("wait: a pool below its max waits for a global slot, and gets one when another pool's closes", function()
    local rt, _, b, conns = setup_cap("wait")
    local c, err = b:acquire()
    assert.is_nil(c)
    assert.matches('^pool "b": acquire timed out after 0%.3', err)
    for i = 1, 4 do conns[i]:release() end
    local res = assert(rt:spawn(2, "spec.support.tenant_workers", "global_wait"))
    assert.equal("got", res[1])
    assert.equal(4, rt:runtime_stats().max_connections)
    assert.is_true(rt:runtime_stats().connections <= 4)
    rt:close()
  end)

  it("fail: refuses at once, naming the global cap", function()
    local rt, _, b, conns = setup_cap("fail")
    local t0 = poolrt.now()
    local c, err = b:acquire()
    assert.is_nil(c)
    assert.is_true(poolrt.now() - t0 < 0.2)
    assert.equal('pool "b": max_connections=4 reached across pools and the overflow policy says fail (max=4 in_use=0 idle=0 waiting=0)', err)
    for i = 1, 4 do conns[i]:release() end
    rt:close()
  end)

  it("evict_idle: closes another pool's least recently used idle connection to open one", function()
    local rt, _, b, conns = setup_cap("evict_idle")
    conns[1]:release()
    conns[2]:release()
    local c = assert(b:acquire())
    local s = rt:stats()
    assert.equal(1, s.a.connections_closed_total.evicted)
    assert.equal(3, s.a.total)
    assert.equal(4, rt:runtime_stats().connections)
    c:release()
    for i = 3, 4 do conns[i]:release() end
    rt:close()
  end)

  it("grow: a full pool opens past its own max up to the global cap", function()
    local path = H.write_file("return { overflow = 'grow' }\n")
    local rt = H.runtime{ max_connections = 3, policy = path }
    local p = rt:pool("g", { max = 1, acquire_timeout = 0.2 })
    local x, y, z = assert(p:acquire(5)), assert(p:acquire(5)), assert(p:acquire(5)) -- connects may be slow
    local w, err = p:acquire()
    assert.is_nil(w)
    assert.matches("acquire timed out", err)
    assert.equal(2, rt:stats().g.grown_total)
    x:release() y:release() z:release()
    assert.equal(1, rt:stats().g.total)
    rt:close()
  end)
end)

describe("rt:run_limited", function()
  it("skips without a connection, holds at most the concurrency limit, and never starves foreground queries", function()
    local rt = H.runtime{ policy = poolrt.policy_file("background_share") }
    rt:pool("work", { max = 10, acquire_timeout = 1 })
    local jobs = {}
    for k = 1, 60 do jobs[k] = k end
    local n = 6
    local res = assert(rt:spawn(n, "spec.support.tenant_workers", "background", n, jobs))
    local batch = res[1]
    assert.equal(60, batch.total)
    assert.equal(30, batch.skipped)
    assert.equal(30, batch.ran)
    assert.equal(0, batch.failed)
    assert.is_true(res[n].peak <= 5, "background jobs active at once: " .. res[n].peak)
    assert.is_true(res[n].peak >= 2, "the batch never ran in parallel: " .. res[n].peak)
    for i = 2, n - 1 do
      assert.same({}, res[i].failures)
      assert.is_true(res[i].queries > 0)
    end
    assert.equal(0, rt:stats().work.acquire_timeouts_total)
    rt:close()
  end)

  it("counts failing jobs and takes functions without upvalues", function()
    local rt = H.runtime()
    rt:pool("jobs", { max = 4 })
    local res = rt:run_limited({ 1, 2, 3, 4 }, { pool = "jobs", limit = 2, fn = function(conn, job)
      if job == 3 then error("job three broke") end
      return conn:query("select $1::int as v", job)
    end })
    assert.equal(3, res.ran)
    assert.equal(1, res.failed)
    assert.matches("job three broke", res.errors[1])
    local captured = 1
    assert.has_error(function()
      rt:run_limited({ 1 }, { pool = "jobs", fn = function() return captured end })
    end)
    rt:close()
  end)
end)

describe("metrics", function()
  it("rt:metrics() exposes per-pool series in Prometheus text format", function()
    local rt = H.runtime()
    assert(rt:pool("m1"):query("select 1"))
    local text = rt:metrics()
    assert.matches('\npoolrt_cl_active{pool="m1"} 0\n', text, 1, true)
    assert.matches('\npoolrt_sv_idle{pool="m1"} 1\n', text, 1, true)
    assert.matches('\npoolrt_acquire_total{pool="m1"} 1\n', text, 1, true)
    assert.matches('poolrt_acquire_wait_seconds_bucket{pool="m1",le="+Inf"} 1\n', text, 1, true)
    assert.matches('poolrt_connections_closed_total{pool="m1",reason="idle"} 0\n', text, 1, true)
    assert.matches('poolrt_policy_reloads_total{result="failed"} 0\n', text, 1, true)
    assert.matches("# TYPE poolrt_acquire_wait_seconds histogram\n", text, 1, true)
    rt:close()
  end)

  it("poolrt --metrics serves them over HTTP while examples/multitenant.lua runs", function()
    local port = H.free_port()
    local out = H.tmpname()
    os.execute(("build/poolrt --metrics 127.0.0.1:%d examples/multitenant.lua 3 > %s 2>&1 &"):format(port, out))
    local body = H.wait_until(function()
      local text = H.run(("curl -sf http://127.0.0.1:%d/metrics"):format(port))
      return text:find('poolrt_sv_active{pool="tenant_', 1, true) and text
    end, 10, "the metrics endpoint")
    assert.matches('poolrt_pool_max{pool="default"} ', body, 1, true)
    assert.matches("poolrt_policy_generation 1", body, 1, true)
    local nf = H.run(("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/nope"):format(port))
    assert.equal("404", nf)
    H.wait_file(out, "multitenant demo done", 20, "the example to finish")
  end)
end)

describe("tenant_reaper.lua reads the runtime's limits", function()
  pcall(ffi.cdef, "int unsetenv(const char *);")
  local function no_env()
    ffi.C.unsetenv("POOLRT_MAX_POOLS")
    ffi.C.unsetenv("POOLRT_POOL_IDLE_TIMEOUT")
  end

  it("max_pools = 5 with 20 tenants keeps at most 5 pools live, with no environment variable set", function()
    no_env()
    local rt = H.runtime{ policy = poolrt.policy_file("tenant_reaper"), max_pools = 5 }
    for t = 1, 20 do
      assert(rt:pool(("t%02d"):format(t), { max = 1 }):query("select 1"))
      assert.is_true(rt:runtime_stats().pools <= 5)
    end
    rt:reap()
    local rs = rt:runtime_stats()
    assert.equal(5, rs.pools)
    assert.equal(15, rs.pools_evicted_total.lru)
    assert.equal(0, rs.pools_over_cap_total)
    rt:close()
  end)

  it("with the runtime's max_pools = 100, admitted pools are not evicted in the next cycle", function()
    no_env()
    local rt = H.runtime{ policy = poolrt.policy_file("tenant_reaper") }
    for t = 1, 30 do assert(rt:pool(("t%02d"):format(t), { max = 1 }):query("select 1")) end
    local _, evicted = rt:reap()
    assert.equal(0, evicted)
    for t = 1, 30 do assert(rt:pool(("t%02d"):format(t)):query("select 1")) end
    local s = rt:stats()
    for t = 1, 30 do assert.equal(1, s[("t%02d"):format(t)].connections_created_total) end -- never recreated
    assert.equal(30, rt:runtime_stats().pools)
    rt:close()
  end)
end)

describe("tenant churn", function()
  -- Resident memory of this process in bytes (/proc/self/statm, field 2).
  local function rss()
    local f = assert(io.open("/proc/self/statm"))
    local pages = tonumber(f:read("*a"):match("^%d+%s+(%d+)"))
    f:close()
    return pages * 4096
  end

  local function settle()
    collectgarbage()
    collectgarbage()
  end

  it("5,000 tenants through max_pools = 20 leave memory flat: evicted pools are freed", function()
    settle()
    local rt = H.runtime{ max_pools = 20 }
    local base = rt:runtime_stats().pools_allocated -- other specs' pools, not yet collected
    local n = 0
    local function churn(upto)
      while n < upto do
        n = n + 1
        rt:pool("churn_" .. n) -- admission evicts the least recently used; no connection is opened
        -- a full collection now and then, so RSS shows what is kept rather
        -- than how far the collector let garbage pile up
        if n % 250 == 0 then settle() end
      end
      settle()
      return rss(), rt:runtime_stats().pools_allocated - base
    end
    local rss_1k, live_1k = churn(1000)
    local rss_5k, live_5k = churn(5000)
    local s = rt:runtime_stats()
    assert.equal(20, s.pools)
    assert.equal(4980, s.pools_evicted_total.lru)
    -- Pool structs alive: the 20 live ones, plus evicted ones the handle
    -- cache has not swept yet (it sweeps when it doubles: at most 2 * 20
    -- entries, and at least 32).  Before the sweep every one stayed: 5,000.
    assert.is_true(live_1k >= 20 and live_1k <= 40, "pool structs alive after 1,000 tenants: " .. live_1k)
    assert.is_true(live_5k >= 20 and live_5k <= 40, "pool structs alive after 5,000 tenants: " .. live_5k)
    -- RSS from 1,000 to 5,000 tenants: measured +0.0 MB; +5.8 MB (1.4 KB
    -- per evicted pool) when cached handles kept evicted pools alive.
    -- Not under AddressSanitizer (make sanitize): it quarantines freed
    -- memory (up to 256 MB) to catch use after free, so RSS grows there by
    -- design; the count of live pool structs above still holds.
    local grown = rss_5k - rss_1k
    if not os.getenv("ASAN_OPTIONS") then
      assert.is_true(grown < 1.5e6, ("RSS grew %.2f MB from 1,000 to 5,000 tenants"):format(grown / 1e6))
    end
    rt:close()
  end)

  it("a handle held across its pool's eviction is not pinned by the cache, and comes back with its settings", function()
    local rt = H.runtime{ max_pools = 2 }
    local held = rt:pool("held", { null = poolrt.null, prepare = false })
    for i = 1, 100 do rt:pool("other_" .. i) end
    assert.is_nil(rt:stats().held)
    assert.is_nil(rt._pools.held, "the cache still holds the evicted pool")
    local rows = assert(held:query("select null::int as v"))
    assert.equal(poolrt.null, rows[1].v) -- the Lua-side option survived
    assert.equal(0, rt:stats().held.connections_created_total - 1)
    assert.equal(held, rt:pool("held"), "the recreated pool's handle is cached again")
    rt:close()
  end)
end)
