-- conn:copy_in / pool:copy_in (COPY ... FROM STDIN) against the real server.
local poolrt = require "poolrt"
local H = require "spec.helper"

describe("copy_in", function()
  local rt, pool
  setup(function()
    rt = H.runtime()
    pool = rt:pool("cp", { max = 2 })
    H.admin("drop table if exists cp_t, cp_types, cp_one")
    H.admin("create table cp_t (id int primary key, s text)")
    H.admin([[create table cp_types (id int, i int4, big int8, f float8, b bool, ia int[], ta text[],
              j jsonb, y bytea, n numeric)]])
    H.admin("create table cp_one (s text)")
  end)
  before_each(function() H.admin("truncate cp_t, cp_types, cp_one") end)
  teardown(function() rt:close() H.admin("drop table if exists cp_t, cp_types, cp_one") end)

  local function count(tbl) return H.admin("select count(*) as n from " .. tbl)[1].n end

  it("round-trips hostile strings exactly, and tells NULL from the empty string", function()
    local hostile = {
      "tab\there", "new\nline", "cr\rlf\r\n", "back\\slash", "\\N", "\\.", "\\", "ends with \\",
      'double "quotes"', "single 'quotes'", "é ☃ 𝄞 中文", "", "{a,b}", " lead and trail ",
      "ctl \b\f\v\1\31\127", "NULL", "\\t not a tab", "a\t\\N\tb\n\\.\n",
    }
    local rows = {}
    for i, s in ipairs(hostile) do rows[i] = { i, s } end
    rows[#rows + 1] = { #hostile + 1, nil }
    rows[#rows + 1] = { #hostile + 2 } -- a trailing hole is NULL as well
    local conn = assert(pool:acquire())
    assert.equal(#rows, assert(conn:copy_in("copy cp_t (id, s) from stdin", rows)))
    local got = assert(conn:query("select id, s, s is null as isnull from cp_t order by id"))
    conn:release()
    assert.equal(#rows, #got)
    for i, s in ipairs(hostile) do
      assert.equal(s, got[i].s)
      assert.is_false(got[i].isnull)
    end
    assert.is_true(got[#hostile + 1].isnull)
    assert.is_true(got[#hostile + 2].isnull)
    -- "\." alone on a line is COPY's end marker in the protocol's old
    -- dialect; as a value it must arrive as the two characters
    assert.equal(2, assert(pool:copy_in("copy cp_one from stdin", { { "\\." }, { "." } })))
    local one = H.admin("select s from cp_one order by s")
    assert.same({ ".", "\\." }, { one[1].s, one[2].s })
  end)

  it("writes the pool's null and a light userdata NULL as SQL NULL", function()
    local np = rt:pool("cp_null", { max = 1, null = poolrt.null })
    local cjson_null = require("cjson").null
    assert.equal(3, assert(np:copy_in("copy cp_t from stdin", { { 1, poolrt.null }, { 2, "x" }, { 3, cjson_null } })))
    local got = H.admin("select id from cp_t where s is null order by id")
    assert.same({ 1, 3 }, { got[1].id, got[2].id })
    assert.equal(2, #got)
  end)

  it("loads 100k rows from an iterator and returns the server's row count", function()
    local i, n = 0, 100000
    local copied = assert(pool:copy_in("copy cp_t (id, s) from stdin", function()
      i = i + 1
      if i <= n then return { i, "row " .. i } end
    end))
    assert.equal(n, copied)
    local r = H.admin("select count(*) as c, sum(id) as total, max(s) as top from cp_t")[1]
    assert.same({ c = n, total = n * (n + 1) / 2, top = "row 99999" }, r)
    assert.equal(0, pool:stats().in_use)
  end)

  it("round-trips ints, int8 bounds, NaN and infinities, booleans, arrays, JSON, bytea and numeric", function()
    local bytes = "\0\1\255\\\t\n\0"
    local hex = "\\x" .. ("%02x"):rep(#bytes):format(bytes:byte(1, -1))
    local rows = {
      { 1, 2147483647, "9223372036854775807", 0.1, true, { 1, poolrt.null, 3 }, { "a,b", 'q"', "t\tab", "" },
        '{"a":[1,{"b":null}],"c":"d\\te"}', hex, "12345678901234567890.000000001" },
      { 2, -2147483648, "-9223372036854775808", 0 / 0, false, {}, { "NULL", poolrt.null }, "[]", "\\x", "NaN" },
      { 3, 0, 2 ^ 53, math.huge, nil, { 1, nil, 3, n = 3 }, {}, "null", nil, nil },
      { 4, -1, -2 ^ 53, -math.huge, true, nil, nil, nil, nil, "-0.5" },
      { 5, 7, 5, 1e300, false, { -1 }, { "é" }, '"s"', nil, "0" },
      { 6, 8, 6, -1.5e-300, true, nil, nil, nil, nil, nil },
    }
    assert.equal(#rows, assert(pool:copy_in("copy cp_types from stdin", rows)))
    local got = assert(pool:query("select * from cp_types order by id"))
    assert.same({ id = 1, i = 2147483647, big = "9223372036854775807", f = 0.1, b = true, ia = { 1, nil, 3, n = 3 },
                  ta = { "a,b", 'q"', "t\tab", "" }, j = { a = { 1, {} }, c = "d\te" }, y = bytes,
                  n = "12345678901234567890.000000001" }, got[1])
    assert.is_true(got[2].f ~= got[2].f)
    got[2].f = nil
    assert.same({ id = 2, i = -2147483648, big = "-9223372036854775808", b = false, ia = {}, ta = { "NULL", nil, n = 2 },
                  j = {}, y = "", n = "NaN" }, got[2])
    assert.same({ id = 3, i = 0, big = 2 ^ 53, f = math.huge, ia = { 1, nil, 3, n = 3 }, ta = {} }, got[3])
    assert.same({ id = 4, i = -1, big = -2 ^ 53, f = -math.huge, b = true, n = "-0.5" }, got[4])
    assert.same({ id = 5, i = 7, big = 5, f = 1e300, b = false, ia = { -1 }, ta = { "é" }, j = "s", n = "0" }, got[5])
    assert.equal(-1.5e-300, got[6].f) -- %.17g keeps every bit
  end)

  it("reports a server error mid-stream as nil, err, keeps nothing, and the connection stays usable", function()
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    local i = 0
    local n, err = conn:copy_in("copy cp_t from stdin", function()
      i = i + 1
      if i <= 50000 then return { i == 30000 and 7 or i, "x" } end -- 7 again at row 30000
    end)
    assert.is_nil(n)
    assert.matches('^pool "cp": duplicate key value violates unique constraint "cp_t_pkey" %(SQLSTATE 23505%)$', err)
    assert.equal("23505", conn:sqlstate())
    assert.equal(50001, i) -- every row was read: the server says so only at the end
    assert.equal(1, assert(conn:query("select 1 as one"))[1].one)
    assert.equal(pid, conn:backend_pid())
    conn:release()
    assert.equal(0, count("cp_t"))
    -- a bad value is the server's error too
    local n2, err2 = pool:copy_in("copy cp_t from stdin", { { 1, "a" }, { "x", "b" } })
    assert.is_nil(n2)
    assert.matches('invalid input syntax for type integer: "x"', err2, 1, true)
    assert.equal(0, count("cp_t"))
    assert.equal(0, pool:stats().connections_closed_total.broken)
  end)

  it("aborts the COPY when the iterator raises, re-raises, and leaves the connection usable", function()
    local conn = assert(pool:acquire())
    local pid, i = conn:backend_pid(), 0
    assert.has_error(function()
      conn:copy_in("copy cp_t from stdin", function()
        i = i + 1
        if i > 20000 then error("iterator failed", 0) end
        return { i, "x" }
      end)
    end, "iterator failed")
    assert.equal(0, count("cp_t"))
    assert.equal(1, assert(conn:query("select 1 as one"))[1].one)
    assert.equal(pid, conn:backend_pid())
    -- inside a transaction, the transaction survives the error as failed and rolls back
    assert.has_error(function()
      conn:transaction(function(c)
        assert(c:query("insert into cp_t values (1, 'kept?')"))
        c:copy_in("copy cp_t from stdin", { { 2, "y" }, { 3, print } })
      end)
    end, "poolrt: copy_in: a value of type function (want string, number, boolean, nil or an array)")
    assert.equal(0, count("cp_t"))
    conn:release()
    -- pool:copy_in releases the connection whatever happens
    assert.has_error(function() pool:copy_in("copy cp_t from stdin", function() error("boom", 0) end) end, "boom")
    assert.equal(0, pool:stats().in_use)
    assert.equal(0, pool:stats().connections_closed_total.broken)
  end)

  it("raises on rows wider than the COPY's columns and on statements that are not COPY FROM STDIN", function()
    assert.has_error(function() pool:copy_in("copy cp_t (id) from stdin", { { 1 }, { 2, "extra" } }) end,
                     "poolrt: copy_in: row 2 has more than the 1 columns the COPY takes")
    assert.has_error(function() pool:copy_in("copy cp_t from stdin", { { 1, "a" }, "not a row" }) end,
                     "poolrt: copy_in: row 2 is a string, not an array")
    assert.has_error(function() pool:copy_in("select 1", {}) end,
                     'poolrt: pool "cp": copy_in: the statement ran, but it is not COPY ... FROM STDIN')
    assert.has_error(function() pool:copy_in("copy cp_t from stdin (format binary)", {}) end,
                     'poolrt: pool "cp": copy_in: COPY in binary format is not supported (text only)')
    assert.equal(0, count("cp_t"))
    local n, err = pool:copy_in("copy cp_no_such_table from stdin", {})
    assert.is_nil(n)
    assert.equal('pool "cp": relation "cp_no_such_table" does not exist (SQLSTATE 42P01)', err)
    assert.equal(0, assert(pool:copy_in("copy cp_t from stdin", {})))
    assert.equal(0, pool:stats().in_use)
  end)

  it("cancels a COPY that runs past query_timeout, and the connection stays usable", function()
    H.admin("drop table if exists cp_slow")
    H.admin("create table cp_slow (v int)")
    H.admin([[create or replace function cp_slow_row() returns trigger language plpgsql as
              $$ begin perform pg_sleep(5); return new; end $$]])
    H.admin("create trigger cp_slow before insert on cp_slow for each row execute function cp_slow_row()")
    local tp = rt:pool("cp_timeout", { max = 1, query_timeout = 0.3 })
    local conn = assert(tp:acquire())
    local t0 = poolrt.now()
    local n, err = conn:copy_in("copy cp_slow from stdin", { { 1 } })
    assert.is_nil(n)
    assert.equal('pool "cp_timeout": query timed out after 0.300s and was cancelled', err)
    assert.is_true(poolrt.now() - t0 < 3)
    assert.equal(1, assert(conn:query("select 1 as one"))[1].one)
    conn:release()
    assert.equal(0, tp:stats().connections_closed_total.broken)
    H.admin("drop table cp_slow")
    H.admin("drop function cp_slow_row()")
  end)

  it("pool:query of a COPY FROM STDIN fails instead of hanging, and its connection is closed", function()
    local before = pool:stats().connections_closed_total.broken
    local rows, err = pool:query("copy cp_t from stdin")
    assert.is_nil(rows)
    assert.equal('pool "cp": COPY FROM STDIN / TO STDOUT needs conn:copy_in (prt_copy_begin); the connection is closed', err)
    assert.equal(before + 1, pool:stats().connections_closed_total.broken)
    assert.equal(1, assert(pool:query("select 1 as one"))[1].one)
  end)
end)
