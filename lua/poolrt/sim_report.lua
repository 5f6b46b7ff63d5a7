-- poolrt.sim_report -- what `poolrt sim` prints: the side-by-side table,
-- the CSV (its header is a contract: acceptance checks read it), and the
-- gnuplot chart of connections in use and acquire wait p99 over time.
--
-- Each function takes the result tables of poolrt/sim.lua's M.run, one per
-- policy in command-line order.
local R = {}

local function int(v) return ("%d"):format(v) end
local function ms(v) return ("%.3f"):format(v) end

-- The table's rows: label, and how to show one result (nil: row skipped
-- when no result has it).  Endpoint rows come from the results themselves.
local function rows(results)
  local out = {
    { "acquires", function(r) return int(r.acquires) end },
    { "timeouts", function(r) return int(r.timeouts) end },
    { "errors", function(r) return int(r.errors) end },
    { "wait p50 (ms)", function(r) return ms(r.wait_p50_ms) end },
    { "wait p99 (ms)", function(r) return ms(r.wait_p99_ms) end },
    { "wait max (ms)", function(r) return ms(r.wait_max_ms) end },
    { "connections opened", function(r) return int(r.opened) end },
    { "connections closed", function(r) return int(r.closed) end },
  }
  for _, reason in ipairs(results[1].close_reasons) do
    out[#out + 1] = { "  " .. reason, function(r) return int(r.closed_by[reason]) end }
  end
  out[#out + 1] = { "peak connections", function(r) return int(r.peak_connections) end }
  for i, e in ipairs(results[1].endpoints) do
    out[#out + 1] = { "endpoint " .. e.name, function(r) return int(r.endpoints[i].acquires) end }
  end
  if #results[1].endpoints > 1 then
    out[#out + 1] = { "endpoint max/min", function(r) return ("%.2f"):format(r.endpoint_max_min) end }
  end
  local cluster = false -- pools with target_session_attrs (docs/sim.md#clusters-a-primary-its-standbys-and-a-failover)
  for _, r in ipairs(results) do cluster = cluster or r.reads + r.writes + r.role_refusals > 0 end
  if cluster then
    out[#out + 1] = { "reads", function(r) return int(r.reads) end }
    out[#out + 1] = { "  stale (lag > 1 s)", function(r) return int(r.stale_reads) end }
    out[#out + 1] = { "writes", function(r) return int(r.writes) end }
    for i, e in ipairs(results[1].endpoints) do
      out[#out + 1] = { "  on " .. e.name, function(r) return int(r.endpoints[i].writes) end }
    end
    out[#out + 1] = { "role refusals", function(r) return int(r.role_refusals) end }
  end
  local more = {
    { "pools evicted", "pools_evicted" }, { "pools recreated", "pools_recreated" },
    { "hook calls", "hook_calls" }, { "hook errors", "hook_errors" },
    { "background jobs", "background_jobs" }, { "background peak", "background_peak" },
  }
  for _, m in ipairs(more) do
    out[#out + 1] = { m[1], function(r) return int(r[m[2]]) end }
  end
  out[#out + 1] = { "wall time (s)", function(r) return ("%.2f"):format(r.wall_seconds) end }
  return out
end

-- The side-by-side table: a column per policy.
function R.table(results, wl, seed)
  local lines = { ("workload %s: %g s virtual, seed %d"):format(wl.file, wl.duration, seed), "" }
  local label_w, widths = 20, {}
  local head = { ("%-" .. label_w .. "s"):format("") }
  for i, r in ipairs(results) do
    widths[i] = math.max(12, #r.policy + 2)
    head[#head + 1] = ("%" .. widths[i] .. "s"):format(r.policy)
  end
  lines[#lines + 1] = table.concat(head)
  for _, row in ipairs(rows(results)) do
    local cells = { ("%-" .. label_w .. "s"):format(row[1]) }
    for i, r in ipairs(results) do cells[#cells + 1] = ("%" .. widths[i] .. "s"):format(row[2](r)) end
    lines[#lines + 1] = table.concat(cells)
  end
  return table.concat(lines, "\n") .. "\n"
end

R.CSV_HEADER = "policy,acquires,wait_p50_ms,wait_p99_ms,wait_max_ms,timeouts,opened,closed,peak_connections,"
               .. "endpoint_max_min,pools_evicted,hook_errors"

local function csv_field(s)
  if s:find('[,"\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

-- The CSV: R.CSV_HEADER, then one row per policy.
function R.csv(results)
  local lines = { R.CSV_HEADER }
  for _, r in ipairs(results) do
    lines[#lines + 1] = table.concat({
      csv_field(r.policy), int(r.acquires), ms(r.wait_p50_ms), ms(r.wait_p99_ms), ms(r.wait_max_ms),
      int(r.timeouts), int(r.opened), int(r.closed), int(r.peak_connections),
      ("%.3f"):format(r.endpoint_max_min), int(r.pools_evicted), int(r.hook_errors) }, ",")
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Runs a shell command; returns its output (stdout and stderr) and exit code.
local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = f:read("*a")
  f:close()
  return (out:gsub("rc=%d+\n?$", "")), tonumber(out:match("rc=(%d+)\n?$"))
end

-- true, or nil and why a chart cannot be drawn (checked before simulating).
function R.can_plot(file)
  local _, rc = sh("command -v gnuplot >/dev/null")
  if rc ~= 0 then
    return nil, "--plot needs gnuplot, which is not installed (Debian: apt-get install gnuplot-nox)"
  end
  if not file:match("%.png$") then return nil, "--plot writes a PNG: give a FILE.png, got " .. file end
  return true
end

-- A string literal for a gnuplot script (single quotes: no escapes but '').
local function gp_string(s) return "'" .. s:gsub("'", "''") .. "'" end

-- Writes `text` to a fresh temporary file; returns its name.
local function temp(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

-- The data file: one gnuplot data set (index i - 1) per policy, columns
-- t, in use, open, wait p99 (ms).
local function plot_data(results)
  local parts = {}
  for _, r in ipairs(results) do
    local s, rows = r.series, { "# " .. r.policy }
    for k = 1, #s.t do
      rows[#rows + 1] = ("%.6g %.6g %.6g %.6g"):format(s.t[k], s.in_use[k], s.open[k], s.wait_p99_ms[k])
    end
    parts[#parts + 1] = table.concat(rows, "\n")
  end
  return table.concat(parts, "\n\n\n") .. "\n"
end

-- One `plot` command: column `col` of every policy's data set.
local function plot_cmd(results, data, col, extra)
  local items = {}
  for i, r in ipairs(results) do
    items[#items + 1] = ("%s index %d using 1:%d with lines lt %d lw 2 title %s"):format(
      gp_string(data), i - 1, col, i, gp_string(r.policy))
    if extra then
      items[#items + 1] = ("%s index %d using 1:%d with lines lt %d dt 2 lw 1 title %s"):format(
        gp_string(data), i - 1, extra, i, gp_string(r.policy .. " open"))
    end
  end
  return "plot " .. table.concat(items, ", \\\n     ")
end

-- Draws the results' series (M.run with series = true) into PNG `file`:
-- connections in use (open ones dashed) above, acquire wait p99 below.
-- true, or nil, err with gnuplot's complaint.
function R.plot(results, wl, file)
  local data = temp(plot_data(results))
  local script = temp(table.concat({
    "set terminal pngcairo size 1100,800 noenhanced",
    "set output " .. gp_string(file),
    ("set multiplot layout 2,1 title %s"):format(gp_string(("poolrt sim %s"):format(wl.file))),
    -- the same margins for both panels, so their time axes line up; the key once, at the top
    "set lmargin at screen 0.08", "set rmargin at screen 0.74", "set grid", "set key outside right top",
    ("set xrange [0:%.17g]"):format(wl.duration), "set yrange [0:*]",
    "set ylabel 'connections in use (dashed: open)'",
    plot_cmd(results, data, 2, 3),
    "unset key", "set xlabel 'virtual seconds'",
    "set ylabel 'acquire wait p99 (ms)'",
    plot_cmd(results, data, 4),
    "unset multiplot", "",
  }, "\n"))
  local out, rc = sh("gnuplot " .. script)
  os.remove(data)
  os.remove(script)
  local f = io.open(file)
  local size = f and f:seek("end") or 0
  if f then f:close() end
  if rc ~= 0 or size == 0 then
    return nil, ("gnuplot could not write %s:\n%s"):format(file, (out:gsub("^%s+", ""):gsub("%s+$", "")))
  end
  return true
end

return R
