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

  it("loads from plain LuaJIT through libpoolrt.so as well", function()
    local out, rc = run([[luajit -e 'package.path="lua/?.lua;"..package.path
      local p = require "poolrt"; print(p.VERSION, p.C ~= require("ffi").C)']])
    assert.equal(0, rc)
    assert.matches("^%d+%.%d+%.%d+\ttrue\n$", out)
  end)
end)
