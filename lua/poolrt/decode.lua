-- poolrt.decode -- Lua values from PostgreSQL's text results, and PostgreSQL
-- text from Lua parameters.
--
-- Decoding is decided per column from the result's type OID (never by
-- looking at the text), once per result; each value then costs one
-- ffi.string plus, for typed columns, one decoder call:
--
--   int2, int4, oid, float4, float8   number (NaN, Infinity, -Infinity too)
--   int8                              number when |v| <= 2^53 (exact in a
--                                     double), else the decimal string
--   numeric                           string: lossless, use a decimal library
--   bool                              boolean
--   json, jsonb                       Lua tables/values through lua-cjson;
--                                     JSON null -> the pool's null, else nil
--   bytea                             the raw bytes
--   arrays of the above, text, varchar, bpchar, name
--                                     Lua arrays (multi-dimensional: nested
--                                     arrays; lower bounds are dropped, every
--                                     array starts at 1); a NULL element is the
--                                     pool's null, else a hole, and the array
--                                     then carries its length in field `n`
--   everything else                   string (PostgreSQL's text output)
--
-- JSON null never comes back as cjson.null: that light userdata cannot pass
-- rt:spawn's serializer, and would mean something else than the pool's null.
local ffi = require "ffi"

local tonumber, type, pairs, byte, sub, find, concat = tonumber, type, pairs, string.byte, string.sub, string.find, table.concat
local ffi_string = ffi.string

local D = {}

---------------------------------------------------------------------------
-- Scalars.  Every decoder is f(text, null) -> value.
---------------------------------------------------------------------------
local function num(s) return tonumber(s) end -- LuaJIT reads NaN, Infinity, -Infinity

local TWO53 = 2 ^ 53
local function int8(s)
  local n = tonumber(s)
  -- Any integer at or beyond 2^53 rounds to a double >= 2^53, so the
  -- strict test is exact; 2^53 itself is checked on the text.
  if n > -TWO53 and n < TWO53 then return n end
  if s == "9007199254740992" or s == "-9007199254740992" then return n end
  return s
end

local function bool(s) return s == "t" end

-- Built on the first bytea value: every rt:spawn thread loads this module
-- in a state of its own, and most never see a bytea.
local hexbyte
local function hex_table()
  hexbyte = {}
  for i = 0, 255 do
    hexbyte[("%02x"):format(i)], hexbyte[("%02X"):format(i)] = string.char(i), string.char(i)
  end
  return hexbyte
end
-- e is what follows a backslash: another backslash (then any digits after
-- it are literal bytes), or three octal digits.
local function octal(e)
  if byte(e, 1) == 92 then return e end
  return string.char(tonumber(e, 8))
end

-- bytea_output = 'hex' (the default since 9.0): \x then two digits a byte;
-- 'escape': \\ for a backslash and \ooo for other non-printable bytes.
local function bytea(s)
  if byte(s, 1) == 92 and byte(s, 2) == 120 then return (sub(s, 3):gsub("..", hexbyte or hex_table())) end
  return (s:gsub("\\(\\?[0-7]?[0-7]?[0-7]?)", octal))
end

local cjson, jnull
local function load_cjson()
  local ok, lib = pcall(require, "cjson")
  if not ok then
    error("poolrt: decoding a json column needs lua-cjson (apt-get install lua-cjson), or pool option decode = false", 0)
  end
  cjson = lib.new() -- a private instance: other users' settings do not leak in
  jnull = lib.null
end

-- Replaces cjson.null in t (recursively) by `null`; an array whose element
-- becomes a hole gets its length in `n`, like SQL arrays.
local function denull(t, null)
  local len
  for k, v in pairs(t) do
    if v == jnull then
      if null == nil and type(k) == "number" then len = len or #t end
      t[k] = null
    elseif type(v) == "table" then
      denull(v, null)
    end
  end
  if len then t.n = len end
end

local function json(s, null)
  if not cjson then load_cjson() end
  local v = cjson.decode(s)
  if v == jnull then return null end
  if type(v) == "table" and find(s, "null", 1, true) then denull(v, null) end
  return v
end

---------------------------------------------------------------------------
-- Arrays (PostgreSQL's array_out text: {a,"b c",NULL,{...}})
---------------------------------------------------------------------------

-- Reads the quoted element starting after the '"' at pos-1; returns its
-- unescaped text and the position after the closing quote.
local function quoted(s, pos)
  local parts, n = nil, 0
  while true do
    local a = find(s, '["\\]', pos)
    if not a then error("poolrt: malformed array text (unterminated quote)", 0) end
    if byte(s, a) == 34 then
      if not parts then return sub(s, pos, a - 1), a + 1 end
      parts[n + 1] = sub(s, pos, a - 1)
      return concat(parts), a + 1
    end
    parts = parts or {}
    parts[n + 1], parts[n + 2] = sub(s, pos, a - 1), sub(s, a + 1, a + 1)
    n = n + 2
    pos = a + 2
  end
end

-- Parses the array at s[pos] == '{'; returns the table and the position
-- after its '}'.  elem decodes one element's text (nil: keep the string).
local function parse(s, pos, elem, null)
  local t, n, holes = {}, 0, false
  pos = pos + 1
  if byte(s, pos) == 125 then return t, pos + 1 end
  while true do
    local c, v = byte(s, pos), nil
    if c == 123 then
      v, pos = parse(s, pos, elem, null)
    elseif c == 34 then
      v, pos = quoted(s, pos + 1)
      if elem then v = elem(v, null) end
    else
      local a = find(s, "[,}]", pos)
      if not a then error("poolrt: malformed array text", 0) end
      v = sub(s, pos, a - 1)
      pos = a
      -- Only an unquoted NULL is SQL NULL; the string "NULL" comes quoted.
      if v == "NULL" then v = nil elseif elem then v = elem(v, null) end
    end
    n = n + 1
    if v == nil then
      v = null
      if v == nil then holes = true end
    end
    t[n] = v
    c = byte(s, pos)
    pos = pos + 1
    if c == 125 then break end
    if c ~= 44 then error("poolrt: malformed array text", 0) end
  end
  if holes then t.n = n end
  return t, pos
end

local function array_of(elem)
  return function(s, null)
    local pos = 1
    -- Non-default lower bounds come as a prefix: [0:2]={...}
    if byte(s, 1) == 91 then pos = find(s, "=", 1, true) + 1 end
    return (parse(s, pos, elem, null))
  end
end

-- Type OIDs from pg_type.dat (stable across PostgreSQL versions).
local by_oid = {
  [21] = num, [23] = num, [26] = num, [700] = num, [701] = num, -- int2 int4 oid float4 float8
  [20] = int8, [16] = bool, [17] = bytea, [114] = json, [3802] = json,
  -- arrays: int2 int4 oid float4 float8 int8 bool bytea json jsonb
  [1005] = array_of(num), [1007] = array_of(num), [1028] = array_of(num), [1021] = array_of(num),
  [1022] = array_of(num), [1016] = array_of(int8), [1000] = array_of(bool), [1001] = array_of(bytea),
  [199] = array_of(json), [3807] = array_of(json),
  -- arrays of strings: text varchar bpchar name numeric
  [1009] = array_of(nil), [1015] = array_of(nil), [1014] = array_of(nil), [1003] = array_of(nil),
  [1231] = array_of(nil),
}
D.by_oid = by_oid

-- Tables are made at their final size (LuaJIT's table.new): a result's
-- tables then cost one allocation each instead of growing insert by
-- insert, which is most of the garbage a query makes.
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end

-- The decoders of the result being built, by column: scratch, rewritten by
-- every call (nothing in D.rows yields or re-enters it).
local decs = {}

-- Builds the rows of result r (see poolrt.lua for the shape): one decoder
-- per column, chosen from its type OID when `typed`; NULL -> `null`.
function D.rows(C, r, null, typed)
  local nt, nf = C.prt_result_ntuples(r), C.prt_result_nfields(r)
  local names = new_tab(nf, 0)
  for j = 0, nf - 1 do
    names[j + 1] = ffi_string(C.prt_result_fname(r, j))
    decs[j + 1] = typed and by_oid[C.prt_result_ftype(r, j)] or false
  end
  local rows = new_tab(nt, 2)
  rows.columns, rows.affected = names, tonumber(C.prt_result_affected(r))
  for i = 0, nt - 1 do
    local row = new_tab(0, nf)
    for j = 0, nf - 1 do
      if C.prt_result_isnull(r, i, j) == 0 then
        local v, dec = ffi_string(C.prt_result_value(r, i, j), C.prt_result_length(r, i, j)), decs[j + 1]
        if dec then v = dec(v, null) end
        row[names[j + 1]] = v
      elseif null ~= nil then
        row[names[j + 1]] = null
      end
    end
    rows[i + 1] = row
  end
  return rows
end

---------------------------------------------------------------------------
-- Parameters
---------------------------------------------------------------------------

-- PostgreSQL text for a Lua number: integers without exponent, floats
-- round-tripping (17 digits), and the spellings float8in reads for NaN/inf.
function D.number(v)
  if v == v and v == math.floor(v) and v > -TWO53 and v < TWO53 then return ("%d"):format(v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "Infinity" elseif v == -math.huge then return "-Infinity" end
  return ("%.17g"):format(v)
end

-- A light userdata NULL (cjson.null, ngx.null) is SQL NULL as well.
local function is_null(v, null)
  return v == nil or v == null or (type(v) == "userdata" and ffi.cast("void *", v) == nil)
end
D.is_null = is_null

local element -- forward

-- The array literal for Lua array t ({...}, nested for nested tables),
-- or nil, err when t is not an array: keys 1..n only, where `n` (a field,
-- as decoded arrays with holes carry) may extend past the last element.
local function literal(t, null, depth)
  if depth > 32 then return nil, "nested deeper than 32 levels (a cycle?)" end
  local n = t.n
  local max = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then
      if k ~= "n" or type(n) ~= "number" then
        return nil, "a table that is not an array (key " .. tostring(k) .. "); pass arrays (keys 1..n) or encode it yourself, e.g. as JSON"
      end
    elseif k > max then
      max = k
    end
  end
  if type(n) == "number" and n > max then max = n end
  local parts = {}
  for i = 1, max do
    local s, err = element(t[i], null, depth)
    if not s then return nil, err end
    parts[i] = s
  end
  return "{" .. concat(parts, ",") .. "}"
end

element = function(v, null, depth)
  if is_null(v, null) then return "NULL" end
  local t = type(v)
  if t == "string" then return '"' .. v:gsub('[\\"]', "\\%0") .. '"' end
  if t == "number" then return D.number(v) end
  if t == "boolean" then return v and "t" or "f" end
  if t == "table" then return literal(v, null, depth + 1) end
  return nil, "an array element of type " .. t
end

-- The PostgreSQL array literal for the Lua array t, or nil, err.
function D.array(t, null) return literal(t, null, 0) end

return D
