-- tools/calls.sh (the file call graph of the library, and its circles) on
-- the build the specs run on.  The integrator adds the "no circle" checks,
-- one line each, once the capacity rewrite lands:
--   assert.is_nil(calls.circle_through("src/capacity.c"))
local calls = require "spec.support.calls"

describe("tools/calls.sh", function()
  it("reads the library's objects and prints its graph, circles and summary", function()
    local g = calls.graph()
    print(("\n  %s: %d files, %d arrows, %d circles"):format(g.build, g.files, g.arrows, g.ncircles))
    for _, c in ipairs(g.circles) do print("  circle of " .. #c .. ": " .. table.concat(c, " ")) end
    assert.equal(0, g.rc, g.out)
    assert.is_true(g.files >= 10, g.out)
    assert.is_true(g.arrows >= g.files / 2, g.out)
    assert.equal(g.ncircles, #g.circles, g.out)
    -- Every file has its line; the library's own objects only (no host/).
    assert.matches("\nsrc/pool%.c %->", "\n" .. g.out)
    assert.is_nil(g.out:match("\nhost/"), g.out)
    assert.matches("\ncallbacks %(", g.out)
    assert.matches("\nnot seen: static inline functions in headers", g.out)
  end)

  it("keeps the capacity layer out of every circle, and no circle over 3 files", function()
    for _, f in ipairs({ "src/capacity.c", "src/shared_budget.c", "src/fleet.c" }) do
      assert.is_nil(calls.circle_through(f), f .. " is in a circle")
    end
    local g = calls.graph()
    for _, c in ipairs(g.circles) do
      assert.is_true(#c <= 3, "a circle of " .. #c .. " files: " .. table.concat(c, " "))
    end
  end)

  it("--check exits 1 only for a file in a circle, 2 for a file not in the build", function()
    local g = calls.graph("--check src/log.c")   -- log.c calls nothing of ours
    assert.equal(0, g.rc, g.out)
    assert.matches("check: src/log.c is in no circle", g.out, 1, true)
    assert.is_nil(calls.circle_through("src/log.c"))
    assert.equal(2, calls.graph("--check src/no_such_file.c").rc)
    if g.circles[1] then
      local f = g.circles[1][1]
      assert.equal(1, calls.graph("--check " .. f).rc)
      assert.is_string(calls.circle_through(f))
    end
  end)
end)
