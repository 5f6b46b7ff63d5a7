-- The `poolrt` host binary, run as a user would.
local H = require "spec.helper"
local run, script = H.run, H.write_file

describe("poolrt host", function()
  it("prints its version and help", function()
    local out, rc = run("build/poolrt --version")
    assert.equal(0, rc)
    assert.matches("^poolrt %d+%.%d+%.%d+", out)
    out, rc = run("build/poolrt --help")
    assert.equal(0, rc)
    assert.matches("usage: poolrt %[options%] SCRIPT%.lua", out)
  end)

  it("runs a script with poolrt preloaded and passes its arguments", function()
    local path = script([[
      local poolrt = require "poolrt"
      local rt = poolrt.runtime{}
      local rows = assert(rt:pool("p"):query("select $1::int * 2 as v", arg[1]))
      print(rows[1].v, select("#", ...), ...)
    ]])
    local out, rc = run("build/poolrt " .. path .. " 21 x")
    os.remove(path)
    assert.equal(0, rc)
    assert.equal("42\t2\t21\tx\n", out)
  end)

  it("exits 1 with a clear message on a script error or a missing script", function()
    local path = script("local x = nil\nx.field = 1\n")
    local out, rc = run("build/poolrt " .. path)
    os.remove(path)
    assert.equal(1, rc)
    assert.matches("^poolrt: [^\n]*:2: attempt to index local 'x'", out)
    out, rc = run("build/poolrt /nonexistent/app.lua")
    assert.equal(1, rc)
    assert.matches("^poolrt: cannot open /nonexistent/app.lua", out)
    out, rc = run("build/poolrt --bogus")
    assert.equal(2, rc)
    assert.matches("unknown option %-%-bogus", out)
  end)

  it("takes every --log-level the README names, off included, and refuses others", function()
    local path = script([[require("poolrt").log("error", "visible") print("ran")]])
    for _, level in ipairs{ "off", "error", "warn", "info", "debug" } do
      local out, rc = run("build/poolrt --log-level " .. level .. " " .. path)
      assert.equal(0, rc, level)
      assert.matches("ran\n$", out)
      assert.equal(level ~= "off", out:find("poolrt[error] visible", 1, true) ~= nil, level)
    end
    local out, rc = run("build/poolrt --log-level loud " .. path)
    os.remove(path)
    assert.equal(2, rc)
    assert.matches('unknown log level "loud" (off, error, warn, info, debug)', out, 1, true)
  end)

  it("accepts the old option name policy_budget with one warning naming hook_steps", function()
    local path = script([[
      local poolrt = require "poolrt"
      for _ = 1, 3 do poolrt.runtime{ reap_interval = 0, policy_budget = 5000 }:close() end
      poolrt.runtime{ reap_interval = 0, hook_steps = 5000 }:close()
      print(select(2, pcall(poolrt.runtime, { reap_interval = 0, hook_steps = 0 })))
      print(select(2, pcall(poolrt.runtime, { reap_interval = 0, pools_overflow = "maybe" })))
    ]])
    local out, rc = run("build/poolrt " .. path)
    os.remove(path)
    assert.equal(0, rc)
    local _, warnings = out:gsub("option policy_budget is now hook_steps", "")
    assert.equal(1, warnings)
    assert.matches("poolrt: runtime: hook_steps must be >= 1, got 0", out, 1, true)
    assert.matches('poolrt: runtime: pools_overflow must be "fail" or "allow", got "maybe"', out, 1, true)
  end)

  it("logs its own events through the library's log (timestamp, level)", function()
    local path = script("print('ran')")
    local port = H.free_port()
    local out, rc = run(("build/poolrt --log-level info --metrics 127.0.0.1:%d %s"):format(port, path))
    os.remove(path)
    assert.equal(0, rc, out)
    assert.matches("^%d+%-%d+%-%d+T[%d:.]+Z poolrt%[info%] metrics on http://127%.0%.0%.1:" .. port .. "/metrics\n", out)
  end)

  it("loads from plain LuaJIT through libpoolrt.so as well", function()
    local out, rc = run([[luajit -e 'package.path="lua/?.lua;"..package.path
      local p = require "poolrt"; print(p.VERSION, p.C ~= require("ffi").C)']])
    assert.equal(0, rc)
    assert.matches("^%d+%.%d+%.%d+\ttrue\n$", out)
  end)
end)
