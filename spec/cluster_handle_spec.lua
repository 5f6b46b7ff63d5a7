-- rt:cluster (issue 21, "One handle for writes and reads"), against a real
-- primary and streaming standby (spec/support/pair.lua): writes through the
-- handle land on the primary, :read on the standby, the two pools are
-- ordinary pools named `name` and `name.read`, and a conninfo that sets
-- target_session_attrs is refused.  Where a statement ran is asked of the
-- server (pg_is_in_recovery(), inet_server_port()), never of poolrt.
local ffi = require "ffi"
local poolrt = require "poolrt"
local pair = require "spec.support.pair"
local C = poolrt.C

local WHERE = "select pg_is_in_recovery() as standby, inet_server_port() as port"

describe("rt:cluster", function()
  local p
  setup(function() p = pair.start() end)
  teardown(pair.stop_all)

  local function runtime(opts)
    local rt = poolrt.runtime(opts or { reap_interval = 0 })
    finally(function() rt:close() end)
    return rt
  end

  it("sends writes to the primary and :read to the standby, over pools name and name.read", function()
    local rt = runtime()
    local db = rt:cluster("app", { conninfo = p:conninfo(), max = 4 })
    assert.equal(db, rt:cluster("app"), "a second call returns the same handle")
    assert(db:exec_simple("create table ch_t(x int)"))
    for i = 1, 20 do
      local rows = assert(db:query("insert into ch_t values ($1) returning pg_is_in_recovery() as standby, "
                                   .. "inet_server_port() as port", i))
      assert.is_false(rows[1].standby)
      assert.equal(p.primary_port, rows[1].port)
    end
    -- :with, :transaction, :acquire, :copy_in and :query_batch are the primary pool's too
    assert.equal(p.primary_port, db:with(function(conn) return assert(conn:query(WHERE))[1].port end))
    assert(db:transaction(function(conn) return conn:query("insert into ch_t values (0)") end))
    local conn = assert(db:acquire())
    assert.is_false(assert(conn:query(WHERE))[1].standby)
    conn:release()
    assert.equal(2, assert(db:copy_in("copy ch_t (x) from stdin", { { 100 }, { 101 } })))
    local res = assert(db:query_batch({ { WHERE }, { WHERE } }))
    assert.equal(p.primary_port, res[2][1].port)

    local on_standby, n = 0, 100
    for _ = 1, n do
      local r = assert(db:read(WHERE))[1]
      if r.standby then
        on_standby = on_standby + 1
        assert.equal(p.standby_port, r.port)
      end
    end
    assert.is_true(on_standby >= 0.9 * n, ("%d of %d reads on the standby"):format(on_standby, n))
    local batch = assert(db:read_batch({ { WHERE }, { "select $1::int as n", 7 } }))
    assert.equal(7, batch[2][1].n)
    assert.is_true(batch[1][1].standby)

    local w, r = db:pools()
    assert.equal("app", w.name)
    assert.equal("app.read", r.name)
    assert.equal(w, rt:pool("app"), "rt:pool(name) is the cluster's primary pool")
    local stats = rt:stats()
    assert.is_table(stats["app"])
    assert.is_table(stats["app.read"])
    assert.is_true(stats["app"].acquire_total > 0 and stats["app.read"].acquire_total >= n)
    local own = db:stats()
    assert.same({ "app", "app.read" }, (function() local k = {} for name in pairs(own) do k[#k + 1] = name end
                                         table.sort(k) return k end)())
    local m = rt:metrics()
    assert.matches('pool="app"', m, 1, true)
    assert.matches('pool="app.read"', m, 1, true)
    -- the conninfos C wrote: the user's text with the attribute appended
    local cw, cr = db:conninfos()
    assert.equal(p:conninfo() .. " target_session_attrs=read-write", cw)
    assert.equal(p:conninfo() .. " target_session_attrs=prefer-standby", cr)
  end)

  it("takes the runtime's conninfo when opts give none", function()
    local rt = runtime{ reap_interval = 0, conninfo = p:conninfo() }
    local db = rt:cluster("app", { max = 2 })
    assert.is_false(assert(db:query(WHERE))[1].standby)
    local on_standby = 0
    for _ = 1, 10 do
      if assert(db:read(WHERE))[1].standby then on_standby = on_standby + 1 end
    end
    assert.is_true(on_standby >= 9, on_standby .. " of 10 reads on the standby")
  end)

  it("refuses a conninfo that sets target_session_attrs, naming it", function()
    local rt = runtime()
    local ok, err = pcall(rt.cluster, rt, "app", { conninfo = p:conninfo("target_session_attrs=read-write") })
    assert.is_false(ok)
    assert.matches("sets target_session_attrs=read-write; a cluster sets it itself", err, 1, true)
    ok, err = pcall(rt.cluster, rt, "app", { conninfo = "postgresql://127.0.0.1/db?target_session_attrs=any" })
    assert.is_false(ok)
    assert.matches("target_session_attrs=any", err, 1, true)
    assert.is_nil(rt:stats()["app"], "no pool was made")
    local rt2 = runtime{ reap_interval = 0, conninfo = p:conninfo("target_session_attrs=primary") }
    assert.has_error(function() rt2:cluster("app") end)
  end)

  it("refuses a pool of the same name made with another conninfo", function()
    local rt = runtime()
    rt:pool("app", { conninfo = p:node_conninfo("primary") })
    local ok, err = pcall(rt.cluster, rt, "app", { conninfo = p:conninfo() })
    assert.is_false(ok)
    assert.matches('pool "app" exists with another conninfo', err, 1, true)
  end)

  it("writes URI conninfos with ? and &", function()
    local out, err = ffi.new("char[512]"), ffi.new("char[512]")
    local function ci(s, reads)
      assert.equal(0, C.prt_cluster_conninfo(nil, s, reads, out, 512, err, 512), ffi.string(err))
      return ffi.string(out)
    end
    assert.equal("postgresql://a,b/db?target_session_attrs=read-write", ci("postgresql://a,b/db", 0))
    assert.equal("postgres://a/db?sslmode=disable&target_session_attrs=prefer-standby",
                 ci("postgres://a/db?sslmode=disable", 1))
    assert.equal("host=a,b port=1,2 target_session_attrs=prefer-standby", ci("host=a,b port=1,2", 1))
  end)

  it("prt_cluster_get (C, through the FFI) returns two distinct pools, new references", function()
    local rt = runtime()
    local crt = ffi.cast("prt_runtime*", rt:address())
    local o = ffi.new("prt_pool_opts")
    C.prt_pool_opts_default(o)
    o.max = 2
    local ci = p:conninfo()
    o.conninfo = ci
    local out, err = ffi.new("prt_pool*[2]"), ffi.new("char[512]")
    assert.equal(0, C.prt_cluster_get(crt, "capi", o, out, out + 1, err, 512), ffi.string(err))
    assert.is_true(out[0] ~= nil and out[1] ~= nil)
    assert.is_false(out[0] == out[1])
    assert.equal("capi", ffi.string(C.prt_pool_name(out[0])))
    assert.equal("capi.read", ffi.string(C.prt_pool_name(out[1])))
    -- again: the same two pools
    local again = ffi.new("prt_pool*[2]")
    assert.equal(0, C.prt_cluster_get(crt, "capi", o, again, again + 1, err, 512), ffi.string(err))
    assert.is_true(again[0] == out[0] and again[1] == out[1])
    -- the read pool's statements run on the standby (the first may not: both
    -- roles are unknown until a connect, and a connection on the primary is
    -- retired on release while the standby may be had)
    local res, on_standby = ffi.new("prt_result*[1]"), 0
    for _ = 1, 20 do
      assert.equal(0, C.prt_pool_query(out[1], WHERE, 0, nil, 0, res, err, 512), ffi.string(err))
      if ffi.string(C.prt_result_value(res[0], 0, 0)) == "t" then on_standby = on_standby + 1 end
      C.prt_result_free(res[0])
    end
    assert.is_true(on_standby >= 18, on_standby .. " of 20 reads on the standby")
    for i = 0, 1 do C.prt_pool_unref(out[i]); C.prt_pool_unref(again[i]) end
    local bad = ffi.new("prt_pool_opts")
    C.prt_pool_opts_default(bad)
    local badci = ci .. " target_session_attrs=any"
    bad.conninfo = badci
    assert.equal(C.PRT_EINVAL, C.prt_cluster_get(crt, "bad", bad, out, out + 1, err, 512))
    assert.matches("target_session_attrs", ffi.string(err), 1, true)
  end)
end)

-- resty.poolrt's cluster(name) in real nginx (examples/nginx with a
-- location of its own), over the same kind of pair: writes on the primary,
-- reads on the standby, both pools in the worker's stats.
describe("resty.poolrt cluster in nginx", function()
  local N = require "spec.support.nginx"
  local H = require "spec.helper"
  local p, n, dir
  local LOCATION = [[
        location = /cluster {
            content_by_lua_block {
                local poolrt = require "resty.poolrt"
                if ngx.var.arg_bad then
                    local ok, err = pcall(poolrt.cluster, "bad", { conninfo = "host=127.0.0.1 target_session_attrs=any" })
                    ngx.say(poolrt.json{ refused = (not ok) and err or "no" })
                    return
                end
                local db = poolrt.cluster("main", { max = 2 })
                local sql = "select pg_is_in_recovery() as standby, inet_server_port() as port"
                local w, err, code = db:query(sql)
                if not w then return require("poolrt_example").fail(err, code) end
                local on_standby = 0
                for _ = 1, 20 do
                    local r, rerr, rcode = db:read(sql)
                    if not r then return require("poolrt_example").fail(rerr, rcode) end
                    if r[1].standby then on_standby = on_standby + 1 end
                end
                local b, berr, bcode = db:read_batch({ { sql }, { sql } })
                if not b then return require("poolrt_example").fail(berr, bcode) end
                local s = poolrt.stats()
                ngx.say(poolrt.json{ w_standby = w[1].standby and 1 or 0, w_port = w[1].port,
                                     reads_on_standby = on_standby, batch_port = b[2][1].port,
                                     pools = (s.main and s["main.read"]) and 2 or 0 })
            }
        }

        location = /ping {]]

  setup(function()
    N.check_deps()
    p = pair.start()
    dir = N.scratch_dir()
    local f = assert(io.open("examples/nginx/nginx.conf"))
    local conf, k = f:read("*a"):gsub("        location = /ping {", function() return LOCATION end)
    f:close()
    assert.equal(1, k)
    n = N.start_nginx{ app = "poolrt-cluster-spec", workers = 1, pool_max = 2,
                       conf = N.write_readable(dir .. "/nginx.conf", conf),
                       env = { POOLRT_CONNINFO = p:conninfo("application_name=poolrt-cluster-spec") } }
  end)

  teardown(function()
    N.cleanup(n)
    if dir then H.run("rm -rf " .. N.q(dir)) end
    pair.stop_all()
  end)

  it("writes on the primary, reads on the standby, pools main and main.read", function()
    local body, status = N.get(n.url .. "/cluster")
    assert.equal(200, status, body)
    assert.equal("0", N.field(body, "w_standby"), body)
    assert.equal(tostring(p.primary_port), N.field(body, "w_port"))
    assert.is_true(tonumber(N.field(body, "reads_on_standby")) >= 18, body)
    assert.equal(tostring(p.standby_port), N.field(body, "batch_port"))
    assert.equal("2", N.field(body, "pools"))
  end)

  it("refuses a conninfo that sets target_session_attrs", function()
    local body, status = N.get(n.url .. "/cluster?bad=1")
    assert.equal(200, status, body)
    assert.matches("sets target_session_attrs=any", body, 1, true)
  end)
end)
