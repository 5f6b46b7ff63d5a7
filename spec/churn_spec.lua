-- Tenant churn (issue 23): 16 threads query 50 tenants' pools through a
-- runtime that keeps at most 20 pools, so nearly every rt:pool(name) admits
-- a pool by evicting the least recently used one, while the policy is
-- reloaded every 2 s.  apartment's promise is that a tenant's pool is there
-- when you ask for it: `rt:pool(name):query(...)` must not fail with
-- `pool "tN": pool was evicted` because another thread's pool_get evicted
-- that pool between the lookup and the acquire.
--
-- Case 1 fails no query at all.  Case 2 terminates one of the runtime's
-- backends every 5 s; the only failures allowed are the callers whose own
-- backend died.  Every wait is bounded: the threads stop at a deadline, and
-- acquire_timeout bounds each acquire.
--
-- POOLRT_CHURN_SECONDS sets each case's length (default 30, 8 under a
-- sanitizer, whose runs set ASAN_OPTIONS or TSAN_OPTIONS: mk/sanitize.mk);
-- POOLRT_CHURN_SEED the tenants' random sequence (printed with each run).
local H = require "spec.helper"
local poolrt = require "poolrt"

local THREADS, TENANTS = 16, 50
local POOL_OPTS = { max = 3, acquire_timeout = 3, idle_timeout = 2 }
local RUNTIME = { max_pools = 20, max_connections = 30, reap_interval = 0.5 }
local SANITIZED = os.getenv("ASAN_OPTIONS") or os.getenv("TSAN_OPTIONS")
local SECONDS = tonumber(os.getenv("POOLRT_CHURN_SECONDS") or "") or (SANITIZED and 8 or 30)
local SEED = tonumber(os.getenv("POOLRT_CHURN_SEED") or "") or os.time()

-- A caller whose own backend was terminated (pg_terminate_backend) sees one
-- of these; nothing else is excused.
local BACKEND_DIED = { "57P01", "terminating connection due to administrator command",
                       "server closed the connection unexpectedly" }
local function backend_died(msg)
  for _, s in ipairs(BACKEND_DIED) do
    if msg:find(s, 1, true) then return true end
  end
  return false
end

-- Runs the churn on a fresh runtime whose connections carry application
-- name `app`; kills: terminate one of them every 5 s.  Returns the workers'
-- totals, failures by class ({ [class] = { n =, example = } }) and the
-- conductor's result.
local function churn(app, kills)
  local mru = H.write_file("return { pick = 'mru' }\n")
  local lru = H.write_file("return { pick = 'lru' }\n")
  local opts = { conninfo = H.conninfo .. " application_name=" .. app }
  for k, v in pairs(RUNTIME) do opts[k] = v end
  local rt = H.runtime(opts) -- no policy: the built-in default, until the first reload
  local t0 = poolrt.now()
  local res, err = rt:spawn(THREADS + 1, "spec.support.churn_workers", "churn", THREADS + 1, {
    tenants = TENANTS, pool_opts = POOL_OPTS, deadline = t0 + SECONDS, seed = SEED,
    paths = { mru, lru }, app = kills and app or nil })
  local rs = rt:runtime_stats()
  rt:close()
  assert(res, err)
  local total = { queries = 0, failed = 0, idle_workers = 0 }
  local failures = {}
  for i = 1, THREADS do
    local w = res[i]
    total.queries, total.failed = total.queries + w.queries, total.failed + w.failed
    if w.queries == 0 then total.idle_workers = total.idle_workers + 1 end
    for class, f in pairs(w.failures) do
      local into = failures[class] or { n = 0, example = f.example }
      into.n = into.n + f.n
      failures[class] = into
    end
  end
  local c = res[THREADS + 1]
  local evicted = 0
  for _, v in pairs(rs.pools_evicted_total or {}) do evicted = evicted + (tonumber(v) or 0) end
  print(("\n  %s: %.1fs, seed %d: %d queries, %d failed; %d reloads (%d refused), %d backends terminated, "
         .. "%d pools evicted"):format(app, poolrt.now() - t0, SEED, total.queries, total.failed,
                                       c.reloads, #c.refused, c.kills, evicted))
  for class, f in pairs(failures) do print(("    %6d x %s"):format(f.n, f.example)) end
  -- The next case starts with none of this one's connections.
  H.wait_until(function()
    return H.admin("select count(*) as n from pg_stat_activity where application_name = $1", app)[1].n == 0
  end, 10, app .. "'s connections to close")
  return total, failures, c
end

-- "N x example" lines for an assertion message.
local function listing(failures, keep)
  local lines = {}
  for _, f in pairs(failures) do
    if not keep or keep(f.example) then lines[#lines + 1] = ("%d x %s"):format(f.n, f.example) end
  end
  table.sort(lines)
  return table.concat(lines, "\n")
end

describe("tenant churn at max_pools (16 threads, 50 tenants, 20 pools, reloads every 2 s)", function()
  it("fails no query", function()
    local total, failures, c = churn("poolrt-churn-1", false)
    assert.is_true(total.queries > THREADS, "the workers ran " .. total.queries .. " queries")
    assert.equal(0, total.idle_workers, "workers that ran no query")
    assert.same({}, c.refused)
    assert.is_true(c.reloads >= math.floor(SECONDS / 2) - 1, "reloads: " .. c.reloads)
    assert.equal(0, total.failed, "failed queries:\n" .. listing(failures))
  end)

  it("fails only the queries whose own backend was terminated (one every 5 s)", function()
    -- quietly: each kill logs the lost connection, on purpose
    local total, failures, c = H.quietly(churn, "poolrt-churn-2", true)
    assert.is_true(total.queries > THREADS, "the workers ran " .. total.queries .. " queries")
    assert.equal(0, total.idle_workers, "workers that ran no query")
    assert.same({}, c.refused)
    assert.same({}, c.kill_errors)
    assert.is_true(c.kills >= 1, "backends terminated: " .. c.kills)
    local other = listing(failures, function(msg) return not backend_died(msg) end)
    assert.equal("", other, "failures other than a terminated backend's own caller:\n" .. other)
  end)
end)
