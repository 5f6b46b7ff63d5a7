-- resty.poolrt in real nginx (Debian 12: nginx 1.22 + libnginx-mod-http-lua
-- 0.10.23 + lua-resty-core), started from examples/nginx with run.sh on a
-- free loopback port against the test server ($POOLRT_CONNINFO).  Every
-- nginx the spec starts is stopped in teardown; every wait is bounded.
local H = require "spec.helper"
local poolrt = require "poolrt"

local APP = "poolrt-nginx-spec"

local N = require "spec.support.nginx"
local RUN = N.RUN
local q, get, scratch_dir, write_readable, backends = N.q, N.get, N.scratch_dir, N.write_readable, N.backends
local pid_alive, start_nginx, error_log, stop_nginx, cleanup = N.pid_alive, N.start_nginx, N.error_log, N.stop_nginx, N.cleanup
local field, metric, check_deps = N.field, N.metric, N.check_deps

local function backend_pids(app)
  local pids = {}
  for _, r in ipairs(H.admin("select pid from pg_stat_activity where application_name = $1", app)) do
    pids[#pids + 1] = r.pid
  end
  return pids
end


-- GETs every url at once (curl --parallel, at most 200 connections); returns
-- a list of { status, body } in url order.
local function get_parallel(urls, dir)
  local cfg = {}
  for i, u in ipairs(urls) do
    cfg[#cfg + 1] = ("url = %q\noutput = %q\n"):format(u, dir .. "/out." .. i)
  end
  local cfgfile = H.write_file(table.concat(cfg), dir .. "/curl.cfg")
  -- curl 7.88 drops -w in --parallel mode with output files: -i puts the
  -- status line into each output file instead.
  local out, rc = H.run("curl -sS -i --no-progress-meter -m 30 --parallel --parallel-max 200 -K " .. q(cfgfile))
  assert(rc == 0, "curl --parallel failed (rc " .. tostring(rc) .. "):\n" .. out:sub(1, 2000))
  local res, codes = {}, {}
  for i = 1, #urls do
    local f = io.open(dir .. "/out." .. i)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(dir .. "/out." .. i)
    codes[i] = tonumber(text:match("^HTTP/%S+ (%d%d%d)"))
    res[i] = { body = text:match("\r?\n\r?\n(.*)$") or text }
  end
  return res, codes
end

-- Quits nginx and waits until the server has no connection from it.
local function quit_leaves_no_connections(n)
  assert.is_true(backends(n.app) > 0, "the test should start with open server connections")
  stop_nginx(n)
  assert.is_false(pid_alive(n.master))
  H.wait_until(function() return backends(n.app) == 0 end, 5, "server connections from nginx to close")
  local log = error_log(n)
  assert.is_nil(log:match("never released"))
  assert.is_nil(log:match("exited on signal"))
  -- Every worker took the clean path (exit_worker_by_lua -> shutdown()).
  local closed = select(2, log:gsub("resty.poolrt: worker %d+ closed its pools", ""))
  assert.is_true(closed >= n.workers, ("%d of %d workers closed their pools"):format(closed, n.workers))
end

describe("resty.poolrt in nginx", function()
  setup(check_deps)

  describe("one worker, pool max 4", function()
    local n, dir

    setup(function()
      dir = scratch_dir()
      n = start_nginx{ app = APP, workers = 1, pool_max = 4 }
    end)

    teardown(function()
      cleanup(n)
      if dir then H.run("rm -rf " .. q(dir)) end
    end)

    it("answers /query with real rows from the server", function()
      local body, status = get(n.url .. "/query?n=41")
      assert.equal(200, status, body)
      assert.equal("42", field(body, "n"))
      -- typed rows in nginx too: an int4 column is a Lua number (JSON 42, not "42")
      assert.matches('"n":42[,}]', body)
      assert.equal(APP, field(body, "app"))
      local pid = field(body, "pid")
      assert.equal(1, backends(APP, " and pid = " .. assert(tonumber(pid))))
    end)

    it("answers /batch with each statement's own row, in one worker-thread hop", function()
      local body, status = get(n.url .. "/batch?n=5")
      assert.equal(200, status, body)
      assert.matches('"rows":%[{"k":1},{"k":2},{"k":3},{"k":4},{"k":5}%]', body)
      assert.matches('"errors":0', body)
    end)

    it("serves 200 concurrent requests with a pool of 4, every one succeeding", function()
      local urls = {}
      for i = 1, 200 do urls[i] = n.url .. "/query?sleep=0.02&n=" .. i end
      local res, codes = get_parallel(urls, dir)
      local pids, bad = {}, {}
      for i, r in ipairs(res) do
        if codes[i] ~= 200 or field(r.body, "n") ~= tostring(i + 1) then
          bad[#bad + 1] = ("%d: %s %s"):format(i, tostring(codes[i]), r.body)
        end
        pids[field(r.body, "pid") or "?"] = true
      end
      assert.same({}, bad)
      local distinct = 0
      for _ in pairs(pids) do distinct = distinct + 1 end
      assert.is_true(distinct <= 4, "at most 4 server connections, saw " .. distinct)
      local m = get(n.url .. "/metrics")
      assert.equal(4, metric(m, "poolrt_pool_max", 'worker="0",pool="app"'))
      assert.is_true(metric(m, "poolrt_pool_connections", 'worker="0",pool="app"') <= 4)
      assert.is_true(metric(m, "poolrt_connections_created_total", 'worker="0",pool="app"') <= 4)
      assert.is_true(metric(m, "poolrt_acquire_total", 'worker="0",pool="app"') >= 200)
      -- 200 x 20 ms on 4 connections: callers really queued for the pool.
      assert.is_true(metric(m, "poolrt_acquire_wait_seconds_sum", 'worker="0",pool="app"') > 0)
      assert.is_true(backends(APP) <= 4)
    end)

    it("keeps the event loop free: /ping answers in well under 50 ms while /slow runs on the same worker", function()
      local w1 = field(get(n.url .. "/worker"), "pid")
      local slow = io.popen("curl -sS -m 10 -w '\\n@@%{http_code}' " .. q(n.url .. "/slow") .. " 2>&1")
      local running = " and state = 'active' and query like '%pg_sleep(0.5)%'"
      H.wait_until(function() return backends(APP, running) == 1 end, 5, "the slow query to run")
      local times = {}
      for i = 1, 5 do
        local body, status, secs = get(n.url .. "/ping")
        assert.equal(200, status)
        assert.equal("pong\n", body)
        times[i] = secs
        -- The first ping was answered while the slow query was still in
        -- progress (a blocked loop would have answered it only after).  Only
        -- the first: on a loaded machine five pings and these checks may
        -- outlast the 0.5 s query.
        if i == 1 then assert.equal(1, backends(APP, running)) end
      end
      table.sort(times)
      -- The median, so one scheduling hiccup on a loaded CI box does not count.
      assert.is_true(times[3] < 0.05, ("/ping took %.1f ms (median; max %.1f ms)"):format(times[3] * 1000,
                                                                                      times[5] * 1000))
      local out = slow:read("*a")
      slow:close()
      assert.matches("@@200$", out)
      assert.equal(w1, field(get(n.url .. "/worker"), "pid"))
    end)

    it("serves Prometheus metrics with pool and worker labels", function()
      local m, status = get(n.url .. "/metrics")
      assert.equal(200, status)
      -- DESIGN.md's names (PgBouncer's SHOW POOLS, prefixed poolrt_).
      for _, name in ipairs{ "poolrt_pool_connections", "poolrt_pool_max", "poolrt_cl_active", "poolrt_cl_waiting",
                             "poolrt_sv_active", "poolrt_sv_idle", "poolrt_maxwait_seconds", "poolrt_acquire_total",
                             "poolrt_acquire_timeouts_total", "poolrt_connections_created_total" } do
        assert.is_number(metric(m, name, 'worker="0",pool="app"'), name)
        assert.matches("# TYPE " .. name .. " ", m, 1, true)
      end
      assert.is_number(metric(m, "poolrt_connections_closed_total", 'worker="0",pool="app",reason="idle"'))
      local count = metric(m, "poolrt_acquire_wait_seconds_count", 'worker="0",pool="app"')
      assert.is_true(count >= 200)
      assert.equal(count, metric(m, "poolrt_acquire_wait_seconds_bucket", 'worker="0",pool="app",le="+Inf"'))
      assert.equal(1, metric(m, "poolrt_policy_generation", 'worker="0"'))
      -- One TYPE line per family, or Prometheus rejects the scrape.
      local seen = {}
      for fam in m:gmatch("# TYPE (%S+)") do
        assert.is_nil(seen[fam], "duplicate TYPE " .. fam)
        seen[fam] = true
      end
      -- And Prometheus' own linter has nothing to say.
      local lint, lint_rc = require("spec.support.promtool").check(m)
      assert.equal("", lint)
      assert.equal(0, lint_rc)
    end)

    it("nginx -s quit leaves no server connections behind", function()
      quit_leaves_no_connections(n)
    end)
  end)

  describe("when worker-thread VMs run out", function()
    local n, dir

    setup(function()
      dir = scratch_dir()
      -- The shipped config with only 2 worker-thread VMs but max_inflight 32,
      -- and runtime options that poolrt.runtime{} takes (resty.poolrt once
      -- refused them: nginx did not start).
      local f = assert(io.open("examples/nginx/nginx.conf"))
      local conf = f:read("*a"):gsub("lua_worker_thread_vm_pool_size 32;", "lua_worker_thread_vm_pool_size 2;")
                                :gsub("max_inflight = 32,", 'max_inflight = 32, pool_idle_timeout = 3600, pools_overflow = "allow",'
                                      .. " max_connections = 40, policy_budget = 1000000,")
      f:close()
      assert.matches("pools_overflow", conf, 1, true)
      n = start_nginx{ app = APP .. "-vm", workers = 1, pool_max = 4,
                       conf = write_readable(dir .. "/nginx.conf", conf) }
    end)

    teardown(function()
      cleanup(n)
      if dir then H.run("rm -rf " .. q(dir)) end
    end)

    it("takes every option of poolrt.runtime{} (pool_idle_timeout, pools_overflow)", function()
      assert.equal(200, select(2, get(n.url .. "/ping")))
      assert.is_nil(error_log(n):match("unknown option"))
    end)

    it("takes the old names (init's max_connections, policy_budget) with one warning each", function()
      assert.equal(200, select(2, get(n.url .. "/ping")))
      local log = error_log(n)
      for old, new in pairs{ max_connections = "shared_max_connections", policy_budget = "hook_steps" } do
        local _, count = log:gsub("option " .. old .. " is now " .. new, "")
        assert.equal(1, count, old)
      end
      assert.equal(40, metric(get(n.url .. "/metrics"), "poolrt_shared_budget_max", ""))
    end)

    it("answers 503 with a clear message and the worker survives", function()
      local w1 = field(get(n.url .. "/worker"), "pid")
      local urls = {}
      for i = 1, 6 do urls[i] = n.url .. "/slow" end
      local res, codes = get_parallel(urls, dir)
      local ok, busy = 0, 0
      for i, r in ipairs(res) do
        if codes[i] == 200 then ok = ok + 1
        else
          assert.equal(503, codes[i])
          assert.matches("no worker thread: no available Lua vm", r.body, 1, true)
          busy = busy + 1
        end
      end
      assert.is_true(ok >= 2 and busy >= 1, ("ok=%d busy=%d"):format(ok, busy))
      assert.equal(w1, field(get(n.url .. "/worker"), "pid"))
      assert.is_nil(error_log(n):match("exited on signal"))
    end)
  end)

  describe("two workers", function()
    local n, dir, policy
    local app = APP .. "-2"

    setup(function()
      dir = scratch_dir()
      policy = write_readable(dir .. "/policy.lua", [[
        return { size = function(pool) return pool.configured, 0 end }
      ]])
      n = start_nginx{ app = app, workers = 2, pool_max = 4, policy = policy }
    end)

    teardown(function()
      cleanup(n)
      if dir then H.run("rm -rf " .. q(dir)) end
    end)

    -- Polls /worker over new connections until every worker has been seen
    -- satisfying ok(body); reuseport spreads connections over the workers.
    local function every_worker(ok, what)
      local seen = {}
      H.wait_until(function()
        local body, status = get(n.url .. "/worker")
        assert.equal(200, status)
        if ok(body) then seen[field(body, "worker")] = true end
        return seen["0"] and seen["1"]
      end, 10, what)
    end

    it("applies a policy reload from /admin/reload in every worker", function()
      every_worker(function(b) return field(b, "policy_generation") == "1" and field(b, "max") == "4" end,
                   "both workers on generation 1 with max 4")
      write_readable(policy, [[
        return { size = function(pool) return 2, 0 end }
      ]])
      local body, status = get(n.url .. "/admin/reload")
      assert.equal(200, status, body)
      assert.matches('"ok":true', body, 1, true)
      local gens = {}
      for g in body:gmatch('"policy_generation":(%d+)') do gens[#gens + 1] = g end
      assert.same({ "2", "2" }, gens)
      -- Checked by each worker independently: new generation, new size.
      every_worker(function(b) return field(b, "policy_generation") == "2" and field(b, "max") == "2" end,
                   "both workers on generation 2 with max 2")
      local m = get(n.url .. "/metrics")
      for _, w in ipairs{ "0", "1" } do
        assert.equal(2, metric(m, "poolrt_policy_generation", 'worker="' .. w .. '"'))
        assert.equal(2, metric(m, "poolrt_pool_max", 'worker="' .. w .. '",pool="app"'))
      end
      assert.same({ "", 0 }, { require("spec.support.promtool").check(m) })  -- two workers merged, still lint-clean
    end)

    it("refuses a broken policy in every worker and keeps the old one serving", function()
      write_readable(policy, "return { size = function(pool) return 2, 0 end ")  -- syntax error
      local body, status = get(n.url .. "/admin/reload")
      assert.equal(500, status, body)
      assert.matches('"ok":false', body, 1, true)
      local errors = select(2, body:gsub('"error":"', ""))
      assert.equal(2, errors)
      every_worker(function(b) return field(b, "policy_generation") == "2" and field(b, "max") == "2" end,
                   "both workers still on generation 2")
      local qb, qs = get(n.url .. "/query?n=1")
      assert.equal(200, qs, qb)
      write_readable(policy, "return { size = function(pool) return 2, 0 end }")
    end)

    it("nginx -s reload rebuilds the pools and the old workers close their connections", function()
      local urls = {}
      for i = 1, 40 do urls[i] = n.url .. "/query?sleep=0.01&n=" .. i end
      local _, codes = get_parallel(urls, dir)
      for i = 1, 40 do assert.equal(200, codes[i]) end
      local old = backend_pids(app)
      assert.is_true(#old > 0 and #old <= 4, "pool max 2 per worker, saw " .. #old)
      local out, rc = H.run(RUN .. " reload " .. q(n.prefix))
      assert.equal(0, rc, out)
      -- Old workers drain and exit; their server connections go with them.
      H.wait_until(function()
        local now = {}
        for _, p in ipairs(backend_pids(app)) do now[p] = true end
        for _, p in ipairs(old) do if now[p] then return false end end
        return true
      end, 10, "the old workers' server connections to close")
      H.wait_until(function()
        local body, status = get(n.url .. "/query?n=2")
        return status == 200 and field(body, "n") == "3"
      end, 5, "the new workers to answer")
      assert.is_true(backends(app) <= 4)
    end)

    it("nginx -s quit leaves no server connections behind", function()
      get(n.url .. "/query")
      quit_leaves_no_connections(n)
    end)
  end)
end)
