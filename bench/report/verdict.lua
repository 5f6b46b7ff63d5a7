-- bench/report/verdict.lua -- evaluates one entry of targets.lua against a
-- run: the value at each worker count, the worst of them, and the verdict.
local fmt = require("report.fmt")
local M = {}

local CMP = {
  [">="] = { sign = "≥", holds = function(x, t) return x >= t end, worse = math.min },
  ["<="] = { sign = "≤", holds = function(x, t) return x <= t end, worse = math.max },
  ["=="] = { sign = "=", holds = function(x, t) return x == t end, worse = math.max },
}

-- The worker counts at which series NAME ran, ascending.
local function counts(run, section, name)
  local t = {}
  for w in pairs(run.rows[section] and run.rows[section][name] or {}) do t[#t + 1] = w end
  table.sort(t)
  return t
end

local function ratio_values(run, e)
  local vals = {}
  for _, w in ipairs(e.at or counts(run, e.section, e.a)) do
    local r, lo, hi = run:ratio(e.section, e.a, e.b, w, e.field)
    if r then vals[#vals + 1] = { w = w, r = r, lo = lo, hi = hi } end
  end
  return vals
end

local function error_values(run, e)
  local total, seen = 0, false
  for _, name in ipairs(e.names) do
    for _, r in ipairs(run:runs(e.section, name, e.w) or {}) do
      seen = true
      total = total + math.max(r.errors, r.tps > 0 and 0 or 1)
    end
  end
  return seen and { { w = e.w, r = total } } or {}
end

-- Returns { values = list of { w, r, lo, hi }, by_w = w -> value,
-- worst = number or nil, verdict = "met" | "**missed**" | "not measured" | "" }.
function M.evaluate(run, e)
  local values = e.measure == "errors" and error_values(run, e) or ratio_values(run, e)
  local res = { values = values, by_w = {}, verdict = "" }
  local c = CMP[e.cmp or ">="]
  for _, v in ipairs(values) do
    res.by_w[v.w] = v
    res.worst = res.worst and c.worse(res.worst, v.r) or v.r
  end
  if e.cmp then
    if not res.worst then res.verdict = "not measured"
    else res.verdict = c.holds(res.worst, e.threshold) and "met" or "**missed**" end
  end
  return res
end

-- "≥ 0.95x", "= 0 errors": the threshold as the report prints it.
function M.threshold(e)
  if not e.cmp then return "" end
  local n = e.unit == "x" and ("%.2f"):format(e.threshold) or tostring(e.threshold)
  return ("%s %s%s"):format(CMP[e.cmp].sign, n, e.unit or "")
end

-- The worst value as the report prints it.
function M.worst(e, res)
  if not res.worst then return "–" end
  return e.unit == "x" and fmt.x(res.worst) or (tostring(res.worst) .. (e.unit or ""))
end

return M
