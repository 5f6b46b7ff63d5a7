-- The FFI declarations must not drift from the C header.
local function normalize(s)
  s = s:gsub("/%*.-%*/", " "):gsub("%s+", " ")
  return (s:gsub("^ ", ""):gsub(" $", ""))
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

describe("lua/poolrt/cdef.lua", function()
  it("declares exactly the header's PRT_CDEF block", function()
    local h = read("include/poolrt.h")
    local block = assert(h:match("/%* PRT_CDEF_BEGIN %*/(.-)/%* PRT_CDEF_END %*/"))
    local cdef = assert(read("lua/poolrt/cdef.lua"):match("ffi%.cdef %[%[(.-)%]%]"))
    assert.equal(normalize(block), normalize(cdef))
  end)
end)
