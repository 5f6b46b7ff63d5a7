-- bench/report/extras.lua -- sections 3 to 6 of RESULTS.md: 250 workers
-- against a small max_connections, the pool-only microbenchmark (with
-- callgrind), replica balance and the spike.  Each section is left out
-- when its rows are missing from the run.
local fmt = require("report.fmt")
local verdict = require("report.verdict")
local M = {}

local function conns250_row(run, name, label)
  local r = run:one("conns250", name, 250)
  if not r then return nil end
  local note = (r.first_error ~= '""' and r.first_error) or ""
  if name:match("^pgbench") then note = r.extra:match("^cpu_s=[^ ]* (.+)$") or note end
  if r.conns then note = ("pool ended with %s connections. %s"):format(r.conns, note) end
  return { label:format(r.w, r.max), fmt.tps(r.tps), ("%s / %s"):format(fmt.us(r.p50), fmt.us(r.p99)), r.errors, note }
end

function M.conns250(doc, run)
  if not run:has("conns250") then return end
  doc:p("## 3. More workers than `max_connections`")
  doc:p("")
  local setting = run:one("conns250", "setting", 0)
  doc:p("Server restarted with %s for this case. pgbench needs one server process per client;",
    setting and setting.extra or "a lower max_connections")
  doc:p("the pools multiplex their threads over their max. Errors, and the first error as recorded:")
  doc:p("")
  local rows = {}
  for _, c in ipairs({ { "pgbench_direct_250", "pgbench -c %d direct" },
                       { "c_prepared_250_max20", "poolrt C driver, %d threads, max %d" },
                       { "lua_prepared_250_max20", "poolrt Lua host, %d threads, max %d" } }) do
    rows[#rows + 1] = conns250_row(run, c[1], c[2])
  end
  doc:table({ "client", "TPS", "p50 / p99", "errors", "note" }, "lrlrl", rows)
end

local MICRO = {
  { "builtin_mru", "poolrt, built-in `mru` (C fast path)" },
  { "lua_pick", "poolrt, Lua `pick` function (bench/pick_lua.lua)" },
  { "builtin_lru", "poolrt, built-in `lru`" },
  { "go_sql_conn", "Go database/sql: `db.Conn` + `Close`" },
  { "go_pgxpool", "Go pgxpool: `Acquire` + `Release`" },
}

-- The thread counts of the microbenchmark, from its rows.
local function micro_threads(run)
  local t = {}
  for w in pairs(run.rows.micro.builtin_mru or {}) do t[#t + 1] = w end
  table.sort(t)
  return t
end

local function callgrind_table(doc, run, e, res)
  local n1, n2 = (run.cmds.callgrind_builtin_mru or ""):match("%-n {(%d+),(%d+)}")
  doc:p("Instructions per acquire + release cycle (callgrind, one thread; the difference between a")
  doc:p("%s- and a %s-cycle run, so start-up and shutdown cancel out):", n1 or "?", n2 or "?")
  doc:p("")
  local rows = {}
  for _, m in ipairs({ { "builtin_mru", "built-in mru" }, { "lua_pick", "Lua pick function" },
                       { "builtin_lru", "built-in lru" } }) do
    local r = run:one("callgrind", m[1], 1)
    if r then rows[#rows + 1] = { m[2], tostring(r.ir_per_cycle) } end
  end
  if res.worst then rows[#rows + 1] = { ("**%s** (target %s)"):format(e.label, verdict.threshold(e)),
    ("**%s**"):format(fmt.x(res.worst)) } end
  doc:table({ "pick", "instructions / cycle" }, "lr", rows)
end

function M.micro(doc, run, find)
  if not run:has("micro") then return end
  local ts = micro_threads(run)
  doc:p("## 4. Pool-only microbenchmark: acquire + release")
  doc:p("")
  doc:p("No query: each thread loops acquire → release on a pool of %s already-open connections for",
    run:cmd_opt("builtin_mru", "-m") or "?")
  doc:p("%s s (more threads than connections: contended, waiters queue FIFO and a release hands the",
    run:cmd_opt("builtin_mru", "-d") or "?")
  doc:p("connection to the oldest waiter). Cycles per second, all threads together (mean of rounds):")
  doc:p("")
  local head, rows = { "pool" }, {}
  for _, t in ipairs(ts) do head[#head + 1] = "T=" .. t end
  for _, m in ipairs(MICRO) do
    if run:has("micro", m[1]) then
      local r = { m[2] }
      for _, t in ipairs(ts) do r[#r + 1] = fmt.tps(run:mean_of("micro", m[1], t, "tps")) end
      rows[#rows + 1] = r
    end
  end
  local e, res = find("pick_wall")
  local r = { ("**%s** (target %s)"):format(e.label, verdict.threshold(e)) }
  for _, t in ipairs(ts) do
    local v = res.by_w[t]
    r[#r + 1] = v and fmt.ratio(v.r, v.lo, v.hi) or "–"
  end
  rows[#rows + 1] = r
  doc:table(head, "l" .. ("r"):rep(#ts), rows)
  if run:has("callgrind") then callgrind_table(doc, run, find("pick_ir")) end
  doc:p("The Go rows use goroutines (GOMAXPROCS = %s, the machine's cores); callgrind was not run on",
    run.meta.nproc or "?")
  doc:p("the Go pools (valgrind does not support Go's runtime well).")
  doc:p("")
end

-- Rows of the replica table, also written to the chart's data file.
function M.replica_rows(run)
  local rows = {}
  for _, w in ipairs({ 1, 3 }) do
    for _, pol in ipairs({ "mru", "lru", "random" }) do
      local r = run:one("replica_servers", "replica_" .. pol, w)
      if r then
        local s1, s2 = tonumber(r.server1) or 0, tonumber(r.server2) or 0
        local mx, mn = math.max(s1, s2), math.min(s1, s2)
        rows[#rows + 1] = { w, pol, s1, s2, mn > 0 and ("%.2f"):format(mx / mn) or "∞" }
      end
    end
  end
  return rows
end

function M.replica(doc, run)
  if not run:has("replica_servers") then return end
  local r = run:one("replica", "replica_mru", 1)
  doc:p("## 5. Replica balance (golang/go#68539)")
  doc:p("")
  doc:p("Two PostgreSQL servers on two loopback ports and one poolrt pool (max %s) over both: the",
    r and r.max or "?")
  doc:p("multi-host conninfo makes poolrt send each new connection to the endpoint with the fewest of")
  doc:p("the pool's connections. The pool opens its connections up front; then W workers run the `-S`")
  doc:p("query with a random pause after each (a light load), for %s s per `pick` policy.",
    run:cmd_opt("replica_mru", "-d") or "?")
  doc:p("Transactions per server are `pg_stat_database.xact_commit` deltas (read after the pool closed;")
  doc:p("they include a handful of the bench's own reads).")
  doc:p("")
  doc:table({ "W", "pick", "server 1", "server 2", "max/min" }, "rlrrr", M.replica_rows(run))
end

function M.spike(doc, run)
  if not run:has("spike") then return end
  local d = run:one("spike", "spike_default", 50) or {}
  doc:p("## 6. Spike (HikariCP's spike test, adapted)")
  doc:p("")
  doc:p("%s worker threads start at once against a cold pool whose connections open slowly (`bench/relay`",
    d.w or "?")
  doc:p("delays each connection set-up), each running `%s` in a loop for %s s. Configured",
    (run.cmds.spike_default or ""):match("%-S (.-) %-d") or "?", run:cmd_opt("spike_default", "-d") or "?")
  doc:p("max %s; `clamp.lua` sizes the pool from the threads it is told about (`threads + headroom`,", d.max or "?")
  doc:p("capped at its MAX).")
  doc:p("")
  local rows = {}
  for _, pol in ipairs({ "default", "clamp" }) do
    local r = run:one("spike", "spike_" .. pol, 50)
    if r then
      rows[#rows + 1] = { pol == "default" and ("built-in default (max %d)"):format(r.max) or "policies/clamp.lua",
        tostring(r.conns), tostring(r.created),
        ("%s / %s / %s"):format(fmt.us(r.acq_p50_us), fmt.us(r.acq_p99_us), fmt.us(r.acq_max_us)),
        fmt.tps(r.tps), r.errors }
    end
  end
  doc:table({ "policy", "connections at the end", "opened", "acquire wait p50 / p99 / max", "TPS", "errors" },
    "lrrlrr", rows)
end

return M
