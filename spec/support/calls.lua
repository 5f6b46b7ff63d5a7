-- tools/calls.sh from the specs: the file call graph of the library the
-- specs run on, parsed.  The library is the poolrt binary's: busted runs
-- inside BUILD/poolrt (BUSTED='build/asan/poolrt /usr/bin/busted'), whose
-- objects are BUILD/obj; under plain luajit, $BUILD or "build".
local H = require "spec.helper"

local C = {}

function C.build_dir()
  -- The shell's parent is this process: its executable names the build.
  local exe = H.run("readlink /proc/$PPID/exe"):gsub("%s+$", "")
  local dir = exe:match("^(.*)/poolrt$")
  if dir then
    local cwd = H.run("pwd"):gsub("%s+$", "")
    return dir:sub(1, #cwd + 1) == cwd .. "/" and dir:sub(#cwd + 2) or dir
  end
  return os.getenv("BUILD") or "build"
end

-- Runs tools/calls.sh [args] on the build; returns
-- { out, rc, build, files, arrows, ncircles, circles = { {file, ...}, ... },
--   callbacks = { line, ... } }, or raises when the summary line is missing.
function C.graph(args)
  local build = C.build_dir()
  local out, rc = H.run("BUILD=" .. build .. " tools/calls.sh " .. (args or ""))
  local files, arrows, ncircles = out:match("\n(%d+) files, (%d+) arrows, (%d+) circles\n")
  assert(files, "tools/calls.sh printed no summary line (rc " .. tostring(rc) .. "):\n" .. out)
  local g = { out = out, rc = rc, build = build, files = tonumber(files), arrows = tonumber(arrows),
              ncircles = tonumber(ncircles), circles = {}, callbacks = {} }
  for list in out:gmatch("\n  its %d+ files: ([^\n]+)") do
    local c = {}
    for f in list:gmatch("%S+") do c[#c + 1] = f end
    g.circles[#g.circles + 1] = c
  end
  local cbs = out:match("\ncallbacks[^\n]*\n(.-)\nnot seen:")
  for line in (cbs or ""):gmatch("  ([^\n]+)") do
    if not line:match("^none tagged") then g.callbacks[#g.callbacks + 1] = line end
  end
  return g
end

-- The circle (its files, "a, b, c") that holds `file` (a src/ path), or nil:
--   assert.is_nil(calls.circle_through("src/capacity.c"))
-- Raises when the file is not in the build (a typo must not pass).
function C.circle_through(file)
  local g = C.graph("--check " .. file)
  assert(g.rc ~= 2, file .. " is not in the build " .. g.build .. ":\n" .. g.out)
  for _, c in ipairs(g.circles) do
    for _, f in ipairs(c) do
      if f == file then return table.concat(c, ", ") end
    end
  end
  assert(g.rc == 0, "tools/calls.sh --check " .. file .. " exited " .. tostring(g.rc) .. " yet no circle names it:\n" .. g.out)
  return nil
end

return C
