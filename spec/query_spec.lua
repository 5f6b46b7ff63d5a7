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
    assert.same({ n = 42, s = "hé llo", b = true, f = 0.5 }, rows[1])
    assert.same({ "n", "s", "b", "f" }, rows.columns)
  end)

  it("returns SQL NULL as nil, and as the pool's null value when given", function()
    local rows = assert(pool:query("select null::int as a, $1::text as b, 1 as c", nil))
    assert.is_nil(rows[1].a)
    assert.is_nil(rows[1].b)
    assert.equal(1, rows[1].c)
    local p2 = rt:pool("q_null", { max = 1, null = poolrt.null })
    local r2 = assert(p2:query("select null::int as a"))
    assert.equal(poolrt.null, r2[1].a)
  end)

  it("returns many rows in order and the affected count of commands", function()
    local rows = assert(pool:query("select g from generate_series(1, 1000) g"))
    assert.equal(1000, #rows)
    assert.equal(1000, rows[1000].g)
    assert(pool:query("delete from q_items"))
    local ins = assert(pool:query("insert into q_items select g, 'x' from generate_series(1, 3) g"))
    assert.equal(3, ins.affected)
  end)

  it("reports a query error with the pool name and SQLSTATE, and the pool keeps serving", function()
    local rows, err = pool:query("select * from no_such_table")
    assert.is_nil(rows)
    assert.equal('pool "q": relation "no_such_table" does not exist (SQLSTATE 42P01)', err)
    assert.equal(1, assert(pool:query("select 1 as x"))[1].x)
    assert.equal(0, rt:stats().q.in_use)
  end)

  it("prepares each distinct SQL text once per connection and reuses it", function()
    local p = rt:pool("q_prep", { max = 1 })
    for i = 1, 5 do assert(p:query("select $1::int as v", i)) end
    assert(p:query("select $1::int * 2 as v", 1))
    local rows = assert(p:query("select count(*) as n from pg_prepared_statements"))
    -- two texts above, plus this one
    assert.equal(3, rows[1].n)
  end)

  it("runs unprepared with prepare = false and with exec_simple", function()
    local p = rt:pool("q_unprep", { max = 1, prepare = false })
    assert.equal(7, assert(p:query("select $1::int as v", 7))[1].v)
    assert.equal(0, assert(p:query("select count(*) as n from pg_prepared_statements"))[1].n)
    -- the simple protocol runs several statements in one call
    local rows = assert(pool:exec_simple("select 1 as a; select 2 as b"))
    assert.equal(2, rows[1].b)
  end)

  it("re-prepares when the server forgot its statements", function()
    local p = rt:pool("q_dealloc", { max = 1 })
    assert(p:query("select $1::int as v", 1))
    assert(p:exec_simple("deallocate all"))
    assert.equal(2, assert(p:query("select $1::int as v", 2))[1].v)
  end)

  it("evicts the least recently used statement when the cache is full", function()
    local p = rt:pool("q_small", { max = 1, stmt_cache = 2 })
    for i = 1, 5 do assert(p:query("select " .. i .. " as v")) end
    local n = assert(p:query("select count(*) as n from pg_prepared_statements"))[1].n
    assert.equal(2, n)
  end)

  it("raises on programming errors", function()
    assert.has_error(function() pool:query(42) end, "poolrt: sql must be a string")
    assert.has_error(function() pool:query("select $1", { a = 1 }) end)
    assert.has_error(function() rt:pool("bad_opts", { maxx = 1 }) end, 'poolrt: unknown pool option "maxx"')
    assert.has_error(function() rt:pool("bad_max", { max = -1 }) end, 'poolrt: pool "bad_max": max must be >= 1')
  end)
end)

describe("typed rows and parameters", function()
  local rt, pool, np, raw
  setup(function()
    rt = H.runtime()
    pool = rt:pool("ty", { max = 2 })
    np = rt:pool("ty_null", { max = 1, null = poolrt.null })
    raw = rt:pool("ty_raw", { max = 1, decode = false })
  end)
  teardown(function() rt:close() end)

  local function one(p, sql, ...) return assert(p:query(sql, ...))[1] end

  it("decodes integers and floats to numbers, NaN and infinities included", function()
    local r = one(pool, [[select (-32768)::int2 as s, 2147483647::int4 as i, 42::oid as o, 1.5::float4 as f4,
      0.1::float8 as f8, 'NaN'::float8 as nan, 'Infinity'::float8 as inf, '-Infinity'::float4 as ninf]])
    assert.same({ s = -32768, i = 2147483647, o = 42, f4 = 1.5, f8 = 0.1, inf = math.huge, ninf = -math.huge },
                { s = r.s, i = r.i, o = r.o, f4 = r.f4, f8 = r.f8, inf = r.inf, ninf = r.ninf })
    assert.is_number(r.nan)
    assert.is_true(r.nan ~= r.nan)
  end)

  it("returns int8 as a number while a double holds it exactly, else as its decimal string", function()
    local r = one(pool, [[select 9007199254740992::int8 as max, -9007199254740992::int8 as min,
      9007199254740993::int8 as over, -9007199254740993::int8 as under, 9223372036854775807::int8 as top, 5::int8 as small]])
    assert.equal(2^53, r.max)
    assert.equal(-2^53, r.min)
    assert.equal("9007199254740993", r.over)
    assert.equal("-9007199254740993", r.under)
    assert.equal("9223372036854775807", r.top)
    assert.equal(5, r.small)
    -- both ends of int8, in a row, in an array, and sent back as parameters
    local b = one(pool, [[select (-9223372036854775807 - 1)::int8 as bottom,
      array[-9223372036854775807 - 1, 9223372036854775807, null, 0]::int8[] as arr]])
    assert.equal("-9223372036854775808", b.bottom)
    assert.same({ "-9223372036854775808", "9223372036854775807", nil, 0, n = 4 }, b.arr)
    local back = one(pool, "select $1::int8 - 1 as a, $2::int8[] as arr", "9223372036854775807", b.arr)
    assert.equal("9223372036854775806", back.a)
    assert.same(b.arr, back.arr)
  end)

  it("returns numeric as a string (lossless) and bool as a boolean", function()
    local r = one(pool, "select 12345678901234567890.000000001::numeric as n, true as t, false as f, 'NaN'::numeric as nn")
    assert.equal("12345678901234567890.000000001", r.n)
    assert.equal("NaN", r.nn)
    assert.is_true(r.t)
    assert.is_false(r.f)
  end)

  it("decodes json and jsonb into Lua values; JSON null is nil or the pool's null", function()
    local sql = [[select '{"a":1,"b":[1,"x",true],"c":{"d":{"e":"deep"}}}'::json as obj, '[1,2,3]'::jsonb as arr,
      '"s"'::json as str, 'null'::jsonb as jnull, '{"k":null,"l":[1,null,3]}'::jsonb as holes]]
    local r = one(pool, sql)
    assert.same({ a = 1, b = { 1, "x", true }, c = { d = { e = "deep" } } }, r.obj)
    assert.same({ 1, 2, 3 }, r.arr)
    assert.equal("s", r.str)
    assert.is_nil(r.jnull)
    assert.same({ l = { 1, nil, 3, n = 3 } }, r.holes)
    local n = one(np, sql)
    assert.equal(poolrt.null, n.jnull)
    assert.same({ k = poolrt.null, l = { 1, poolrt.null, 3 } }, n.holes)
  end)

  it("returns bytea as its raw bytes, zero bytes included, in hex and escape output", function()
    local bytes = "\0\1\255\\\"x\0\\123\\\\"
    local r = one(pool, "select $1::bytea as b, ''::bytea as e", "\\x" .. ("%02x"):rep(#bytes):format(bytes:byte(1, -1)))
    assert.equal(bytes, r.b)
    assert.equal("", r.e)
    local c = assert(pool:acquire())
    assert(c:query("set bytea_output = 'escape'"))
    assert.equal(bytes, assert(c:query("select $1::bytea as b", "\\x00 01 ff 5c 22 78 00 5c 31 32 33 5c 5c"))[1].b)
    assert(c:query("reset bytea_output"))
    c:release()
  end)

  it("decodes one-dimensional arrays, NULL elements, quoting and escapes", function()
    local r = one(pool, [[select array[1, null, 3]::int2[] as i2, array[1, 2]::int4[] as i4,
      array[9007199254740993, 1]::int8[] as i8, array[1.5, 'NaN']::float4[] as f4, array[0.25, '-Infinity']::float8[] as f8,
      array[true, null, false] as b, array['a,b', 'q"x', 'back\slash', 'NULL', null, '', ' sp ', '{}']::text[] as t,
      array['v']::varchar[] as v, array[1.10, null]::numeric[] as n, array['{"a":null}'::json, null] as j,
      array['[1]'::jsonb] as jb, '{}'::int[] as empty]])
    assert.same({ 1, nil, 3, n = 3 }, r.i2)
    assert.same({ 1, 2 }, r.i4)
    assert.same({ "9007199254740993", 1 }, r.i8)
    assert.equal(1.5, r.f4[1])
    assert.is_true(r.f4[2] ~= r.f4[2])
    assert.same({ 0.25, -math.huge }, r.f8)
    assert.same({ true, nil, false, n = 3 }, r.b)
    assert.same({ "a,b", 'q"x', "back\\slash", "NULL", nil, "", " sp ", "{}", n = 8 }, r.t)
    assert.same({ "v" }, r.v)
    assert.same({ "1.10", nil, n = 2 }, r.n)
    assert.same({ {}, nil, n = 2 }, r.j)
    assert.same({ { 1 } }, r.jb)
    assert.same({}, r.empty)
    local n = one(np, "select array[1, null]::int[] as a, array[null, 'x'] as t")
    assert.same({ 1, poolrt.null }, n.a)
    assert.same({ poolrt.null, "x" }, n.t)
  end)

  it("returns multi-dimensional arrays as nested arrays, and drops lower bounds", function()
    local r = one(pool, "select '{{1,2},{3,4}}'::int[] as m, '[0:1]={7,8}'::int[] as shifted, '{{\"a\",NULL}}'::text[] as t")
    assert.same({ { 1, 2 }, { 3, 4 } }, r.m)
    assert.same({ 7, 8 }, r.shifted)
    assert.same({ { "a", nil, n = 2 } }, r.t)
  end)

  it("returns SQL NULL of any type as nil, or as the pool's null", function()
    local sql = "select null::int as i, null::bool as b, null::json as j, null::int[] as a, null::bytea as y"
    assert.same({}, one(pool, sql))
    assert.same({ i = poolrt.null, b = poolrt.null, j = poolrt.null, a = poolrt.null, y = poolrt.null }, one(np, sql))
  end)

  it("keeps PostgreSQL's text with decode = false", function()
    local r = one(raw, [[select 42 as i, true as b, '{"a":1}'::json as j, array[1,null] as a, '\x00'::bytea as y,
      9007199254740993::int8 as big]])
    assert.same({ i = "42", b = "t", j = '{"a":1}', a = "{1,NULL}", y = "\\x00", big = "9007199254740993" }, r)
  end)

  it("sends Lua arrays as PostgreSQL arrays, quoting and escaping their strings", function()
    local hostile = { "a,b", 'q"x', "back\\slash", "NULL", "", " sp ", "{x}", "é" }
    local r = one(pool, "select $1::int[] as i, $2::text[] as t, $3::bool[] as b, $4::float8[] as f, $5::int[] as m, $6::int[] as e",
                  { 1, 2, 3 }, hostile, { true, false }, { 0.5, math.huge, -math.huge }, { { 1, 2 }, { 3, 4 } }, {})
    assert.same({ 1, 2, 3 }, r.i)
    assert.same(hostile, r.t)
    assert.same({ true, false }, r.b)
    assert.same({ 0.5, math.huge, -math.huge }, r.f)
    assert.same({ { 1, 2 }, { 3, 4 } }, r.m)
    assert.same({}, r.e)
    -- NULL elements: poolrt.null, or holes up to the `n` a decoded array carries
    local nulls = one(pool, "select $1::text[] as a, $2::int[] as b", { "x", poolrt.null }, { 1, nil, 3, n = 4 })
    assert.same({ "x", nil, n = 2 }, nulls.a)
    assert.same({ 1, nil, 3, nil, n = 4 }, nulls.b)
    -- a decoded array goes back as it came
    local back = one(pool, "select $1::int8[] as a", one(pool, "select array[9007199254740993, 2]::int8[] as a").a)
    assert.same({ "9007199254740993", 2 }, back.a)
  end)

  it("infers array parameter types without casts, e.g. = any($1)", function()
    local c = assert(pool:acquire())
    assert(c:query("create temporary table ty_any (id int, name text)"))
    assert(c:query("insert into ty_any select g, 'n' || g from generate_series(1, 5) g"))
    local rows = assert(c:query("select id from ty_any where id = any($1) order by id", { 2, 4, 9 }))
    assert.same({ { id = 2 }, { id = 4 } }, { rows[1], rows[2] })
    assert.equal(2, #rows)
    rows = assert(c:query("select id from ty_any where name = any($1) order by id", { "n1", "n5" }))
    assert.same({ 1, 5 }, { rows[1].id, rows[2].id })
    c:release()
  end)

  it("encodes scalar parameters without casts", function()
    local r = one(pool, "select $1::float8 as nan, $2::float8 as inf, $3::int8 as big, $4::bool as b, $5::int as n",
                  0 / 0, -math.huge, 2^53, false, nil)
    assert.is_true(r.nan ~= r.nan)
    assert.equal(-math.huge, r.inf)
    assert.equal(2^53, r.big)
    assert.is_false(r.b)
    assert.is_nil(r.n)
  end)

  it("raises a programming error for a table that is not an array", function()
    assert.has_error(function() pool:query("select $1::int[]", { 1, 2, x = 3 }) end,
      "poolrt: query parameter: a table that is not an array (key x); pass arrays (keys 1..n) or encode it yourself, e.g. as JSON")
    assert.has_error(function() pool:query("select $1::int[]", { { a = 1 } }) end)
    assert.has_error(function() pool:query("select $1::int[]", { print }) end)
    assert.equal(0, rt:stats().ty.in_use)
  end)

  it("builds the same rows in rt:spawn threads as in the host", function()
    local W = require "spec.support.query_workers"
    local host = one(pool, W.SQL)
    assert.same({ i = 7, big = "9007199254740993", dec = "1.25", b = true, j = { a = { 1, nil, { b = {} }, n = 3 } },
                  raw = "\0\255", arr = { 1, nil, 3, n = 3 }, strs = { "a,b", nil, n = 2 }, grid = { { 1, 2 }, { 3, 4 } } },
                host)
    local res = assert(rt:spawn(2, "spec.support.query_workers", "typed_row", "ty"))
    assert.same(host, res[1])
    assert.same(host, res[2])
  end)
end)
