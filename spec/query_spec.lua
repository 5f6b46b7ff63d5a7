local poolrt = require "poolrt"
local H = require "spec.helper"

describe("pool:query", function()
  local rt, pool
  setup(function()
    rt = H.runtime()
    pool = rt:pool("q", { max = 2 })
    assert(pool:query("create table if not exists q_items (id int primary key, name text)"))
  end)
  teardown(function() H.admin("drop table if exists q_items") rt:close() end)

  it("round-trips parameters and returns rows keyed by column name", function()
    local rows = assert(pool:query("select $1::int + 1 as n, $2::text as s, $3::bool as b, $4::float8 as f",
                                   41, "hé llo", true, 0.5))
    assert.equal(1, #rows)
    assert.same({ n = "42", s = "hé llo", b = "t", f = "0.5" }, rows[1])
    assert.same({ "n", "s", "b", "f" }, rows.columns)
  end)

  it("returns SQL NULL as nil, and as the pool's null value when given", function()
    local rows = assert(pool:query("select null::int as a, $1::text as b, 1 as c", nil))
    assert.is_nil(rows[1].a)
    assert.is_nil(rows[1].b)
    assert.equal("1", rows[1].c)
    local p2 = rt:pool("q_null", { max = 1, null = poolrt.null })
    local r2 = assert(p2:query("select null::int as a"))
    assert.equal(poolrt.null, r2[1].a)
  end)

  it("returns many rows in order and the affected count of commands", function()
    local rows = assert(pool:query("select g from generate_series(1, 1000) g"))
    assert.equal(1000, #rows)
    assert.equal("1000", rows[1000].g)
    assert(pool:query("delete from q_items"))
    local ins = assert(pool:query("insert into q_items select g, 'x' from generate_series(1, 3) g"))
    assert.equal(3, ins.affected)
  end)

  it("reports a query error with the pool name and SQLSTATE, and the pool keeps serving", function()
    local rows, err = pool:query("select * from no_such_table")
    assert.is_nil(rows)
    assert.equal('pool "q": relation "no_such_table" does not exist (SQLSTATE 42P01)', err)
    assert.equal("1", assert(pool:query("select 1 as x"))[1].x)
    assert.equal(0, rt:stats().q.in_use)
  end)

  it("prepares each distinct SQL text once per connection and reuses it", function()
    local p = rt:pool("q_prep", { max = 1 })
    for i = 1, 5 do assert(p:query("select $1::int as v", i)) end
    assert(p:query("select $1::int * 2 as v", 1))
    local rows = assert(p:query("select count(*) as n from pg_prepared_statements"))
    -- two texts above, plus this one
    assert.equal("3", rows[1].n)
  end)

  it("runs unprepared with prepare = false and with exec_simple", function()
    local p = rt:pool("q_unprep", { max = 1, prepare = false })
    assert.equal("7", assert(p:query("select $1::int as v", 7))[1].v)
    assert.equal("0", assert(p:query("select count(*) as n from pg_prepared_statements"))[1].n)
    -- the simple protocol runs several statements in one call
    local rows = assert(pool:exec_simple("select 1 as a; select 2 as b"))
    assert.equal("2", rows[1].b)
  end)

  it("re-prepares when the server forgot its statements", function()
    local p = rt:pool("q_dealloc", { max = 1 })
    assert(p:query("select $1::int as v", 1))
    assert(p:exec_simple("deallocate all"))
    assert.equal("2", assert(p:query("select $1::int as v", 2))[1].v)
  end)

  it("evicts the least recently used statement when the cache is full", function()
    local p = rt:pool("q_small", { max = 1, stmt_cache = 2 })
    for i = 1, 5 do assert(p:query("select " .. i .. " as v")) end
    local n = assert(p:query("select count(*) as n from pg_prepared_statements"))[1].n
    assert.equal("2", n)
  end)

  it("raises on programming errors", function()
    assert.has_error(function() pool:query(42) end, "poolrt: sql must be a string")
    assert.has_error(function() pool:query("select $1", {}) end)
    assert.has_error(function() rt:pool("bad_opts", { maxx = 1 }) end, 'poolrt: unknown pool option "maxx"')
    assert.has_error(function() rt:pool("bad_max", { max = -1 }) end, 'poolrt: pool "bad_max": max must be >= 1')
  end)
end)
