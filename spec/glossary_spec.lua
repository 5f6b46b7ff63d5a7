-- One word per idea, one idea per word: the glossary.  README.md's "Words"
-- section prints exactly this table, in this order; change a word here
-- first, then paste the table this spec prints when they differ.
-- Pure Lua: no server, no build.

local GLOSSARY = {
  { "runtime", "one `poolrt.runtime{}` (C `prt_runtime`): pools, a policy, a timer and a cap; one per process or per nginx worker" },
  { "pool", "connections to one conninfo under one name, with its own max, idle list and waiters (`rt:pool(name, opts)`)" },
  { "tenant", "one customer among many with a pool of its own (apartment's model); `max_pools`, `admit` and `evict` govern them" },
  { "endpoint", "one server (host:port) of a pool whose conninfo names several; a new connection goes to the one with the fewest" },
  { "cluster", "a conninfo naming a primary and its standbys; `rt:cluster(name)` makes two pools over it, `name` for writes and `name.read` for reads on a standby" },
  { "slot", "the permission to hold one server connection: taken before a connect, given back when the connection closes" },
  { "pool max", "a pool's limit on its slots (`max`, per runtime); the `size` hook may set it" },
  { "cap", "the runtime's limit in force on open connections: `max_connections`, or the `budget` hook's answer when lower" },
  { "shared budget", "connections shared by processes (`prt_budget`; resty.poolrt.init's `shared_max_connections`, formerly `max_connections`)" },
  { "fleet", "runtimes on several hosts sharing one server, via `application_name` and the sampler" },
  { "waiter", "a caller queued in a pool for a connection or a slot; waiters are served oldest first" },
  { "handoff", "how a released connection reaches waiters: `\"fifo\"` (straight to the oldest) or `\"barging\"` (a running caller may take it first, within a bound)" },
  { "overflow", "what an acquire does when its pool is full: the hook answers wait, fail, grow or evict_idle" },
  { "admit", "the decision when a new pool is asked for while `max_pools` are live: evict_lru, fail or allow" },
  { "evict", "to drop a whole pool (idle connections close now, in-use ones when released); also the hook naming pools to drop" },
  { "reap", "the periodic cycle that closes idle or expired connections, refills `min_idle` and evicts pools; also the hook naming connections" },
  { "multiplex", "statements of many callers pipelined on shared connections (`multiplex = true`), as Npgsql does" },
  { "`hook_steps`", "the Lua steps a hook call may run (formerly `policy_budget`)" },
}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function table_text()
  local out = { "| word | meaning |", "|---|---|" }
  for _, e in ipairs(GLOSSARY) do out[#out + 1] = ("| %s | %s |"):format(e[1], e[2]) end
  return table.concat(out, "\n")
end

-- The rows of the first table under README.md's "## Words" heading.
local function readme_words()
  local text = read("README.md")
  local section = text:match("\n## Words%s*\n(.-)\n## ") or text:match("\n## Words%s*\n(.*)$")
  assert(section, "README.md has no \"## Words\" section")
  local rows, in_table = {}, false
  for line in (section .. "\n"):gmatch("(.-)\n") do
    if line:match("^|") then
      in_table = true
      local word, meaning = line:match("^|%s*(.-)%s*|%s*(.-)%s*|%s*$")
      if word and word ~= "word" and not word:match("^%-+$") and not word:match("^:?%-") then
        rows[#rows + 1] = { word, meaning }
      end
    elseif in_table then
      break
    end
  end
  return rows
end

describe("glossary", function()
  it("has one meaning per word, each short enough for a table cell", function()
    local seen = {}
    for _, e in ipairs(GLOSSARY) do
      assert.is_nil(seen[e[1]], "word twice: " .. e[1])
      seen[e[1]] = true
      assert(#e[2] <= 200, e[1] .. ": meaning longer than 200 characters")
    end
  end)

  it("README.md's Words section prints exactly the glossary, in order", function()
    local rows = readme_words()
    local ok = #rows == #GLOSSARY
    for i, e in ipairs(GLOSSARY) do
      if not rows[i] or rows[i][1] ~= e[1] or rows[i][2] ~= e[2] then ok = false end
    end
    assert(ok, "README.md's \"## Words\" table differs from spec/glossary_spec.lua; it should be:\n\n"
               .. table_text() .. "\n")
  end)

  it("names the fixed `budget` hook as the cap's source", function()
    local words = read("README.md"):match("\n## Words%s*\n(.-)\n## ") or ""
    assert.truthy(words:find("the `budget` hook's answer", 1, true))
  end)
end)
