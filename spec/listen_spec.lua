-- LISTEN/NOTIFY against a real server: pool:listen(channels), l:wait,
-- l:close, garbage collection, the pool's max, and a listener that outlives
-- its connection (server restart, pg_terminate_backend).
local poolrt = require "poolrt"
local H = require "spec.helper"
local S = require "spec.support.pgserver"

-- The next notification within `timeout`, skipping nothing; raises with
-- what wait said instead.
local function next_note(l, timeout)
  local n, err, why = l:wait(timeout or 5)
  assert(n, "wait: " .. tostring(err) .. " " .. tostring(why))
  return n
end

-- Waits (bounded) until the listener says it reconnected; returns how many
-- waits timed out first and the last detail they gave.
local function wait_reconnected(l, within)
  local deadline, timeouts, detail = poolrt.now() + within, 0, nil
  while poolrt.now() < deadline do
    local n, err, why = l:wait(0.5)
    assert.is_nil(n, "a notification arrived while the listener was down")
    if err == "reconnected" then return timeouts, detail end
    assert.equal("timeout", err)
    timeouts, detail = timeouts + 1, why or detail
  end
  error("the listener did not reconnect within " .. within .. "s")
end

describe("pool:listen", function()
  local rt, pool
  before_each(function()
    rt = H.runtime()
    pool = rt:pool("listen", { max = 2, acquire_timeout = 5 })
  end)
  after_each(function() rt:close() end)

  it("receives notifications on two channels in order, with payload and the notifying backend's pid", function()
    local l = assert(pool:listen({ "jobs", "cache" }))
    local sender = assert(rt:pool("sender", { max = 1 }):acquire())
    assert(sender:query("select pg_notify('jobs', '1')"))
    assert(sender:query("select pg_notify('other', 'not for us')"))
    assert(sender:query("select pg_notify('cache', '2')"))
    assert(sender:query("select pg_notify('jobs', '')"))
    local pid = sender:backend_pid()
    assert.same({ channel = "jobs", payload = "1", pid = pid }, next_note(l))
    assert.same({ channel = "cache", payload = "2", pid = pid }, next_note(l))
    assert.same({ channel = "jobs", payload = "", pid = pid }, next_note(l))
    local n, err = l:wait(0.05)
    assert.is_nil(n)
    assert.equal("timeout", err)
    sender:release()
    l:close()
  end)

  it("a wait with nothing to receive returns nil, \"timeout\" after about its timeout", function()
    local l = assert(pool:listen({ "quiet" }))
    for _, t in ipairs{ 0, 0.2 } do
      local t0 = poolrt.now()
      local n, err = l:wait(t)
      local took = poolrt.now() - t0
      assert.is_nil(n)
      assert.equal("timeout", err)
      assert.is_true(took >= t - 0.01 and took < t + 0.5, ("wait(%g) took %.3fs"):format(t, took))
    end
    assert.has_error(function() l:wait() end, "poolrt: listener:wait(timeout): timeout must be a number >= 0")
    l:close()
    assert.has_error(function() l:wait(1) end, "poolrt: listener is closed")
  end)

  it("quotes channel names: case, spaces and quotes name channels of their own", function()
    local names = { "Jobs", "a b", 'say "hi"', "x;drop table t" }
    local l = assert(pool:listen(names))
    for i, ch in ipairs(names) do H.admin("select pg_notify($1, $2)", ch, tostring(i)) end
    H.admin("select pg_notify('jobs', 'lower case is another channel')")
    for i, ch in ipairs(names) do
      local n = next_note(l)
      assert.same({ ch, tostring(i) }, { n.channel, n.payload })
    end
    assert.equal("timeout", select(2, l:wait(0.05)))
    l:close()
  end)

  it("close UNLISTENs and the same connection goes back clean", function()
    local one = rt:pool("one", { max = 1 })
    local l = assert(one:listen({ "jobs", "cache" }))
    local pid = l:backend_pid()
    assert.is_number(pid)
    l:close()
    l:close() -- idempotent
    local c = assert(one:acquire(1))
    assert.equal(pid, c:backend_pid())
    assert.equal(0, c:query("select count(*)::int as n from pg_listening_channels()")[1].n)
    c:release()
    assert.equal(0, one:stats().in_use)
  end)

  it("garbage collection of a listener never closed gives its connection back, UNLISTENed", function()
    local one = rt:pool("gc", { max = 1 })
    local pid
    do
      local l = assert(one:listen({ "jobs" }))
      pid = l:backend_pid()
      assert.equal(1, one:stats().in_use)
    end
    H.wait_until(function()
      collectgarbage("collect")
      return one:stats().in_use == 0
    end, 5, "the collector to give the listener's connection back")
    local c = assert(one:acquire(1))
    assert.equal(pid, c:backend_pid())
    assert.equal(0, c:query("select count(*)::int as n from pg_listening_channels()")[1].n)
    c:release()
  end)

  it("counts against the pool's max: a pool of 1 with an open listener makes acquire time out", function()
    local one = rt:pool("full", { max = 1 })
    local l = assert(one:listen({ "jobs" }))
    local t0 = poolrt.now()
    local c, err = one:acquire(0.2)
    assert.is_nil(c)
    assert.matches('^pool "full": acquire timed out', err)
    assert.is_true(poolrt.now() - t0 < 1.5)
    assert.same({ total = 1, in_use = 1 }, { total = one:stats().total, in_use = one:stats().in_use })
    l:close()
    assert(one:acquire(1)):release()
  end)

  it("after pg_terminate_backend of its backend, wait reconnects, says so once, and receives again", function()
    local one = rt:pool("term", { max = 1 })
    local l = assert(one:listen({ "jobs" }))
    local pid = l:backend_pid()
    H.quietly(function()
      H.admin("select pg_terminate_backend($1)", pid)
      wait_reconnected(l, 10)
    end)
    local pid2 = l:backend_pid()
    assert.is_number(pid2)
    assert.are_not.equal(pid, pid2)
    assert.equal(1, one:stats().total) -- the dead connection's slot was given back, not leaked
    local sender = H.admin("select pg_backend_pid() as pid, pg_notify('jobs', 'after') as n")[1].pid
    assert.same({ channel = "jobs", payload = "after", pid = sender }, next_note(l))
    assert.equal("timeout", select(2, l:wait(0.05))) -- "reconnected" was said once
    l:close()
    assert.equal(0, one:stats().in_use)
  end)
end)

describe("pool:listen across a server restart", function()
  local srv
  setup(function() srv = S.start() end)
  teardown(function() srv:destroy() end)

  it("waits report the outage as timeouts, then \"reconnected\" once; a NOTIFY after the restart arrives", function()
    local rt = H.runtime{ conninfo = srv.conninfo }
    local pool = rt:pool("restart", { max = 2, acquire_timeout = 2 })
    local l = assert(pool:listen({ "jobs" }))
    local sender = rt:pool("sender", { max = 1, acquire_timeout = 2 })
    assert(sender:query("select pg_notify('jobs', 'before')"))
    assert.equal("before", next_note(l).payload)
    H.quietly(function()
      srv:stop_server()
      -- down: a wait reconnects within its own timeout, fails, and says why
      local t0 = poolrt.now()
      local n, err, why = l:wait(0.3)
      assert.is_nil(n)
      assert.equal("timeout", err)
      assert.matches('^pool "restart": listener is reconnecting', why)
      assert.is_true(poolrt.now() - t0 < 1.5, "a wait while the server is down overran its timeout")
      assert.is_nil(l:backend_pid())
      srv:start_server()
      wait_reconnected(l, 15)
    end)
    assert.is_number(l:backend_pid())
    local rows = assert(H.quietly(function()
      -- the sender's idle connection died with the server too; the pool replaces it
      return select(1, sender:query("select pg_backend_pid() as pid, pg_notify('jobs', 'after') as n"))
        or sender:query("select pg_backend_pid() as pid, pg_notify('jobs', 'after') as n")
    end))
    assert.same({ channel = "jobs", payload = "after", pid = rows[1].pid }, next_note(l))
    assert.equal("timeout", select(2, l:wait(0.05)))
    l:close()
    local s = pool:stats()
    assert.equal(0, s.in_use)
    assert.is_true(s.total <= 2)
    rt:close()
  end)
end)

describe("resty.poolrt pool:listen in nginx", function()
  local N = require "spec.support.nginx"
  local APP = "poolrt-nginx-listen-spec"
  local n, dir

  -- The shipped example plus /listen: a listener on "nginx_jobs" that
  -- receives a NOTIFY, times out with nothing sent (while the spec checks
  -- /ping), has its backend terminated, reconnects and receives again.
  local LOCATION = [[
        location = /listen {
            content_by_lua_block {
                local poolrt = require "resty.poolrt"
                local pool = poolrt.pool("app")
                local out = {}
                local l = assert(pool:listen({ "nginx_jobs" }))
                local function note(tag, n, err, why)
                    out[tag] = n and (n.channel .. "/" .. n.payload .. "/" .. n.pid) or (tostring(err) .. (why and (": " .. why) or ""))
                end
                local rows = assert(pool:query("select pg_backend_pid() as pid, pg_notify('nginx_jobs', 'one') is null as x"))
                out.sender1 = rows[1].pid
                note("first", l:wait(5))
                note("quiet", l:wait(tonumber(ngx.var.arg_quiet) or 1))
                rows = assert(pool:query("select pid from pg_stat_activity where application_name = current_setting('application_name') and query ilike 'listen%'"))
                out.listeners = #rows
                assert(pool:query("select pg_terminate_backend($1)", rows[1].pid))
                for _ = 1, 20 do
                    local n, err = l:wait(0.5)
                    if err ~= "timeout" then note("after_kill", n, err) break end
                end
                rows = assert(pool:query("select pg_backend_pid() as pid, pg_notify('nginx_jobs', 'two') is null as x"))
                out.sender2 = rows[1].pid
                note("second", l:wait(5))
                l:close()
                out.closed_wait = select(2, pcall(l.wait, l, 1))
                ngx.say(poolrt.json(out))
            }
        }

        location = /ping {]]

  setup(function()
    N.check_deps()
    dir = N.scratch_dir()
    local f = assert(io.open("examples/nginx/nginx.conf"))
    local conf = f:read("*a"):gsub("        location = /ping {", function() return LOCATION end, 1)
    f:close()
    assert.matches("location = /listen", conf, 1, true)
    n = N.start_nginx{ app = APP, workers = 1, pool_max = 4, conf = N.write_readable(dir .. "/nginx.conf", conf) }
  end)

  teardown(function()
    N.cleanup(n)
    if dir then H.run("rm -rf " .. N.q(dir)) end
  end)

  it("waits on a worker thread (the event loop keeps answering), reconnects, and gives the connection back clean", function()
    local listen = H.background("curl -sS -m 30 " .. N.q(n.url .. "/listen?quiet=1.5"))
    -- while /listen sits in its quiet wait, /ping answers at once
    H.wait_until(function()
      return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = $1 "
                              .. "and query ilike 'listen%'", APP)[1].n) == 1
    end, 10, "the listener to LISTEN")
    local _, status, secs = N.get(n.url .. "/ping")
    assert.equal(200, status)
    assert.is_true(secs < 0.5, ("/ping took %.3fs while a listener waited"):format(secs))
    -- Once curl has exited: a body read while curl still writes it can end
    -- in a "}" that is not the last one.
    local body, crc = listen:wait(35, "/listen to answer")
    assert.equal(0, crc, body)
    assert.matches("^%d+$", N.field(body, "sender1") or "", nil, false, body)
    assert.equal("nginx_jobs/one/" .. N.field(body, "sender1"), N.field(body, "first"))
    assert.equal("timeout", N.field(body, "quiet"))
    assert.equal("1", N.field(body, "listeners"))
    assert.equal("reconnected", N.field(body, "after_kill"))
    assert.equal("nginx_jobs/two/" .. N.field(body, "sender2"), N.field(body, "second"))
    assert.equal("resty.poolrt: listener is closed", N.field(body, "closed_wait"))
    -- closed: no connection of this nginx is still subscribed
    H.wait_until(function()
      return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = $1 "
                              .. "and query ilike 'listen%'", APP)[1].n) == 0
    end, 5, "no backend of nginx to be LISTENing")
  end)
end)
