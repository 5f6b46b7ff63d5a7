-- bench/report/chart.lua -- the data files bench/chart.gp plots: tps.dat
-- (mean TPS per worker count, a column per matrix series that ran),
-- series.gp (the plot command and whether replica data exists) and
-- replica.dat (transactions per server).
local SERIES = require("report.series")
local extras = require("report.extras")
local M = {}

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function tps_dat(run, cols)
  local out = {}
  local head = { "workers" }
  for _, s in ipairs(cols) do head[#head + 1] = s[1] end
  out[1] = "# " .. table.concat(head, " ")
  for _, w in ipairs(run.workers) do
    local t = { tostring(w) }
    for _, s in ipairs(cols) do
      local m = run:mean_of("matrix", s[1], w, "tps")
      t[#t + 1] = m and ("%.1f"):format(m) or "NaN"
    end
    out[#out + 1] = table.concat(t, " ")
  end
  return table.concat(out, "\n") .. "\n"
end

function M.write(run, dir)
  local cols = {}
  for _, s in ipairs(SERIES) do if run:has("matrix", s[1]) then cols[#cols + 1] = s end end
  write(dir .. "/tps.dat", tps_dat(run, cols))
  local plots = {}
  for i, s in ipairs(cols) do
    plots[#plots + 1] = ("dir.'/tps.dat' using 1:%d with linespoints lw 2 %s title '%s'"):format(i + 1, s[4], s[3])
  end
  local have_replica = run:has("replica_servers")
  write(dir .. "/series.gp", ("tps_plot = \"plot %s\"\nhave_replica = %d\n"):format(
    (table.concat(plots, ", "):gsub('"', '\\"')), have_replica and 1 or 0))
  if have_replica then
    local lines = {}
    for _, r in ipairs(extras.replica_rows(run)) do
      lines[#lines + 1] = ("\"%s W=%d\" %d %d"):format(r[2], r[1], r[3], r[4])
    end
    write(dir .. "/replica.dat", table.concat(lines, "\n") .. "\n")
  end
end

return M
