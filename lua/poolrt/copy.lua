-- poolrt.copy -- bulk load: conn:copy_in(sql, rows) and pool:copy_in(sql,
-- rows) of poolrt.lua, over prt_copy_begin/put/end (src/copy.c).
--
--   conn:copy_in("copy items(id, name) from stdin", function() ... end)
--
-- `rows` is a function returning the next row or nil at the end, or a Lua
-- array of rows.  A row is a Lua array with one value per column the COPY
-- names: the server says how many (COPY's column count), so nil holes
-- anywhere -- trailing ones too -- are NULL, and a row with more values
-- raises.  Values are written in COPY's text format:
--
--   nil, the pool's null, ngx.null/cjson.null   \N (SQL NULL)
--   string        as is, with backslash, tab, newline and carriage return
--                 escaped ("\N" is the two characters, "" the empty string)
--   number        integers without exponent, other floats with 17 digits,
--                 NaN, Infinity, -Infinity (decode.lua's D.number)
--   boolean       t / f
--   Lua array     a PostgreSQL array literal (as for query parameters)
--   bytea         pass its hex input text, "\\x" .. hex, as for parameters
--
-- Text format only: COPY ... (format csv) or (format binary) would read
-- these lines wrongly (binary is refused; csv cannot be told apart).
--
-- Rows go to the server in chunks of CHUNK bytes.  Returns the row count
-- from the server's command tag, or nil, err with the server's error (a
-- duplicate key, a bad value: the server reports it when the copy ends, and
-- nothing of the copy stays).  If `rows` raises, or a value cannot be
-- written, the copy is aborted (nothing stays), the connection is left
-- usable, and the error is re-raised.
local ffi = require "ffi"
local D = require "poolrt.decode"

local type, find, gsub, concat = type, string.find, string.gsub, table.concat
local number, array, is_null = D.number, D.array, D.is_null

local M = { CHUNK = 65536 }

local ERRLEN = 512
local errbuf = ffi.new("char[?]", ERRLEN)
local ncols_out = ffi.new("int[1]")
local rows_out = ffi.new("long long[1]")

local ESC = { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }
local SPECIAL = "[\\\t\n\r]"

local function text(s)
  if find(s, SPECIAL) then return (gsub(s, SPECIAL, ESC)) end
  return s
end

-- The COPY text of one value; raises for a value that has no SQL spelling.
local function field(v, null)
  local t = type(v)
  if t == "string" then return text(v) end
  if t == "number" then return number(v) end
  if is_null(v, null) then return "\\N" end
  if t == "boolean" then return v and "t" or "f" end
  if t == "table" then
    local s, err = array(v, null)
    if s then return text(s) end
    error("poolrt: copy_in: " .. err, 0)
  end
  error("poolrt: copy_in: a value of type " .. t .. " (want string, number, boolean, nil or an array)", 0)
end

-- A function returning the rows of `rows` one by one.
local function iterator(rows)
  if type(rows) == "function" then return rows end
  if type(rows) ~= "table" then error("poolrt: copy_in(sql, rows): rows must be a function or an array of rows", 0) end
  local i = 0
  return function() i = i + 1 return rows[i] end
end

-- Sends buf[1..nb] as one chunk; returns prt_copy_put's code.
local function put(C, c, buf, nb)
  local s = concat(buf, "", 1, nb)
  return C.prt_copy_put(c, s, #s, errbuf, ERRLEN)
end

-- Sends every row of `next_row` as COPY text on c, ncols values each.
-- Returns true, or nil, err, rc when sending failed.  Raises what
-- next_row raises, and on a row or value that cannot be written.
local function stream(C, c, next_row, ncols, null)
  local buf, nb, size, k = {}, 0, 0, 0
  local chunk = M.CHUNK
  while true do
    local row = next_row()
    if row == nil then break end
    k = k + 1
    if type(row) ~= "table" then error(("poolrt: copy_in: row %d is a %s, not an array"):format(k, type(row)), 0) end
    if row[ncols + 1] ~= nil or (type(row.n) == "number" and row.n > ncols) then
      error(("poolrt: copy_in: row %d has more than the %d columns the COPY takes"):format(k, ncols), 0)
    end
    for j = 1, ncols do
      local s = field(row[j], null)
      buf[nb + 1], buf[nb + 2] = s, j < ncols and "\t" or "\n"
      nb, size = nb + 2, size + #s + 1
    end
    if size >= chunk then
      local rc = put(C, c, buf, nb)
      if rc ~= 0 then return nil, ffi.string(errbuf), rc end
      nb, size = 0, 0
    end
  end
  local rc = nb > 0 and put(C, c, buf, nb) or 0
  if rc ~= 0 then return nil, ffi.string(errbuf), rc end
  return true
end

-- conn:copy_in(sql, rows) on a connection the caller holds (and keeps).
function M.run(conn, sql, rows)
  local I = require "poolrt.internal"
  local C = I.C
  local c = I.conn_ptr(conn)
  if not c then error("poolrt: copy_in on a released connection", 2) end
  if type(sql) ~= "string" then error("poolrt: copy_in(sql, rows): sql must be a string", 2) end
  local next_row = iterator(rows)
  local rc = C.prt_copy_begin(c, sql, ncols_out, errbuf, ERRLEN)
  if rc == C.PRT_EINVAL then error("poolrt: " .. ffi.string(errbuf), 2) end
  if rc ~= 0 then
    if rc == C.PRT_EBROKEN then conn.broken = true end
    return nil, ffi.string(errbuf)
  end
  local null = I.null_of(conn.pool) or require("poolrt").null
  local ok, done, err, prc = pcall(stream, C, c, next_row, ncols_out[0], null)
  if ok and not done then -- the server stopped reading: nothing to end
    if prc == C.PRT_EBROKEN then conn.broken = true end
    return nil, err
  end
  rc = C.prt_copy_end(c, not ok and "poolrt: copy_in aborted: " .. tostring(done) or nil, rows_out, errbuf, ERRLEN)
  if rc == C.PRT_EBROKEN then conn.broken = true end
  if not ok then error(done, 0) end
  if rc ~= 0 then return nil, ffi.string(errbuf) end
  return tonumber(rows_out[0])
end

-- pool:copy_in(sql, rows): the same on a connection of its own, released
-- afterwards (as broken when it broke); nil, err when none could be had.
function M.pool_run(pool, sql, rows)
  local conn, err = pool:acquire()
  if not conn then return nil, err end
  local res = { pcall(M.run, conn, sql, rows) }
  conn:release()
  if not res[1] then error(res[2], 0) end
  return res[2], res[3]
end

return M
