-- The FFI declarations must not drift from the C header.
local BUILD = require("spec.support.calls").build_dir() -- where the specs' poolrt was built
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

  it("the boot module gets the views of src/policy_views.h from the build, not a copy of its own", function()
    local h = read("src/policy_views.h")
    local want = assert(h:match("/%* PRT_VIEWS_BEGIN %*/(.-)/%* PRT_VIEWS_END %*/"))
    assert.is_nil(read("src/policy_boot.lua"):find("typedef struct", 1, true), "policy_boot.lua declares views itself")
    -- The generated C string (Makefile: build/gen/policy_views_cdef.h) holds the block, unescaped.
    local gen = read(BUILD .. "/gen/policy_views_cdef.h")
    local text = {}
    for line in gen:gmatch('\n    "(.-)\\n"') do text[#text + 1] = (line:gsub('\\"', '"'):gsub("\\\\", "\\")) end
    local got = assert(table.concat(text, "\n"):match("/%* PRT_VIEWS_BEGIN %*/(.-)/%* PRT_VIEWS_END %*/"))
    assert.equal(normalize(want), normalize(got))
    -- and C's idle view capacity matches the array in the declaration
    local cap = tonumber(h:match("#define PRT__MAX_VIEWS (%d+)"))
    assert.equal(cap + 1, tonumber(want:match("prt_conn_view v%[(%d+)%]")))
  end)
end)

describe("facts the Lua side takes from C", function()
  local ffi = require "ffi"
  local poolrt = require "poolrt"
  local C = poolrt.C

  it("hook names: PRT_NHOOKS of them, as C names them, known to the policy loader", function()
    local n = tonumber(C.PRT_NHOOKS)
    assert.equal(n, #poolrt.HOOKS)
    for i = 0, n - 1 do
      local name = ffi.string(C.prt_policy_hook_name(i))
      assert.equal(name, poolrt.HOOKS[i + 1])
      assert.matches("^[%l_]+$", name)
    end
    -- one past the end is not a hook: PRT_NHOOKS counts C's own hooks
    assert.equal("?", ffi.string(C.prt_policy_hook_name(n)))
    local boot = dofile "src/policy_boot.lua"
    for _, name in ipairs(poolrt.HOOKS) do
      if boot.HOOKS then assert.is_table(boot.HOOKS[name], "policy_boot does not know hook " .. name) end
    end
  end)

  it("the acquire-wait bounds are C's, the ones rt:metrics() prints", function()
    local b = poolrt.WAIT_BOUNDS
    assert.equal(tonumber(C.PRT_WAIT_BUCKETS), #b)
    assert.equal(math.huge, b[#b])
    for i = 2, #b do assert.is_true(b[i] > b[i - 1]) end
    assert.is_true(C.prt_wait_bucket_bound(#b) < 0)
    local rt = poolrt.runtime{ conninfo = "host=/nonexistent", reap_interval = 0 }
    rt:pool("bounds") -- no connection is opened
    local les = {}
    for le in rt:metrics():gmatch('poolrt_acquire_wait_seconds_bucket{pool="bounds",le="([^"]+)"}') do
      les[#les + 1] = le == "+Inf" and math.huge or tonumber(le)
    end
    assert.same(b, les)
    rt:close()
  end)

  it("defaults are C's: an option not given is prt_pool_opts_default's", function()
    local want = ffi.new("prt_pool_opts")
    C.prt_pool_opts_default(want)
    local rt = poolrt.runtime{ conninfo = "host=/nonexistent", reap_interval = 0 }
    local p = rt:pool("defaults")
    assert.equal(want.acquire_timeout, p._o.acquire_timeout)
    assert.equal(0, p._o.max)                -- "not configured" reaches C (size hooks see configured = nil)
    assert.equal(want.max, p:stats().max)    -- and C applies its own default
    rt:close()
  end)

  it("no literal numbers stand for C enum values in lua/ or src/policy_boot.lua", function()
    local files = { "lua/poolrt.lua", "lua/resty/poolrt.lua", "src/policy_boot.lua" }
    -- a number where a PRT_* constant belongs: log levels, query flags,
    -- pool states, evict reasons, hook indexes
    local patterns = {
      "prt_log%(%s*%-?%d",
      "%.closed%s*[~=]=%s*%d",
      "flags%s*[~=]=%s*%d",
      "exec_simple[^\n]-run%([^,]+,%s*%d",
      "pool_query%(self,%s*%d",
      "prepare%s*==%s*false%s+and%s+%d",
      "stmt_cache%s*==%s*0%s+and%s+%d",
      "pools_evicted_total%[%d%]",
      "calls%[%d%]", "errors%[%d%]",
      "= %-1, error = 0",
    }
    for _, path in ipairs(files) do
      local src = read(path)
      for _, pat in ipairs(patterns) do
        local at = src:find(pat)
        assert.is_nil(at, ("%s: a literal enum value (%s) at line %s"):format(path, pat,
                      at and select(2, src:sub(1, at):gsub("\n", "")) + 1))
      end
    end
    -- and no copy of C's lists in the bindings: hook names, wait bounds
    for _, path in ipairs{ "lua/poolrt.lua", "lua/resty/poolrt.lua" } do
      local src = read(path)
      assert.is_nil(src:find('"pick",%s*"size"'), path .. ": a copy of the hook names")
      assert.is_nil(src:find("0%.0005"), path .. ": a copy of the wait bounds")
    end
  end)
end)
