-- bench/report/data.lua -- the raw rows of one `make bench` run, read back:
-- meta.tsv (key, value), results.tsv (one row per run, see `record` in
-- bench/run.sh) and commands.txt (one command line per configuration).
-- Every figure of the report is computed here from these rows, never
-- against figures of another run.
local M = {}

local function lines(path)
  local f = assert(io.open(path))
  local t = {}
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local function split(l)
  local t = {}
  for field in (l .. "\t"):gmatch("([^\t]*)\t") do t[#t + 1] = field end
  return t
end

-- Key-value lines "KEY<TAB>VALUE"; returns the map and the keys in file order.
local function key_values(path)
  local map, order = {}, {}
  for _, l in ipairs(lines(path)) do
    local k, v = l:match("^([^\t]*)\t(.*)$")
    if k and not map[k] then map[k] = v; order[#order + 1] = k end
  end
  return map, order
end

-- One results.tsv row; the extra column's key=value pairs become fields.
local function parse_row(f)
  local r = { section = f[1], name = f[2], w = tonumber(f[3]), max = tonumber(f[4]), rep = tonumber(f[5]),
              tps = tonumber(f[6]) or 0, p50 = tonumber(f[7]) or 0, p99 = tonumber(f[8]) or 0,
              errors = tonumber(f[9]) or 0, extra = f[10] or "" }
  for k, v in r.extra:gmatch("([%w_]+)=([^ ]*)") do
    if r[k] == nil then r[k] = tonumber(v) or v end
  end
  r.first_error = r.extra:match("first_error=(.*)$")
  return r
end

-- Loads one run: returns an object with the rows indexed as
-- rows[section][name][workers] = list of rounds, plus meta and commands.
function M.load(meta_path, res_path, cmd_path)
  local run = setmetatable({ rows = {} }, { __index = M })
  run.meta = key_values(meta_path)
  run.cmds, run.cmd_order = key_values(cmd_path)
  for _, l in ipairs(lines(res_path)) do
    local f = split(l)
    if #f >= 9 then
      local r = parse_row(f)
      local sec = run.rows[r.section] or {}
      run.rows[r.section] = sec
      sec[r.name] = sec[r.name] or {}
      sec[r.name][r.w] = sec[r.name][r.w] or {}
      table.insert(sec[r.name][r.w], r)
    end
  end
  run.workers = {}
  for w in (run.meta.workers or ""):gmatch("%d+") do run.workers[#run.workers + 1] = tonumber(w) end
  run.secs = tonumber(run.meta.secs)
  for _, sec in pairs(run.rows) do -- client CPU per transaction (µs) of each run, where it was measured
    for _, byw in pairs(sec) do
      for _, rounds in pairs(byw) do
        for _, r in ipairs(rounds) do
          local cpu = tonumber(r.cpu_s)
          if cpu and r.tps > 0 and run.secs then r.cpu_per_txn = cpu / (r.tps * run.secs) * 1e6 end
        end
      end
    end
  end
  return run
end

-- The rounds of one configuration, or nil when it did not run.
function M:runs(section, name, w)
  local s = self.rows[section]
  return s and s[name] and s[name][w] or nil
end

function M:has(section, name)
  local s = self.rows[section]
  return s ~= nil and (name == nil or s[name] ~= nil)
end

-- The first (often only) round of a configuration.
function M:one(section, name, w)
  local rs = self:runs(section, name, w)
  return rs and rs[1]
end

function M.mean(list, field)
  if not list or #list == 0 then return nil end
  local s = 0
  for _, r in ipairs(list) do s = s + (tonumber(r[field]) or 0) end
  return s / #list
end

function M:mean_of(section, name, w, field)
  return M.mean(self:runs(section, name, w), field)
end

-- Smallest and largest of a field over the rounds.
function M.range(list, field)
  local lo, hi
  for _, r in ipairs(list or {}) do
    local x = tonumber(r[field])
    if x then lo = math.min(lo or x, x); hi = math.max(hi or x, x) end
  end
  return lo, hi
end

-- Ratio of the means of A and B, plus the range of per-round ratios (A and
-- B of the same round ran back to back).
function M:ratio(section, a, b, w, field)
  field = field or "tps"
  local ra, rb = self:runs(section, a, w), self:runs(section, b, w)
  local ma, mb = M.mean(ra, field), M.mean(rb, field)
  if not ma or not mb or mb == 0 then return nil end
  local per = {}
  local byrep = {}
  for _, y in ipairs(rb) do byrep[y.rep] = y end
  for _, x in ipairs(ra) do
    local y = byrep[x.rep]
    local xv, yv = tonumber(x[field]), y and tonumber(y[field])
    if xv and yv and yv > 0 then per[#per + 1] = { q = xv / yv } end
  end
  local lo, hi = M.range(per, "q")
  return ma / mb, lo, hi
end

-- Client CPU per transaction in µs: CPU seconds over transactions.
function M:cpu_per_txn(section, name, w)
  local rs = self:runs(section, name, w)
  local cpu, tps = M.mean(rs, "cpu_s"), M.mean(rs, "tps")
  return (cpu and tps and tps > 0 and self.secs) and cpu / (tps * self.secs) * 1e6 or nil
end

-- The value of option OPT (e.g. "-d") in the recorded command of NAME.
function M:cmd_opt(name, opt)
  local c = self.cmds[name]
  return c and c:match("%s" .. opt:gsub("%-", "%%-") .. " (%S+)")
end

return M
