-- Specs for the policy files in policies/.  Each file is loaded by the very
-- loader production uses (src/policy_boot.lua: instrumented for the step
-- budget, run in the sandbox, globals frozen afterwards), with env(name)
-- answered from a table the spec controls.  Views are plain tables here (FFI
-- structs in production, whose accessors give booleans, nil for an
-- unconfigured max, and the runtime's limits on every view and pool list).
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)spec/[^/]*$") or "")
local B = dofile(ROOT .. "src/policy_boot.lua") -- compiled into libpoolrt, not a module
local DIR = ROOT .. "policies/"

local function load_policy(file, vars)
  vars = vars or {}
  local path = DIR .. file
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  local getenv = function(name)
    local v = vars[name]
    if v == nil then return nil end
    return tostring(v)
  end
  local policy = assert(B.load(src, "@" .. path, nil, getenv))
  return policy
end

local function pool_view(t)
  local p = { name = "app", max = 10, min_idle = 0, total = 0, idle = 0, in_use = 0,
              waiting = 0, created_at = 0, last_used_at = 0, protected = false, pinned = false,
              evictable = true, threads = 1, configured = nil,
              max_pools = 100, max_connections = 0, pool_idle_timeout = 0 }
  for k, v in pairs(t or {}) do p[k] = v end
  return p
end

local function conn_view(id)
  return { id = id, created_at = id, returned_at = 100 + id, uses = id, endpoint = "db" }
end

-- The runtime's limits, as C sets them on the lists admit and evict get.
local function pool_list(pools, max_pools, pool_idle_timeout)
  pools.max_pools, pools.max_connections, pools.pool_idle_timeout = max_pools or 100, 0, pool_idle_timeout or 0
  return pools
end

-- Hook names and built-ins as C lists them (read from libpoolrt).
B.use_names(B.names_from_c())
local HOOKS = B.HOOKS

describe("every policy file", function()
  local files = {}
  local ls = assert(io.popen("ls '" .. DIR .. "'"))
  for name in ls:lines() do
    if name:match("%.lua$") then files[#files + 1] = name end
  end
  ls:close()

  it("includes the shipped policies", function()
    local have = {}
    for _, f in ipairs(files) do have[f] = true end
    for _, f in ipairs{ "mru.lua", "lru.lua", "random.lua", "clamp.lua", "background_share.lua",
                        "tenant_reaper.lua", "default.lua", "fair_share.lua" } do
      assert.is_true(have[f], f .. " missing")
    end
  end)

  for _, file in ipairs(files) do
    it(file .. " loads in the sandbox and its hooks run without a forbidden global", function()
      local policy = load_policy(file, {})
      for k, v in pairs(policy) do
        assert.is_truthy(HOOKS[k] or B.SETTINGS[k], file .. ": unknown hook " .. tostring(k))
        if B.SETTINGS[k] then
          assert.is_not_nil(v) -- a setting: C reads and checks it (policy_state.c)
        elseif type(v) == "string" then
          assert.is_true(HOOKS[k][v], file .. ": " .. k .. " = " .. v)
        else
          assert.equal("function", type(v), file .. ": " .. k)
        end
      end
      -- Call every hook once with plausible views, so their bodies run
      -- under the strict sandbox too.
      local pool = pool_view{ idle = 3, total = 4, in_use = 1, threads = 4, configured = 8,
                              last_used_at = 50 }
      local idle = { conn_view(1), conn_view(2), conn_view(3) }
      local pools = pool_list{ pool, pool_view{ name = "default", last_used_at = 10, evictable = false },
                               pool_view{ name = "t1", last_used_at = 5 } }
      local args = {
        pick = { idle, pool }, size = { pool }, overflow = { pool, { timeout = 1, position = 1 } },
        admit = { pools, "t2" }, evict = { pools, 1000 }, reap = { idle, pool, 1000 },
        concurrency = { pool }, on_evict = { "t1", "idle" },
        budget = { { max_connections = 100, reserved = 3, backends = 20, fleet_members = 2, fleet_backends = 10,
                     own_backends = 5, sampled_at = 1 }, { max_connections = 50, connections = 5, pools = 1, budget = 5 } },
        endpoint = { { { name = "db1:5432", role = "primary", up = true, allowed = true, preferred = false, banned = false,
                         failures = 0, open = 3, pool_open = 1, lag_bytes = 0, lag_seconds = 0, sampled_at = 1 },
                       { name = "db2:5432", role = "standby", up = true, allowed = true, preferred = true, banned = false,
                         failures = 0, open = 1, pool_open = 0, lag_bytes = 512, lag_seconds = 0.2, sampled_at = 1 } },
                     pool },
      }
      for k, v in pairs(policy) do
        if type(v) == "function" then v(unpack(args[k])) end
      end
    end)
  end

  it("replicas.lua sends new read connections to a standby that keeps up, else to the primary", function()
    local policy = load_policy("replicas.lua", {})
    local function ep(t)
      return setmetatable(t, { __index = { up = true, allowed = true, preferred = false, banned = false, failures = 0,
                                           open = 0, pool_open = 0, lag_bytes = 0, lag_seconds = 0, sampled_at = 1 } })
    end
    local pool = pool_view{ total = 2 }
    local primary = ep{ name = "a", role = "primary" }
    local s1 = ep{ name = "b", role = "standby", preferred = true, pool_open = 2 }
    local s2 = ep{ name = "c", role = "standby", preferred = true, pool_open = 1 }
    assert.equal(3, policy.endpoint({ primary, s1, s2 }, pool)) -- the standby with fewer of the pool's connections
    s2.lag_seconds = 5
    assert.equal(2, policy.endpoint({ primary, s1, s2 }, pool)) -- not one that lags
    s1.up = false
    assert.equal(1, policy.endpoint({ primary, s1, s2 }, pool)) -- the primary when no standby qualifies
    assert.equal(1, policy.endpoint({ ep{ name = "x", role = "unknown" } }, pool)) -- roles not known yet
    assert.is_nil(policy.endpoint({ ep{ name = "x", role = "standby", allowed = false, banned = true } }, pool))
    assert.same({ after = 3, first = 1, max = 30 }, policy.ban)
    assert.equal(1, policy.max_lag)
  end)

  it("the loader catches a hook that assigns a global", function()
    local p = assert(B.load("return { size = function() leak = 1 end }", "@inline"))
    local ok, err = pcall(p.size)
    assert.is_false(ok)
    assert.equal("inline:1: policy hooks may not set globals (assignment to 'leak'); use a local", err)
  end)
end)

describe("mru.lua", function()
  it("picks the C fast path 'mru'", function()
    local p = load_policy("mru.lua")
    assert.same({ pick = "mru" }, p)
  end)

  it("documents a Lua equivalent that really picks the last released connection", function()
    local f = assert(io.open(DIR .. "mru.lua"))
    local src = f:read("*a")
    f:close()
    local fn = assert(src:match("%-%-%s*(pick = function%(idle, pool%).-end)"), "no Lua equivalent in the comment")
    local p = assert(B.load("return { " .. fn .. " }", "@inline"))
    local idle = { conn_view(1), conn_view(2), conn_view(3) }
    assert.equal(3, p.pick(idle, pool_view{ idle = 3 }))
  end)
end)

describe("lru.lua", function()
  it("picks the C fast path 'lru'", function()
    assert.same({ pick = "lru" }, load_policy("lru.lua"))
  end)
end)

describe("random.lua", function()
  it("picks the C fast path 'random'", function()
    assert.same({ pick = "random" }, load_policy("random.lua"))
  end)
end)

describe("clamp.lua", function()
  -- size = clamp(configured, min(threads + headroom, MAX), MAX)
  -- headroom/max: nil = unset (defaults 10 and 20).
  local cases = {
    -- threads, configured, headroom, max, expected
    { 4,  0,   nil,   nil, 14, "nothing configured: threads + headroom" },
    { 4,  16,  nil,   nil, 16, "configured between MIN and MAX wins" },
    { 2,  5,   nil,   nil, 12, "configured below MIN is raised to MIN" },
    { 2,  50,  nil,   nil, 20, "configured above MAX is capped" },
    { 15, 0,   nil,   nil, 20, "threads + headroom above MAX is capped" },
    { 15, 18,  nil,   nil, 20, "t + h > MAX makes MIN = MAX, even over a smaller u" },
    { 0,  0,   nil,   nil, 10, "no threads: headroom alone" },
    { 4,  0,   0,     nil, 4,  "headroom 0" },
    { 4,  0,   3,     8,   7,  "both from env" },
    { 6,  0,   3,     8,   8,  "env MAX caps t + h" },
    { 4,  100, 3,     8,   8,  "env MAX caps configured" },
    { 4,  0,   "2.5", nil, 6,  "fractional headroom is floored" },
    { 4,  0,   " 5 ", nil, 9,  "surrounding spaces are fine" },
    { 4,  0,   "lots", nil, 14, "garbage headroom -> 10" },
    { 4,  0,   "",    nil, 14, "empty headroom -> 10" },
    { 4,  0,   -3,    nil, 14, "negative headroom -> 10" },
    { 4,  0,   "nan", nil, 14, "nan headroom -> 10" },
    { 4,  0,   "1e999", nil, 14, "infinite headroom -> 10" },
    { 15, 0,   nil,   "twenty", 20, "garbage MAX -> 20" },
    { 15, 0,   nil,   -1,  20, "negative MAX -> 20" },
    { 15, 0,   nil,   0,   20, "MAX 0 (a pool that could never serve) -> 20" },
    { 15, 40,  nil,   "inf", 20, "infinite MAX -> 20" },
    { 30, 0,   nil,   100, 40, "large MAX lets t + h through" },
  }
  for _, c in ipairs(cases) do
    local t, u, h, max, want, why = unpack(c, 1, 6) -- u = 0: configured is nil
    it(("threads=%d configured=%d headroom=%s max=%s -> %d (%s)")
         :format(t, u, tostring(h), tostring(max), want, why), function()
      local p = load_policy("clamp.lua", { POOLRT_POOL_HEADROOM = h, POOLRT_POOL_MAX = max })
      local size, min_idle = p.size(pool_view{ threads = t, configured = u > 0 and u or nil })
      assert.equal(want, size)
      assert.equal(0, min_idle)
    end)
  end

  it("keeps min_idle, capped at the size", function()
    local p = load_policy("clamp.lua", {})
    assert.same({ 14, 3 }, { p.size(pool_view{ threads = 4, min_idle = 3 }) })
    assert.same({ 14, 14 }, { p.size(pool_view{ threads = 4, min_idle = 50 }) })
  end)

  it("reads the environment on every call, not at load", function()
    local vars = {}
    local p = load_policy("clamp.lua", vars)
    assert.equal(14, (p.size(pool_view{ threads = 4 })))
    vars.POOLRT_POOL_HEADROOM, vars.POOLRT_POOL_MAX = "1", "3"
    assert.equal(3, (p.size(pool_view{ threads = 4 })))
  end)
end)

describe("background_share.lua", function()
  local p = load_policy("background_share.lua")
  it("names the C built-in 'half'", function()
    assert.same({ concurrency = "half" }, p)
  end)
  -- The built-in is the rule's one copy (src/pool.c).
  local C = require("poolrt").C
  for _, c in ipairs{ { 10, 5 }, { 30, 5 }, { 100, 5 }, { 4, 2 }, { 2, 1 }, { 1, 1 }, { 0, 1 } } do
    it(("'half': max = %d -> %d"):format(c[1], c[2]), function()
      assert.equal(c[2], C.prt_concurrency_builtin(c[1]))
    end)
  end
end)

describe("tenant_reaper.lua", function()
  -- 200 tenants plus "default".  last_used_at = 1000 + (i * 37) % 200 gives
  -- every tenant a distinct time in an order unrelated to its name.
  -- Protected: protected for i % 40 == 0 (5), pinned for i % 50 == 7 (4),
  -- in_use > 0 for i % 33 == 0 (6), and "default", which is the oldest pool
  -- of all: 16 protected, 185 evictable.  C marks each view `evictable` by
  -- that rule (registry.c); here the fixture does, and the policy reads only
  -- the flag.  The runtime's cap on the list is 20.
  local function is_protected(p)
    return p.name == "default" or p.protected or p.pinned or p.in_use > 0
  end

  local function mark(pools)
    for _, p in ipairs(pools) do p.evictable = not is_protected(p) end
    return pools
  end

  local function tenants(max_pools)
    local pools = { pool_view{ name = "default", last_used_at = 0 } }
    for i = 1, 200 do
      pools[#pools + 1] = pool_view{
        name = ("tenant_%03d"):format(i),
        last_used_at = 1000 + (i * 37) % 200,
        protected = i % 40 == 0,
        pinned = i % 50 == 7,
        in_use = (i % 33 == 0) and 2 or 0,
      }
    end
    return pool_list(mark(pools), max_pools or 20)
  end

  local PROTECTED = { "default", "tenant_007", "tenant_033", "tenant_040", "tenant_057",
                      "tenant_066", "tenant_080", "tenant_099", "tenant_107", "tenant_120",
                      "tenant_132", "tenant_157", "tenant_160", "tenant_165", "tenant_198",
                      "tenant_200" }

  local function by_name(pools)
    local m = {}
    for _, p in ipairs(pools) do m[p.name] = p end
    return m
  end

  local function remaining(pools, evicted)
    local gone, left = {}, {}
    for _, n in ipairs(evicted) do
      assert.is_nil(gone[n], "evicted twice: " .. n)
      gone[n] = true
    end
    for _, p in ipairs(pools) do
      if not gone[p.name] then left[#left + 1] = p.name end
    end
    table.sort(left)
    return left
  end

  it("caps 200 tenants at 20 by evicting only unprotected pools, least recently used first", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = tenants()
    local named = by_name(pools)
    local evicted = policy.evict(pools, 1250) -- nobody idle for 300 s yet

    assert.equal(181, #evicted) -- 201 pools down to 20
    for i, n in ipairs(evicted) do
      local p = assert(named[n], "unknown pool " .. n)
      assert.is_false(is_protected(p), "evicted protected pool " .. n)
      assert.equal(0, p.in_use)
      if i > 1 then
        assert.is_true(named[evicted[i - 1]].last_used_at < p.last_used_at, "not in LRU order at " .. n)
      end
    end
    -- The oldest evictable tenants, by hand: offsets 1 (tenant_173), 2
    -- (146), 3 (119), ...; offset 0 is tenant_200, which is protected.
    assert.same({ "tenant_173", "tenant_146", "tenant_119", "tenant_092", "tenant_065", "tenant_038" },
                { unpack(evicted, 1, 6) })

    -- What is left: every protected pool plus the 4 most recently used others.
    local want = { "tenant_027", "tenant_054", "tenant_081", "tenant_108" }
    for _, n in ipairs(PROTECTED) do want[#want + 1] = n end
    table.sort(want)
    assert.same(want, remaining(pools, evicted))
  end)

  it("never goes below the protected pools, even when they alone exceed the cap", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = tenants()
    for i, p in ipairs(pools) do
      if i % 6 == 0 then p.in_use = 1 end -- 33 more pools in use
    end
    mark(pools)
    local protected = 0
    for _, p in ipairs(pools) do if is_protected(p) then protected = protected + 1 end end
    assert.is_true(protected > 20)

    local evicted = policy.evict(pools, 1250)
    local named = by_name(pools)
    for _, n in ipairs(evicted) do
      assert.is_false(is_protected(named[n]), n)
      assert.equal(0, named[n].in_use, n)
    end
    assert.equal(#pools - protected, #evicted)
    assert.is_true(#remaining(pools, evicted) <= 20 + protected)
  end)

  it("evicts pools idle for idle_timeout (>=) and nothing else when under the cap", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = tenants(1000)
    -- now = 1400: idle for >= 300 s means last_used_at <= 1100, offsets 0..100.
    local evicted = policy.evict(pools, 1400)
    local want = {}
    for _, p in ipairs(pools) do
      if not is_protected(p) and p.last_used_at <= 1100 then want[#want + 1] = p.name end
    end
    assert.is_true(#want > 80)
    table.sort(want)
    local got = { unpack(evicted) }
    table.sort(got)
    assert.same(want, got)
    -- "default" has been idle for 1400 s and stays.
    for _, n in ipairs(evicted) do assert.not_equal("default", n) end
  end)

  it("honours POOLRT_POOL_IDLE_TIMEOUT at the boundary when the runtime evicts no idle pools", function()
    local policy = load_policy("tenant_reaper.lua", { POOLRT_POOL_IDLE_TIMEOUT = 60 })
    local pools = pool_list{ pool_view{ name = "a", last_used_at = 100 }, pool_view{ name = "b", last_used_at = 100.5 } }
    assert.same({}, policy.evict(pools, 159.9))
    assert.same({ "a" }, policy.evict(pools, 160))
    assert.same({ "a", "b" }, policy.evict(pools, 161))
  end)

  it("prefers the runtime's pool_idle_timeout to POOLRT_POOL_IDLE_TIMEOUT", function()
    local policy = load_policy("tenant_reaper.lua", { POOLRT_POOL_IDLE_TIMEOUT = 60 })
    local pools = pool_list({ pool_view{ name = "a", last_used_at = 100 }, pool_view{ name = "b", last_used_at = 150 } },
                            100, 10)
    assert.same({}, policy.evict(pools, 109.9))
    assert.same({ "a" }, policy.evict(pools, 110))
    assert.same({ "a", "b" }, policy.evict(pools, 160))
  end)

  it("combines idle eviction with the cap", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = tenants()
    local evicted = policy.evict(pools, 1400)
    assert.equal(181, #evicted)
    assert.equal(20, #remaining(pools, evicted))
  end)

  it("breaks last_used_at ties by name", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = pool_list({ pool_view{ name = "c", last_used_at = 5 }, pool_view{ name = "a", last_used_at = 5 },
                              pool_view{ name = "b", last_used_at = 5 }, pool_view{ name = "z", last_used_at = 1 } }, 2)
    assert.same({ "z", "a" }, policy.evict(pools, 10))
  end)

  it("evicts only pools the runtime marks evictable, whatever else they say", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = pool_list({ pool_view{ name = "x", last_used_at = 1, protected = true },
                              pool_view{ name = "y", last_used_at = 2, evictable = false },
                              pool_view{ name = "z", last_used_at = 3 } }, 1)
    assert.same({ "x", "z" }, policy.evict(pools, 10))
    assert.same({}, policy.evict(pool_list({ pool_view{ name = "y", evictable = false } }, 1), 1e9))
  end)

  it("admit: allow under the cap, evict_lru at the cap, fail when every pool is protected", function()
    local policy = load_policy("tenant_reaper.lua", {})
    local pools = tenants()
    assert.equal("allow", policy.admit(pool_list({ unpack(pools, 1, 19) }, 20), "new"))
    assert.equal("evict_lru", policy.admit(pool_list({ unpack(pools, 1, 20) }, 20), "new"))
    assert.equal("evict_lru", policy.admit(pools, "new"))
    assert.equal("evict_lru", policy.admit(pool_list({ unpack(pools, 1, 5) }, 5), "new")) -- the runtime's cap
    for _, p in ipairs(pools) do p.evictable = false end
    assert.equal("fail", policy.admit(pools, "new"))
    assert.equal("allow", policy.admit(pool_list({}, 20), "new"))
    assert.equal("allow", policy.admit(pool_list({ unpack(pools, 1, 30) }, 0), "new")) -- max_pools 0: no cap
  end)

  it("overflow answers POOLRT_TENANT_OVERFLOW, evict_idle unless it says fail", function()
    local req = { timeout = 1, position = 3 }
    assert.equal("evict_idle", load_policy("tenant_reaper.lua", {}).overflow(pool_view(), req))
    assert.equal("fail", load_policy("tenant_reaper.lua", { POOLRT_TENANT_OVERFLOW = "fail" }).overflow(pool_view(), req))
    assert.equal("evict_idle", load_policy("tenant_reaper.lua", { POOLRT_TENANT_OVERFLOW = "grow" }).overflow(pool_view(), req))
  end)

  it("falls back to 300 s on a garbage POOLRT_POOL_IDLE_TIMEOUT, and ignores POOLRT_MAX_POOLS", function()
    local policy = load_policy("tenant_reaper.lua", { POOLRT_POOL_IDLE_TIMEOUT = "soon", POOLRT_MAX_POOLS = 5 })
    local pools = tenants()
    assert.equal(181, #policy.evict(pools, 1250)) -- the runtime's cap 20, nobody idle 300 s
    assert.equal(185, #policy.evict(pools, 1500)) -- everyone evictable idle >= 300 s
    assert.equal("allow", policy.admit(pool_list({ unpack(pools, 1, 19) }, 20), "new"))
  end)

  it("on_evict does nothing (the host logs evictions)", function()
    local policy = load_policy("tenant_reaper.lua", {})
    assert.equal(0, select("#", policy.on_evict("tenant_001", "idle")))
  end)
end)

describe("default.lua", function()
  local p = load_policy("default.lua")

  it("picks mru", function()
    assert.equal("mru", p.pick)
  end)

  it("names the built-ins for overflow (wait) and admit (evict_lru), and leaves size, reap, on_evict to C", function()
    assert.equal("wait", p.overflow)
    assert.equal("evict_lru", p.admit)
    assert.is_nil(p.size)
    assert.is_nil(p.reap)
    assert.is_nil(p.on_evict)
  end)

  it("evicts evictable pools idle for the runtime's pool_idle_timeout, none when it is 0", function()
    local pools = { pool_view{ name = "old", last_used_at = 100 }, pool_view{ name = "new", last_used_at = 195 },
                    pool_view{ name = "kept", last_used_at = 0, evictable = false } }
    assert.same({ "old" }, p.evict(pool_list(pools, 100, 50), 200))
    assert.same({ "old" }, p.evict(pool_list(pools, 100, 100), 200)) -- >=, as C
    assert.same({}, p.evict(pool_list(pools, 100, 0), 1e9))
  end)

  it("shares the pool with background jobs like background_share.lua (the built-in 'half')", function()
    assert.equal("half", p.concurrency)
    assert.equal(load_policy("background_share.lua").concurrency, p.concurrency)
  end)
end)

describe("fair_share.lua", function()
  -- Views as the budget hook gets them: the last server sample and this
  -- runtime (configured max_connections, connections, pools, budget in force).
  local function server(t)
    local v = { max_connections = 60, reserved = 3, backends = 53, fleet_members = 4, fleet_backends = 52,
                own_backends = 13, sampled_at = 100 }
    for k, x in pairs(t or {}) do v[k] = x end
    return v
  end
  local function rt(t)
    local v = { max_connections = 50, connections = 12, pools = 1, budget = 12 }
    for k, x in pairs(t or {}) do v[k] = x end
    return v
  end
  local budget = load_policy("fair_share.lua").budget

  it("gives each member floor((max - reserved - others - headroom) / members), one of it the sampler's", function()
    -- (60 - 3 - 1 - 2) / 4 = 13: 12 for the pools, 1 for the sampler's connection
    assert.equal(12, budget(server(), rt()))
    -- two members left: (60 - 3 - 1 - 2) / 2 = 27, reached at once (within 4x)
    assert.equal(26, budget(server{ fleet_members = 2, backends = 27, fleet_backends = 26 }, rt()))
    -- other clients (here 11 besides the fleet) come off the top
    assert.equal(10, budget(server{ backends = 63, fleet_backends = 52 }, rt()))  -- (60 - 3 - 11 - 2) / 4 - 1
  end)

  it("reads its headroom from POOLRT_FLEET_HEADROOM (default 2; garbage falls back)", function()
    local b = load_policy("fair_share.lua", { POOLRT_FLEET_HEADROOM = 10 }).budget
    assert.equal(10, b(server(), rt()))        -- (60 - 3 - 1 - 10) / 4 - 1
    b = load_policy("fair_share.lua", { POOLRT_FLEET_HEADROOM = "lots" }).budget
    assert.equal(12, b(server(), rt()))
  end)

  it("starts at 1 before the first sample, grows at most 4x per sample, shrinks at once", function()
    assert.equal(1, budget(server{ sampled_at = 0 }, rt{ budget = 50 }))
    assert.equal(4, budget(server{ fleet_members = 1, backends = 2, fleet_backends = 1 }, rt{ budget = 1 }))
    assert.equal(16, budget(server{ fleet_members = 1, backends = 5, fleet_backends = 4 }, rt{ budget = 4 }))
    assert.equal(12, budget(server(), rt{ budget = 40 }))
  end)

  it("stays within 1 .. the configured max_connections (0: unlimited)", function()
    assert.equal(20, budget(server{ fleet_members = 1 }, rt{ max_connections = 20, budget = 20 }))
    assert.equal(54, budget(server{ fleet_members = 1, backends = 1, fleet_backends = 1 },
                            rt{ max_connections = 0, budget = 50 }))
    assert.equal(1, budget(server{ backends = 200, fleet_backends = 10 }, rt()))
    assert.equal(1, budget(server{ fleet_members = 0, max_connections = 3 }, rt()))
  end)
end)

describe("hook names", function()
  it("come from C: PRT_NHOOKS hooks, in C's order, with C's built-in names", function()
    local C = require("poolrt").C
    assert.equal(C.PRT_NHOOKS, #B.ORDER)
    for i, h in ipairs(B.ORDER) do assert.equal(require("ffi").string(C.prt_policy_hook_name(i - 1)), h) end
    assert.same({ mru = true, lru = true, random = true }, B.HOOKS.pick)
    assert.is_true(C.prt_policy_builtin_name(0, 3) == nil) -- NULL past the last
    local ok, err = B.load("return { pik = 'mru' }", "@typo.lua")
    assert.is_nil(ok)
    assert.equal("typo.lua: unknown hook 'pik' (hooks: " .. table.concat(B.ORDER, ", ") .. ")", err)
  end)
end)
