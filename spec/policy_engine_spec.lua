-- The policy engine end to end: hooks decide for real pools on the real
-- server, and no policy -- broken, slow, or malicious -- stops a pool from
-- serving.
local poolrt = require "poolrt"
local ffi = require "ffi"
local H = require "spec.helper"

pcall(ffi.cdef, "int setenv(const char *, const char *, int); int unsetenv(const char *);")

-- Holds n connections of pool at once and gives them back in that order,
-- so the idle list is (oldest-released first) ids in acquire order.
local function cycle(pool, n)
  local conns, ids = {}, {}
  for i = 1, n do conns[i] = assert(pool:acquire()); ids[i] = conns[i].id end
  for i = 1, n do conns[i]:release() end
  return ids
end

local function next_id(pool)
  local c = assert(pool:acquire())
  local id = c.id
  c:release()
  return id
end

local LRU_FN = H.write_file([[
-- least recently released first, as a Lua function
return {
  pick = function(idle, pool)
    local best = 1
    for i = 2, pool.idle do
      if idle[i].returned_at < idle[best].returned_at then best = i end
    end
    return best
  end,
}
]])

describe("policy hooks", function()
  it("a ten-line Lua pick decides which connection is handed out, and is counted", function()
    local rt = H.runtime{ policy = LRU_FN }
    local pool = rt:pool("lru_fn", { max = 3 })
    local ids = cycle(pool, 3)
    local calls0 = rt:stats().lru_fn.policy_calls_total
    -- LRU: the connection released first comes back first, then the next
    assert.equal(ids[1], next_id(pool))
    assert.equal(ids[2], next_id(pool))
    assert.is_true(rt:stats().lru_fn.policy_calls_total >= calls0 + 2)
    assert.equal(0, rt:stats().lru_fn.policy_errors_total)
    rt:close()
  end)

  it("the built-in default is mru", function()
    local rt = H.runtime()
    local pool = rt:pool("mru", { max = 3 })
    local ids = cycle(pool, 3)
    assert.equal(ids[3], next_id(pool))
    assert.equal(ids[3], next_id(pool))
    rt:close()
  end)

  it("shipped lru.lua and random.lua use the C built-ins", function()
    local rt = H.runtime{ policy = poolrt.policy_file("lru") }
    local pool = rt:pool("lru", { max = 3 })
    local ids = cycle(pool, 3)
    assert.equal(ids[1], next_id(pool))
    assert.equal(0, rt:policy_stats().calls.pick) -- built-ins never enter Lua
    rt:close()
    local rr = H.runtime{ policy = poolrt.policy_file("random") }
    local rp = rr:pool("random", { max = 4 })
    cycle(rp, 4)
    local seen = {}
    for _ = 1, 200 do seen[next_id(rp)] = true end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.is_true(n >= 3)
    rr:close()
  end)

  it("size: clamp.lua applies GitLab's rule to live pools", function()
    ffi.C.setenv("POOLRT_POOL_HEADROOM", "2", 1)
    local rt = H.runtime{ policy = poolrt.policy_file("clamp") }
    local small = rt:pool("small", { max = 1, threads = 3 }) -- MIN = 3 + 2 = 5 > configured 1
    local big = rt:pool("big", { max = 50, threads = 3 })    -- MAX 20 caps configured 50
    assert.equal(5, rt:stats().small.max)
    assert.equal(20, rt:stats().big.max)
    local conns = {}
    for i = 1, 5 do conns[i] = assert(small:acquire(1)) end -- five at once although configured 1
    for i = 1, 5 do conns[i]:release() end
    ffi.C.unsetenv("POOLRT_POOL_HEADROOM")
    assert.is_truthy(big)
    rt:close()
  end)

  it("overflow: 'fail' fails fast with the pool's state, 'grow' opens past max and closes it on release", function()
    local path = H.write_file([[
      return { overflow = function(pool, req) return pool.name == "growy" and "grow" or "fail" end }
    ]])
    local rt = H.runtime{ policy = path }
    local pool = rt:pool("failfast", { max = 1, acquire_timeout = 5 })
    local held = assert(pool:acquire())
    local t0 = poolrt.now()
    local c, err = pool:acquire()
    assert.is_nil(c)
    assert.is_true(poolrt.now() - t0 < 1)
    assert.equal('pool "failfast": pool is full and the overflow policy says fail (max=1 in_use=1 idle=0 waiting=0)', err)
    held:release()

    local g = rt:pool("growy", { max = 1 })
    local a, b = assert(g:acquire()), assert(g:acquire())
    local s = rt:stats().growy
    assert.equal(2, s.in_use)
    assert.equal(1, s.grown_total)
    b:release()
    a:release()
    s = rt:stats().growy
    assert.equal(1, s.total)
    assert.equal(1, s.connections_closed_total.shrink)
    rt:close()
  end)

  it("reap: the hook chooses which idle connections close", function()
    local path = H.write_file([[
      -- close every idle connection that has served more than once
      return { reap = function(idle, pool, now)
        local out = {}
        for i = 1, pool.idle do if idle[i].uses > 1 then out[#out + 1] = i end end
        return out
      end }
    ]])
    local rt = H.runtime{ policy = path }
    local pool = rt:pool("reapy", { max = 3 })
    local ids = cycle(pool, 3)
    local again = assert(pool:acquire()) -- the mru one, now used twice
    again:release()
    assert.equal(1, rt:reap())
    local s = rt:stats().reapy
    assert.equal(2, s.idle)
    assert.equal(1, s.connections_closed_total.idle)
    assert.is_truthy(ids)
    rt:close()
  end)

  it("concurrency: background_share.lua and the default follow coder's rule", function()
    local rt = H.runtime{ policy = poolrt.policy_file("background_share") }
    assert.equal(5, rt:pool("c10", { max = 10 }):concurrency())
    assert.equal(2, rt:pool("c4", { max = 4 }):concurrency())
    assert.equal(1, rt:pool("c1", { max = 1 }):concurrency())
    rt:close()
    local d = H.runtime()
    assert.equal(5, d:pool("d30", { max = 30 }):concurrency())
    d:close()
  end)
end)

describe("a broken policy never stops a pool from serving", function()
  local BAD = H.write_file([[
    -- misbehaves only for some pools, so it passes its dry run
    local function runaway() local n = 0 while true do n = n + 1 end end
    return {
      pick = function(idle, pool)
        local name = pool.name
        if name == "raises" then error("boom") end
        if name == "garbage" then return 99 end
        if name == "nonnumber" then return "first" end
        if name == "loops" then runaway() end
        if name == "oob" then return idle[1e9].id end        -- reads outside the views
        if name == "oobneg" then return idle[-5].id end
        if name == "writes" then idle[1] = 5 end
        if name == "len" then return #idle end
        local best = 1
        for i = 2, pool.idle do if idle[i].returned_at > idle[best].returned_at then best = i end end
        return best
      end,
    }
  ]])

  local rt, level
  setup(function()
    rt = H.runtime{ policy = BAD, hook_steps = 1000000 }
    level = poolrt.log_level()
    poolrt.set_log_level("off") -- these specs provoke hook errors on purpose
  end)
  teardown(function() rt:close() poolrt.set_log_level(level) end)

  for _, case in ipairs({ { "raises", "boom" }, { "garbage", "returned number 99 %(want an integer index in 1%.%.3%)" },
                          { "nonnumber", "returned string first" }, { "oob", "idle%[1000000000%]: index out of range 1%.%.3" },
                          { "oobneg", "out of range" }, { "writes", "read%-only" } }) do
    it("falls back to the built-in pick when the hook " .. case[1], function()
      local pool = rt:pool(case[1], { max = 3 })
      local ids = cycle(pool, 3)
      local errs0 = rt:policy_stats().errors.pick
      assert.equal(ids[3], next_id(pool)) -- mru, the built-in default
      assert.equal(errs0 + 1, rt:policy_stats().errors.pick)
      assert.equal(0, rt:stats()[case[1]].in_use)
      assert.matches(":%d+: hook pick: .*" .. case[2], rt:policy_stats().last_error)
    end)
  end

  it("lets hooks use #idle", function()
    local pool = rt:pool("len", { max = 3 })
    local ids = cycle(pool, 3)
    local errs0 = rt:policy_stats().errors.pick
    assert.equal(ids[3], next_id(pool)) -- #idle == 3: the last one
    assert.equal(errs0, rt:policy_stats().errors.pick)
  end)

  it("stops an endless loop in a hook even after the JIT compiled it", function()
    local warm = rt:pool("warm", { max = 3 })
    cycle(warm, 3)
    for _ = 1, 2000 do next_id(warm) end -- the hook and its loop are hot and compiled
    local pool = rt:pool("loops", { max = 3 })
    cycle(pool, 3)
    local errs0 = rt:policy_stats().errors.pick
    local t0 = poolrt.now()
    for _ = 1, 5 do assert.is_number(next_id(pool)) end -- the runaway loop is compiled by now too
    local took = poolrt.now() - t0
    assert.equal(errs0 + 5, rt:policy_stats().errors.pick)
    assert.is_true(took < 2.0, "five runaway picks took " .. took .. "s")
    assert.matches(":2: hook exceeded its step budget %(an endless loop%?%)", rt:policy_stats().last_error)
  end)

  it("refuses a policy with a syntax error, naming file and line", function()
    local path = H.write_file("return {\n  pick = function(idle, pool)\n    return 1 +\n  end,\n}\n")
    local ok, err = pcall(poolrt.runtime, { policy = path, reap_interval = 0 })
    assert.is_false(ok)
    assert.matches(path:gsub("%p", "%%%0") .. ":4: unexpected symbol near 'end'", err)
  end)

  it("refuses a policy whose hook fails its dry run, and keeps the live one on reload", function()
    local path = H.write_file("return { size = function(pool) return 0 end }\n")
    local gen = rt:policy_stats().generation
    local ok, err = rt:reload(path)
    assert.is_nil(ok)
    assert.matches(":1: hook size: returned number 0 %(want max: an integer in 1%.%.100000%)", err)
    assert.equal(gen, rt:policy_stats().generation)
    assert.equal(1, rt:policy_stats().reloads.failed)
    assert.is_number(next_id(rt:pool("raises"))) -- still served by the old policy
  end)

  it("keeps hooks away from io, os.execute, require and globals", function()
    for src, want in pairs({
      ["local f = io.open('/etc/passwd') return {}"] = "'io' is not available in policies",
      ["os.execute('true') return {}"] = "attempt to call field 'execute'",
      ["local m = require('ffi') return {}"] = "'require' is not available in policies",
      ["return { size = function(p) counter = 1 return 5 end }"] = "policy hooks may not set globals",
      ["return { pik = 'mru' }"] = "unknown hook 'pik'",
      ["return { pick = 'fastest' }"] = 'hook pick = "fastest" is not a built-in',
    }) do
      local ok, err = rt:reload(H.write_file(src))
      assert.is_nil(ok)
      assert.matches(want, err, 1, true)
    end
  end)
end)

describe("rt:reload", function()
  it("switching pick from mru to lru changes which connections are handed out", function()
    local mru = H.write_file("return { pick = 'mru' }")
    local lru = H.write_file("return { pick = 'lru' }")
    local rt = H.runtime{ policy = mru }
    local pool = rt:pool("switch", { max = 3 })
    local ids = cycle(pool, 3)
    assert.equal(ids[3], next_id(pool))
    assert.is_true(rt:reload(lru))
    assert.equal(ids[1], next_id(pool))
    local ps = rt:policy_stats()
    assert.equal(2, ps.generation)
    assert.equal(1, ps.reloads.ok)
    rt:close()
  end)

  it("applies a new size to live pools: shrinking closes idle connections above the new max", function()
    local big = H.write_file("return { size = function(pool) return 6 end }")
    local small = H.write_file("return { size = function(pool) return 2 end }")
    local rt = H.runtime{ policy = big }
    local pool = rt:pool("resize", { max = 10 })
    assert.equal(6, rt:stats().resize.max)
    cycle(pool, 6)
    assert.is_true(rt:reload(small))
    local s = rt:stats().resize
    assert.equal(2, s.max)
    assert.equal(2, s.total)
    assert.equal(4, s.connections_closed_total.shrink)
    rt:close()
  end)
end)

describe("poolrt check and --policy", function()
  it("prints what each hook returned and exits 0 for a good policy", function()
    local out, rc = H.run("build/poolrt check policies/clamp.lua")
    assert.equal(0, rc)
    assert.matches("^policies/clamp.lua: ok\n", out)
    assert.matches("size +policies/clamp.lua:%d+ +%-> number %d+, number %d+", out)
    assert.matches("pick +%(built%-in default%)", out)
  end)

  it("exits 1 with file:line for a broken one", function()
    local path = H.write_file("return {\n  pick = function(idle, pool) return nil + 1 end,\n}\n")
    local out, rc = H.run("build/poolrt check " .. path)
    assert.equal(1, rc)
    assert.matches(path:gsub("%p", "%%%0") .. ":2: attempt to perform arithmetic on a nil value", out)
  end)

  it("runs an app under a policy given with --policy", function()
    local app = H.write_file([[
      local rt = require("poolrt").runtime{}
      local pool = rt:pool("app", { max = 2 })
      for _ = 1, 5 do assert(pool:query("select 1")) end
      print(rt:stats().app.policy_calls_total)
    ]])
    local out, rc = H.run("build/poolrt --policy " .. LRU_FN .. " " .. app)
    assert.equal(0, rc)
    assert.is_true(tonumber(out) >= 4, out)
  end)
end)

describe("what hooks see", function()
  it("pool views carry the runtime's limits, evictable (lists only) and configured (nil without a max)", function()
    -- Each hook answers one thing only when its views say what this spec
    -- expects, so a wrong view shows up as a wrong size or a refused pool.
    local path = H.write_file([[
      local function limits_ok(v)
        return v.max_pools == 2 and v.max_connections == 50 and v.pool_idle_timeout == 600
      end
      return {
        size = function(pool)
          if not (limits_ok(pool) and pool.evictable == nil) then return 1 end
          if pool.configured == nil then return 3 end
          return pool.configured + 1
        end,
        admit = function(pools, name)
          local ok = limits_ok(pools) and #pools == 2
          for _, p in ipairs(pools) do
            ok = ok and limits_ok(p) and type(p.evictable) == "boolean" and type(p.protected) == "boolean"
                    and p.evictable == (p.name == "idle") and p.protected == (p.name == "prot")
                    and p.configured == (p.name == "prot" and 4 or nil)
          end
          return ok and "allow" or "fail"
        end,
      }
    ]])
    local rt = H.runtime{ policy = path, max_pools = 2, max_connections = 50, pool_idle_timeout = 600 }
    local prot = rt:pool("prot", { max = 4, protected = true })
    assert.equal(5, rt:stats().prot.max)                  -- configured 4, seen by size
    local idle = rt:pool("idle", { max = 0 })            -- max = 0: not configured
    assert.equal(3, rt:stats().idle.max)                 -- size's "nothing configured" branch
    assert(idle:query("select 1"))
    assert(rt:pool("third", { max = 0 }):query("select 1")) -- admit saw both views as expected
    assert.equal(1, rt:runtime_stats().pools_over_cap_total)
    assert.equal(0, rt:policy_stats().errors_total)
    assert.is_truthy(prot)
    rt:close()
  end)

  it("clamp.lua sizes a pool with no configured max by threads + headroom", function()
    local rt = H.runtime{ policy = poolrt.policy_file("clamp") }
    assert.equal(13, rt:pool("unset", { max = 0, threads = 3 }):stats().max) -- 3 + 10, under MAX 20
    assert.equal(13, rt:pool("small", { max = 2, threads = 3 }):stats().max) -- raised to MIN
    assert.equal(16, rt:pool("mid", { max = 16, threads = 3 }):stats().max) -- configured wins
    rt:close()
  end)

  it("a pool created with no max is 10 without a size hook", function()
    local rt = H.runtime()
    assert.equal(10, rt:pool("unset", { max = 0 }):stats().max)
    assert.equal(10, rt:pool("none"):stats().max)
    rt:close()
  end)
end)

describe("policies/default.lua", function()
  -- One scripted run of every hook's situation; what can be observed
  -- afterwards must not depend on whether default.lua or nothing is loaded.
  local function scenario(policy)
    local rt = H.runtime{ policy = policy, max_pools = 4, pool_idle_timeout = 0.3 }
    local seen = {}
    local a = rt:pool("a", { max = 3, min_idle = 1 })
    cycle(a, 3)
    seen.pick = { next_id(a), next_id(a) }                             -- pick
    local held = { assert(a:acquire()), assert(a:acquire()), assert(a:acquire()) }
    local t0 = poolrt.now()
    local c, err = a:acquire(0.1)                                        -- overflow: waits, then fails
    seen.overflow = { c == nil, poolrt.now() - t0 >= 0.1, (err:gsub("[%d.]+s", "Ts")) }
    for _, h in ipairs(held) do h:release() end
    seen.concurrency = { a:concurrency(), rt:pool("big", { max = 30 }):concurrency() }
    assert(rt:pool("prot", { protected = true }):query("select 1"))
    assert(rt:pool("b"):query("select 1"))
    assert(rt:pool("big"):query("select 1"))
    assert(a:query("select 1"))
    assert(rt:pool("d"):query("select 1"))                             -- admit: b (LRU) goes
    seen.after_admit = {}
    for name in pairs(rt:stats()) do seen.after_admit[#seen.after_admit + 1] = name end
    table.sort(seen.after_admit)
    local last = poolrt.now()
    H.wait_until(function() return poolrt.now() - last > 0.35 end, 2, "pools to be idle for pool_idle_timeout")
    local closed, evicted = rt:reap()                                    -- evict (and reap)
    seen.reap = { closed, evicted }
    seen.stats = {}
    for name, s in pairs(rt:stats()) do
      seen.stats[name] = { s.max, s.min_idle, s.total, s.idle, s.acquire_total, s.acquire_timeouts_total,
                           s.connections_created_total, s.grown_total, s.connections_closed_total }
    end
    seen.evicted = rt:runtime_stats().pools_evicted_total
    rt:close()
    return seen
  end

  it("behaves exactly like no policy at all", function()
    local none = scenario(nil)
    local default = scenario(poolrt.policy_file("default"))
    assert.same(none, default)
    -- and the scenario exercised what it claims to
    assert.same({ "a", "big", "d", "prot" }, none.after_admit)
    assert.same({ manual = 0, lru = 1, idle = 3 }, none.evicted)
    assert.same({ "prot" }, (function() local t = {} for n in pairs(none.stats) do t[#t + 1] = n end return t end)())
    assert.same({ 1, 5 }, none.concurrency)
    assert.is_true(none.overflow[1] and none.overflow[2])
  end)
end)
