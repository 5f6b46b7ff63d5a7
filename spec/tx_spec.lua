-- Connection set-up (pool option init_sql) and transactions
-- (pool:transaction), against the real server.
local H = require "spec.helper"

local function backends(app)
  return H.admin("select count(*) as n from pg_stat_activity where application_name = $1", app)[1].n
end

describe("init_sql", function()
  local rt
  setup(function()
    rt = H.runtime()
    H.admin("drop schema if exists tx_tenant_a cascade")
    H.admin("create schema tx_tenant_a")
    H.admin("create table tx_tenant_a.items (v int)")
    H.admin("insert into tx_tenant_a.items values (7)")
  end)
  teardown(function() rt:close() H.admin("drop schema if exists tx_tenant_a cascade") end)

  it("sets the search_path queries see (a schema per tenant)", function()
    local pool = rt:pool("tx_tenant", { max = 2, init_sql = "set search_path to tx_tenant_a" })
    assert.equal(7, assert(pool:query("select v from items"))[1].v)
    assert.equal("tx_tenant_a", assert(pool:query("show search_path"))[1].search_path)
  end)

  it("runs a list of statements in order", function()
    local pool = rt:pool("tx_list", { max = 1, init_sql = {
      "set search_path to tx_tenant_a", "set application_name to 'tx_init_list'" } })
    local rows = assert(pool:query("select current_setting('search_path') as sp, "
                                   .. "current_setting('application_name') as app"))
    assert.same({ sp = "tx_tenant_a", app = "tx_init_list" }, rows[1])
  end)

  it("fails the acquire with the server's error and the pool's state, leaving no connection open", function()
    local app = "tx_bad_init"
    local pool = rt:pool("tx_bad", { max = 2, conninfo = H.conninfo .. " application_name=" .. app,
                                     init_sql = { "select 1", "select * from tx_no_such_table" } })
    local conn, err = pool:acquire()
    assert.is_nil(conn)
    assert.equal('pool "tx_bad": init_sql failed: relation "tx_no_such_table" does not exist (SQLSTATE 42P01)'
                 .. " (max=2 in_use=0 idle=0 waiting=0)", err)
    H.wait_until(function() return backends(app) == 0 end, 5, "the failed connection to close")
    local s = pool:stats()
    assert.same({ 0, 0, 0, 1 }, { s.total, s.in_use, s.idle, s.init_sql_errors_total })
    -- The pool stays usable: the next acquire fails the same way (or, inside
    -- the connect backoff, names the same error), and nothing leaks.
    local rows, err2 = pool:query("select 1")
    assert.is_nil(rows)
    assert.matches('init_sql failed: relation "tx_no_such_table" does not exist', err2, 1, true)
    s = pool:stats()
    assert.same({ 0, 0, 0 }, { s.total, s.in_use, s.idle })
    assert.is_true(s.init_sql_errors_total >= 1 and s.init_sql_errors_total <= 2)
    H.wait_until(function() return backends(app) == 0 end, 5, "every failed connection to close")
  end)

  it("raises on an init_sql that is neither a string nor a list of strings", function()
    assert.has_error(function() rt:pool("tx_badopt", { init_sql = { 1 } }) end,
                     "poolrt: pool option init_sql: every statement must be a string")
    assert.has_error(function() rt:pool("tx_badopt", { init_sql = {} }) end,
                     "poolrt: pool option init_sql must be a string or a non-empty list of strings")
  end)

  it("re-runs after the DISCARD ALL of discard_all", function()
    local pool = rt:pool("tx_discard", { max = 1, discard_all = true, init_sql = "set search_path to tx_tenant_a" })
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    assert(conn:query("set search_path to public"))
    conn:release()
    conn = assert(pool:acquire())
    assert.equal(pid, conn:backend_pid()) -- the same connection, reset
    assert.equal("tx_tenant_a", assert(conn:query("show search_path"))[1].search_path)
    conn:release()
  end)
end)

describe("pool:transaction", function()
  local rt, pool
  setup(function()
    rt = H.runtime()
    pool = rt:pool("tx", { max = 2 })
    H.admin("create table if not exists tx_items (id int primary key)")
    H.admin("create table if not exists tx_doctors (id int primary key, on_call bool not null)")
  end)
  teardown(function() rt:close() H.admin("drop table if exists tx_items, tx_doctors") end)
  before_each(function() H.admin("delete from tx_items") end)

  local function count_items() return H.admin("select count(*) as n from tx_items")[1].n end

  it("commits and returns what fn returned", function()
    local a, b = pool:transaction(function(conn)
      assert(conn:query("insert into tx_items values (1)"))
      return "done", 2
    end)
    assert.same({ "done", 2 }, { a, b })
    assert.equal(1, count_items())
    assert.equal(0, pool:stats().in_use)
  end)

  it("rolls back and re-raises when fn raises", function()
    local ok, err = pcall(pool.transaction, pool, function(conn)
      assert(conn:query("insert into tx_items values (1)"))
      error("boom", 0)
    end)
    assert.same({ false, "boom" }, { ok, err })
    assert.equal(0, count_items())
    assert.equal(0, pool:stats().in_use)
  end)

  it("rolls back and returns nil, err when fn does", function()
    local res, err = pool:transaction(function(conn)
      assert(conn:query("insert into tx_items values (1)"))
      return nil, "not today"
    end)
    assert.same({ nil, "not today" }, { res, err })
    assert.equal(0, count_items())
  end)

  it("rolls back a transaction fn let fail and then returned from normally", function()
    local res, err = pool:transaction(function(conn)
      assert(conn:query("insert into tx_items values (1)"))
      conn:query("select * from tx_no_such_table") -- error ignored: the transaction is aborted
      return true
    end)
    assert.is_nil(res)
    assert.matches("SQLSTATE 42P01", err, 1, true)
    assert.equal(0, count_items())
  end)

  it("sends the isolation level and read-only mode to the server", function()
    local iso, ro = pool:transaction(function(conn)
      local r = assert(conn:query("select current_setting('transaction_isolation') as i, "
                                  .. "current_setting('transaction_read_only') as ro"))
      return r[1].i, r[1].ro
    end, { isolation = "repeatable read", read_only = true })
    assert.same({ "repeatable read", "on" }, { iso, ro })
    assert.equal("serializable", pool:transaction(function(conn)
      return assert(conn:query("show transaction_isolation"))[1].transaction_isolation
    end, { isolation = "serializable" }))
  end)

  it("read_only rejects a write", function()
    local res, err = pool:transaction(function(conn)
      return conn:query("insert into tx_items values (1)")
    end, { read_only = true })
    assert.is_nil(res)
    assert.matches("read-only transaction (SQLSTATE 25006)", err, 1, true)
    assert.equal(0, count_items())
  end)

  it("raises on bad options before taking a connection", function()
    local before = pool:stats().acquire_total
    assert.has_error(function() pool:transaction(function() end, { isolation = "snapshot" }) end)
    assert.has_error(function() pool:transaction(function() end, { retries = -1 }) end)
    assert.has_error(function() pool:transaction(function() end, { isolaton = "serializable" }) end)
    assert.has_error(function() pool:transaction("not a function") end)
    assert.equal(before, pool:stats().acquire_total)
  end)

  it("runs on a connection the caller holds (conn:transaction)", function()
    local conn = assert(pool:acquire())
    assert.equal(1, conn:transaction(function(c)
      assert(c:query("insert into tx_items values (1)"))
      return 1
    end))
    assert.is_nil(conn:transaction(function(c)
      assert(c:query("insert into tx_items values (2)"))
      return nil, "no"
    end))
    conn:release()
    local rows = H.admin("select id from tx_items")
    assert.same({ 1, 1 }, { #rows, rows[1].id })
  end)

  -- Write skew: two doctors on call, each transaction takes one off call if
  -- at least two are on.  Two coroutines drive two serializable transactions
  -- on two connections through the same steps: both read, then A writes
  -- and commits, then B writes -- so B's transaction is the one the server
  -- must cancel with 40001 (at its UPDATE or at its COMMIT).
  local function write_skew(opts)
    H.admin("delete from tx_doctors")
    H.admin("insert into tx_doctors values (1, true), (2, true)")
    local function doctor(id)
      return coroutine.create(function()
        return pool:transaction(function(conn, attempt)
          local rows, err = conn:query("select count(*) as n from tx_doctors where on_call")
          if not rows then return nil, err end
          coroutine.yield("read")
          if rows[1].n >= 2 then
            local ok, uerr = conn:query("update tx_doctors set on_call = false where id = $1", id)
            if not ok then return nil, uerr end
          end
          coroutine.yield("wrote")
          return attempt
        end, opts)
      end)
    end
    local a, b = doctor(1), doctor(2)
    local function step(co, want)
      local res = { coroutine.resume(co) }
      assert(res[1], res[2])
      if want then assert.equal(want, res[2]) end
      return res
    end
    step(a, "read")
    step(b, "read")
    step(a, "wrote")
    local ra = step(a)
    assert.equal("dead", coroutine.status(a))
    local rb
    for _ = 1, 20 do -- B: its first attempt fails; a retry reads again and writes nothing
      rb = step(b)
      if coroutine.status(b) == "dead" then break end
    end
    assert.equal("dead", coroutine.status(b))
    return { unpack(ra, 2, 3) }, { unpack(rb, 2, 3) },
           H.admin("select count(*) as n from tx_doctors where on_call")[1].n
  end

  it("retries a serialization failure of two concurrent serializable transactions", function()
    local retries_before = pool:stats().tx_retries_total
    local ra, rb, on_call = write_skew({ isolation = "serializable", retries = 3 })
    assert.same({ 1 }, ra) -- A: committed on its first attempt
    assert.same({ 2 }, rb) -- B: committed on its second
    assert.equal(1, on_call)
    local s = pool:stats()
    assert.equal(retries_before + 1, s.tx_retries_total)
    assert.same({ 0, 0 }, { s.in_use, s.waiting })
  end)

  it("without retries, returns the serialization failure naming the SQLSTATE and one attempt", function()
    local retries_before = pool:stats().tx_retries_total
    local ra, rb, on_call = write_skew({ isolation = "serializable" })
    assert.same({ 1 }, ra)
    assert.is_nil(rb[1])
    assert.matches('^pool "tx": transaction failed after 1 attempt: .*%(SQLSTATE 40001%)$', rb[2])
    assert.equal(1, on_call) -- only A's write
    assert.equal(retries_before, pool:stats().tx_retries_total)
    assert.equal(0, pool:stats().in_use)
  end)
end)
