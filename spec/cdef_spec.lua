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

  it("policy_boot.lua declares exactly the views of src/policy_views.h", function()
    local h = read("src/policy_views.h")
    local want = assert(h:match("/%* PRT_VIEWS_BEGIN %*/(.-)/%* PRT_VIEWS_END %*/"))
    local boot = require "poolrt.policy_boot"
    local got = assert(boot.CDEF:match("/%* PRT_VIEWS_BEGIN %*/(.-)/%* PRT_VIEWS_END %*/"))
    assert.equal(normalize(want), normalize(got))
    -- and C's idle view capacity matches the array in the declaration
    local cap = tonumber(h:match("#define PRT__MAX_VIEWS (%d+)"))
    assert.equal(cap + 1, tonumber(got:match("prt_conn_view v%[(%d+)%]")))
  end)
end)
