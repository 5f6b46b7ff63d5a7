-- The docs hold together: every relative link and #anchor in the
-- repository's Markdown resolves, every citation of the docs from code
-- comments names a file and a heading that exist, and no table cell is a
-- wall of text.  Pure Lua: no server, no build.
--
-- The one citation form, in comments of any language:
--   docs/policies.md#hooks        a path from the repository root, and
--                                 GitHub's anchor of a heading in it
-- (a bare docs/FILE.md names the whole file).  The old forms -- README
-- "Section", README.md, "Section" -- are refused.

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  local rc = os.execute("test -d '" .. path:gsub("'", "'\\''") .. "'")
  return rc == 0 or rc == true
end

local function lines_of(cmd)
  local out, p = {}, io.popen(cmd)
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

-- GitHub's heading anchor: the heading's text as rendered (links become
-- their text, code spans lose their backticks), lower-cased, everything
-- but letters, digits, spaces, '-' and '_' dropped, each space a '-'.
local function slug(text)
  text = text:gsub("!?%[(.-)%]%b()", "%1")          -- [text](url) -> text
  text = text:gsub("<[^>]*>", "")                    -- inline HTML tags
  text = text:lower():gsub("^%s+", ""):gsub("%s+$", "")
  -- keep bytes >= 0x80 (UTF-8 letters such as µ), drop ASCII punctuation
  text = text:gsub("[%z\1-\127]", function(c)
    if c:match("[%w _%-]") then return c end
    return ""
  end)
  return (text:gsub(" ", "-"))
end

-- Markdown text with fenced code blocks blanked (line numbers kept).
local function strip_fences(text)
  local out, fence = {}, nil
  for line in (text .. "\n"):gmatch("(.-)\n") do
    local f = line:match("^%s*(```+)") or line:match("^%s*(~~~+)")
    if fence then
      if f and f:sub(1, 1) == fence:sub(1, 1) and #f >= #fence then fence = nil end
      out[#out + 1] = ""
    elseif f then
      fence = f
      out[#out + 1] = ""
    else
      out[#out + 1] = line
    end
  end
  return out
end

local anchor_cache = {}
-- The set of anchors of a Markdown file (duplicates numbered -1, -2, ...).
local function anchors(path)
  if anchor_cache[path] then return anchor_cache[path] end
  local text = read(path)
  if not text then return nil end
  local set, seen = {}, {}
  for _, line in ipairs(strip_fences(text)) do
    local h = line:match("^#+%s+(.-)%s*#*%s*$")
    if h then
      local s = slug(h)
      local n = seen[s]
      set[n and (s .. "-" .. n) or s] = true
      seen[s] = (n or 0) + 1
    end
    for id in line:gmatch('<a%s+[^>]*name="([^"]+)"') do set[id] = true end
    for id in line:gmatch('%sid="([^"]+)"') do set[id] = true end
  end
  anchor_cache[path] = set
  return set
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- "a/b/../c" -> "a/c"
local function normalize(path)
  local parts = { path:sub(1, 1) == "/" and "" or nil }
  for part in path:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then parts[#parts] = nil
    elseif part ~= "." then parts[#parts + 1] = part end
  end
  return table.concat(parts, "/")
end

-- Checks one target (path relative to base, optional #anchor).  Returns
-- nil when it resolves, else why not.
local function check_target(base, target)
  local file, anchor = target:match("^([^#]*)#(.*)$")
  if not file then file = target end
  file = file:gsub("%%20", " ")
  local path = file == "" and base or normalize(dirname(base) .. "/" .. file)
  if file ~= "" and not exists(path) then return ("no such file %s"):format(path) end
  if anchor and anchor ~= "" then
    if not path:match("%.md$") then return ("anchor #%s into %s, which is not Markdown"):format(anchor, path) end
    local set = anchors(path)
    if not set or not set[anchor] then return ("no heading #%s in %s"):format(anchor, path) end
  end
  return nil
end

-- Every relative link of one Markdown file: a list of "file:line: target: why".
local function check_markdown(path)
  local bad = {}
  local text = read(path)
  for i, line in ipairs(strip_fences(text)) do
    local targets = {}
    local ref = line:match("^ ? ? ?%[[^%]]+%]:%s*<?([^%s>]+)")   -- [name]: target
    if ref then targets[#targets + 1] = ref end
    line = line:gsub("``.-``", ""):gsub("`[^`]*`", "")   -- code spans are not links
    for t in line:gmatch("%]%(%s*<?([^%s)>]+)>?[^)]*%)") do targets[#targets + 1] = t end
    for _, t in ipairs(targets) do
      if not t:match("^%a[%w+.-]*:") then   -- http:, https:, mailto: ... are not checked
        local why = check_target(path, t)
        if why then bad[#bad + 1] = ("%s:%d: %s: %s"):format(path, i, t, why) end
      end
    end
  end
  return bad
end

-- Table cells longer than max characters: a list of "file:line: n chars".
local function long_cells(path, max)
  local bad = {}
  for i, line in ipairs(strip_fences(read(path))) do
    if line:match("^%s*|") then
      local body = line:gsub("\\|", "  "):gsub("`[^`]*`", function(s) return s:gsub("|", " ") end)
      for cell in body:gmatch("|([^|]*)") do
        local n = #cell:gsub("^%s+", ""):gsub("%s+$", "")
        if n > max then bad[#bad + 1] = ("%s:%d: a table cell of %d characters"):format(path, i, n) end
      end
    end
  end
  return bad
end

-- Citations of the docs in one code file: "file:line: citation: why".
local OLD = { 'README%.?m?d?[,;]?%s+\\?"',   -- README + quote, README.md + comma + quote, ...
              '%(README%.?m?d?[;)]' }        -- (README; ...)
local function check_citations(path, root)
  local bad, text = {}, read(path) or ""
  local i = 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    i = i + 1
    for cite, anchor in line:gmatch("(docs/[%w_%-/%.]*%.md)(#?[%w_%-]*)") do
      local why = check_target((root or ".") .. "/x", cite .. anchor)
      if why then bad[#bad + 1] = ("%s:%d: %s%s: %s"):format(path, i, cite, anchor, why) end
    end
    if line:find(OLD[1]) or line:find(OLD[2]) then
      bad[#bad + 1] = ("%s:%d: an old-style README citation; write docs/FILE.md#anchor"):format(path, i)
    end
  end
  return bad
end

-- The files whose comments may cite the docs.
local function code_files()
  local files = lines_of([[
    { find src include host lua policies mk tools tests spec examples -type f \
        ! -path 'tests/fuzz_corpus/*' 2>/dev/null
      ls bench/*.sh bench/*.lua bench/*.c bench/*.gp mk/*.mk Makefile .ci/run 2>/dev/null; } | sort -u]])
  local out = {}
  for _, f in ipairs(files) do
    if not f:match("%.png$") and not f:match("%.trace$") and not f:match("%.md$") then out[#out + 1] = f end
  end
  return out
end

local function markdown_files()
  local files = lines_of("git ls-files --cached --others --exclude-standard -- '*.md' 2>/dev/null")
  if #files == 0 then
    files = lines_of("find . -name '*.md' -not -path './build/*' -not -path './.git/*' | sed 's|^%./||' | sort")
  end
  return files
end

local function report(bad)
  return #bad .. " problem(s):\n" .. table.concat(bad, "\n")
end

describe("docs", function()
  it("slugs headings as GitHub does", function()
    assert.equal("fair-waiting", slug("Fair waiting"))
    assert.equal("query_timeout-and-the-cancel-race", slug("`query_timeout` and the cancel race"))
    assert.equal("try-a-policy-before-you-ship-it", slug("Try a policy before you ship it"))
    assert.equal("one-budget-many-processes-fleet", slug("One budget, many processes (fleet)"))
    assert.equal("a--b", slug("A & B"))
    assert.equal("see-policies", slug("See [policies](policies.md)"))
  end)

  it("finds broken links, anchors and citations (checked on scratch files)", function()
    local dir = (os.getenv("POOLRT_SPEC_TMP") or "/tmp") .. "/docs_spec_" .. tostring(os.time()) .. math.random(1e6)
    assert(os.execute("mkdir -p '" .. dir .. "/docs'"))
    local function write(name, s)
      local f = assert(io.open(dir .. "/" .. name, "w")) f:write(s) f:close()
    end
    write("docs/a.md", "# Title\n\n## Fair waiting\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n")
    write("README.md", table.concat({
      "[ok](docs/a.md#fair-waiting) [ok](docs/a.md#same-1) [ok](#x) [web](https://example.com/#nope)",
      "[missing file](docs/b.md) [missing anchor](docs/a.md#same-2) [fenced](docs/a.md#not-a-heading)",
      "`[code](docs/nothere.md)`",
      "## x",
      "| a | " .. ("y"):rep(230) .. " |",
    }, "\n") .. "\n")
    write("code.c", "/* see docs" .. "/a.md#fair-waiting */\n/* see docs" .. "/a.md#gone */\n"
          .. "/* " .. "README" .. ' "Fair waiting" */\n/* (README.md, ' .. '"Policies") */\n')
    local links = check_markdown(dir .. "/README.md")
    local joined = table.concat(links, "\n")
    assert.equal(3, #links, joined)
    assert.truthy(joined:find("docs/b.md: no such file", 1, true), joined)
    assert.truthy(joined:find("#same-2", 1, true), joined)
    assert.truthy(joined:find("#not-a-heading", 1, true), joined)
    assert.equal(1, #long_cells(dir .. "/README.md", 200))
    local cites = check_citations(dir .. "/code.c", dir)   -- citations are paths from the root
    assert.equal(3, #cites, table.concat(cites, "\n"))
    assert.truthy(cites[1]:find(":2: docs/a.md#gone: no heading #gone", 1, true), cites[1])
    assert.truthy(cites[2]:find(":3: an old-style README citation", 1, true), cites[2])
    assert.truthy(cites[3]:find(":4: an old-style README citation", 1, true), cites[3])
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("every relative link and #anchor in the repository's Markdown resolves", function()
    local bad = {}
    for _, f in ipairs(markdown_files()) do
      for _, b in ipairs(check_markdown(f)) do bad[#bad + 1] = b end
    end
    assert(#bad == 0, report(bad))
  end)

  it("every citation of the docs in code resolves, and none is README \"...\"", function()
    local bad, n = {}, 0
    for _, f in ipairs(code_files()) do
      if f ~= "spec/docs_spec.lua" then
        n = n + 1
        for _, b in ipairs(check_citations(f)) do bad[#bad + 1] = b end
      end
    end
    assert(n > 50, "found only " .. n .. " code files: run from the repository root")
    assert(#bad == 0, report(bad))
  end)

  it("no table cell in the book is longer than 200 characters", function()
    local bad = {}
    for _, f in ipairs(markdown_files()) do
      if not f:match("^bench/RESULTS") then   -- generated reports
        for _, b in ipairs(long_cells(f, 200)) do bad[#bad + 1] = b end
      end
    end
    assert(#bad == 0, report(bad))
  end)

  it("README.md is a front door: at most 250 lines, the two commands first", function()
    local text = assert(read("README.md"))
    local n = select(2, text:gsub("\n", ""))
    assert(n <= 250, "README.md has " .. n .. " lines")
    local head = text:sub(1, (select(2, text:find(("[^\n]*\n"):rep(15))) or #text))
    assert.truthy(head:find("make run", 1, true), "make run in the first 15 lines")
    assert.truthy(head:find("make test", 1, true), "make test in the first 15 lines")
    -- .ci/run's commands are each named in the README
    for cmd in (read(".ci/run") or ""):gmatch("\n(make [%w_-]+)") do
      assert.truthy(text:find("`" .. cmd .. "`", 1, true), cmd .. " is named in README.md")
    end
  end)

  it("every docs/ page is linked from README.md or docs/README.md", function()
    local index = (read("README.md") or "") .. (read("docs/README.md") or "")
    local missing = {}
    for _, f in ipairs(markdown_files()) do
      local name = f:match("^docs/(.+%.md)$")
      if name and name ~= "README.md" and not index:find("(" .. name, 1, true)
         and not index:find("(docs/" .. name, 1, true) then
        missing[#missing + 1] = f
      end
    end
    assert(#missing == 0, "not linked: " .. table.concat(missing, ", "))
  end)
end)
