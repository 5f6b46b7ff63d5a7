-- bench/report/matrix.lua -- sections 1 and 2 of RESULTS.md: the
-- side-by-side matrix (TPS, latency, client CPU, one row per configuration
-- that ran, one column per worker count) and the ratio table with the
-- targets of targets.lua.
local fmt = require("report.fmt")
local verdict = require("report.verdict")
local SERIES = require("report.series")
local M = {}

local function w_head(run, first, ...)
  local h = { first }
  for _, w in ipairs(run.workers) do h[#h + 1] = "W=" .. w end
  for _, x in ipairs({ ... }) do h[#h + 1] = x end
  return h
end

-- One table: a row per matrix series that ran, cell(name, w) per worker count.
local function series_table(doc, run, cell)
  local rows = {}
  for _, s in ipairs(SERIES) do
    if run:has("matrix", s[1]) then
      local r = { s[2] }
      for _, w in ipairs(run.workers) do r[#r + 1] = cell(s[1], w) end
      rows[#rows + 1] = r
    end
  end
  doc:table(w_head(run, "client"), "l" .. ("r"):rep(#run.workers), rows)
end

local function tps_cell(run)
  return function(name, w)
    local rs = run:runs("matrix", name, w)
    if not rs then return "–" end
    local s = fmt.tps(run.mean(rs, "tps"))
    local lo, hi = run.range(rs, "tps")
    if #rs > 1 then s = s .. (" (%s–%s)"):format(fmt.tps(lo), fmt.tps(hi)) end
    local errs = 0
    for _, r in ipairs(rs) do errs = errs + r.errors end
    if errs > 0 then s = s .. (" **%d errors**"):format(errs) end
    return s
  end
end

function M.throughput(doc, run)
  doc:p("## 1. Throughput: pgbench's `-S` query")
  doc:p("")
  doc:p("pgbench's built-in select-only script (`SELECT abalance FROM pgbench_accounts WHERE aid = $1`,")
  doc:p("aid uniform over the table), every client holding or borrowing a connection per transaction.")
  doc:p("TPS, mean of the rounds, min–max of the rounds in brackets; – = not run:")
  doc:p("")
  series_table(doc, run, tps_cell(run))
  local rate = tonumber((run.cmds.pgbench_prepared or ""):match("%-%-sampling%-rate=([%d.]+)"))
  doc:p("Latency per transaction, p50 / p99, mean of the rounds (whole cycle: acquire + query + release")
  doc:p("for the pools; pgbench: from a %s sample of its per-transaction log; Lua host: from the",
    rate and ("%g%%"):format(rate * 100) or "sample")
  doc:p("histogram of `bench/select.lua`):")
  doc:p("")
  series_table(doc, run, function(name, w)
    local rs = run:runs("matrix", name, w)
    return rs and ("%s / %s"):format(fmt.us(run.mean(rs, "p50")), fmt.us(run.mean(rs, "p99"))) or "–"
  end)
end

function M.cpu(doc, run)
  doc:p("### Client CPU per transaction")
  doc:p("")
  doc:p("User + system CPU of the client process (all its threads) divided by its transactions, from")
  doc:p("bash's `time` around each run (for PgBouncer only pgbench's share; the pgbouncer process is")
  doc:p("not counted):")
  doc:p("")
  series_table(doc, run, function(name, w) return fmt.cpu(run:cpu_per_txn("matrix", name, w)) end)
end

function M.ratios(doc, run, targets, results)
  doc:p("## 2. Ratios and targets")
  doc:p("")
  doc:p("Ratios of mean TPS, per-round ratios (A and B of one round ran close together) in brackets;")
  doc:p("a verdict judges the worst worker count of its row against the target (section 7 names")
  doc:p("where each target comes from):")
  doc:p("")
  local rows = {}
  for i, e in ipairs(targets) do
    local res = results[i]
    if e.matrix and #res.values > 0 then
      local r = { e.label }
      for _, w in ipairs(run.workers) do
        local v = res.by_w[w]
        r[#r + 1] = v and fmt.ratio(v.r, v.lo, v.hi) or ""
      end
      r[#r + 1] = verdict.threshold(e)
      r[#r + 1] = res.verdict
      rows[#rows + 1] = r
    end
  end
  doc:table(w_head(run, "comparison", "target", "verdict"), "l" .. ("r"):rep(#run.workers) .. "ll", rows)
  doc:p("Like is compared with like as DESIGN.md asks: prepared execution against `pgbench -M prepared`,")
  doc:p("unprepared (unnamed extended protocol) against `-M extended`. PgBouncer in transaction mode")
  doc:p("cannot use named prepared statements, so it only has an extended row; poolrt's pool lives in the")
  doc:p("client process, so its prepared statements survive across borrowings, and the prepared row is")
  doc:p("poolrt as it is meant to be used (the unprepared row isolates the pooling itself).")
  doc:p("")
end

-- poolrt C / pgbench split into control / pgbench and poolrt / control.
function M.decomposition(doc, run)
  doc:p("### poolrt C / pgbench, in two factors")
  doc:p("")
  doc:p("Prepared execution. The control (the driver's threads, each with a libpq connection of its own,")
  doc:p("no pool) splits the ratio into the threading model (control / pgbench) and the pooling")
  doc:p("(poolrt / control); client CPU per transaction alongside:")
  doc:p("")
  local function q(a, b, w)
    local x, y = run:mean_of("matrix", a, w, "tps"), run:mean_of("matrix", b, w, "tps")
    return fmt.q(x and y and y > 0 and x / y or nil)
  end
  local rows = {}
  for _, w in ipairs(run.workers) do
    local cpu = {}
    for _, n in ipairs({ "pgbench_prepared", "c_direct", "c_prepared" }) do
      cpu[#cpu + 1] = fmt.cpu(run:cpu_per_txn("matrix", n, w))
    end
    rows[#rows + 1] = { w, q("c_direct", "pgbench_prepared", w), q("c_prepared", "c_direct", w),
      q("c_prepared", "pgbench_prepared", w), table.concat(cpu, ", ") }
  end
  doc:table({ "W", "control / pgbench (threading model)", "poolrt / control (pooling)", "poolrt / pgbench",
    "client CPU per txn: pgbench, control, poolrt" }, "rrrrl", rows)
end

return M
