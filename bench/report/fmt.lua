-- bench/report/fmt.lua -- how numbers read in RESULTS.md, and a small
-- Markdown writer (lines and pipe tables).  A missing figure prints "–".
local M = {}

function M.tps(x) return x and ("%.0f"):format(x) or "–" end

function M.us(x)
  if not x then return "–" end
  return x >= 1000 and ("%.1f ms"):format(x / 1000) or ("%.0f µs"):format(x)
end

function M.cpu(x) return x and ("%.1f µs"):format(x) or "–" end

function M.x(r) return r and ("%.2fx"):format(r) or "–" end

function M.q(r) return r and ("%.2f"):format(r) or "–" end

-- A ratio with the range of per-round ratios when the rounds differ.
function M.ratio(r, lo, hi)
  if not r then return "–" end
  if lo and hi and (hi - lo) > 0.005 then return ("%.2fx (%.2f–%.2f)"):format(r, lo, hi) end
  return M.x(r)
end

function M.cell(s) return (tostring(s):gsub("|", "\\|")) end

-- Doc: collects lines.  doc:p(fmt, ...) adds one line; doc:table(head,
-- align, rows) a pipe table, align a string of "l"/"r" per column.
local Doc = {}
Doc.__index = Doc

function M.doc() return setmetatable({ out = {} }, Doc) end

function Doc:p(fmt, ...)
  self.out[#self.out + 1] = select("#", ...) > 0 and fmt:format(...) or fmt
end

function Doc:row(cells)
  local t = {}
  for i, c in ipairs(cells) do t[i] = M.cell(c) end
  self:p("| " .. table.concat(t, " | ") .. " |")
end

function Doc:table(head, align, rows)
  self:row(head)
  local sep = {}
  for i = 1, #head do sep[i] = align:sub(i, i) == "r" and "---:" or "---" end
  self:p("|" .. table.concat(sep, "|") .. "|")
  for _, r in ipairs(rows) do self:row(r) end
  self:p("")
end

function Doc:text() return table.concat(self.out, "\n") end

return M
