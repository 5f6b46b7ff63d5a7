-- bench/report/targets.lua -- what the report judges, as data.  Each entry
-- is a comparison computed from the raw rows; one with `cmp` and
-- `threshold` is a target and gets a verdict (met / missed / not measured)
-- from the worst value it takes over the worker counts in `at` (every
-- count that ran when `at` is nil).  `source` names where the target was
-- set.  Entries with `matrix = true` form the ratio table of section 2.
--
-- measure "ratio": mean `field` (default tps) of series a over series b.
-- measure "errors": errors summed over `names` at `w` workers; a run that
-- completed no transaction counts as one error.
local T7 = "issue 7"
local ALL_W = "at every worker count"

local function matrix(label, a, b, target)
  local e = { label = label, measure = "ratio", section = "matrix", a = a, b = b, matrix = true }
  for k, v in pairs(target or {}) do e[k] = v end
  return e
end

local function at_least(x, claim, extra)
  local t = { cmp = ">=", threshold = x, unit = "x", source = T7 .. ": " .. claim }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local VS_PGBENCH = at_least(0.95, "max = W, ≥ 0.95x direct pgbench " .. ALL_W)
local VS_BOUNCER = at_least(1.3, "32 workers on 8 connections, ≥ 1.3x PgBouncer", { at = { 32 } })
local LUA_VS_C = at_least(0.9, "Lua host ≥ 0.9x the C client")
local VS_GO = at_least(1.0, "ahead of database/sql and pgxpool " .. ALL_W)
local T14 = "issue 14"
local function at_128(x, claim) return { cmp = ">=", threshold = x, unit = "x", at = { 128 }, source = T14 .. ": " .. claim } end
-- Client CPU per transaction of series a over pgbench -M prepared's, at W = 128 (a target only,
-- not a row of the TPS ratio table).
local function cpu_vs_pgbench(label, a)
  return { label = "client CPU per txn, " .. label .. " / pgbench -M prepared", measure = "ratio", section = "matrix",
           a = a, b = "pgbench_prepared", field = "cpu_per_txn", cmp = "<=", threshold = 1.2, unit = "x",
           at = { 128 }, source = T14 .. ": client CPU per transaction at W = 128 ≤ 1.2x pgbench's" }
end

return {
  matrix("poolrt C prepared (max=W) / pgbench -M prepared", "c_prepared", "pgbench_prepared", VS_PGBENCH),
  matrix("poolrt C unprepared (max=W) / pgbench -M extended", "c_unprepared", "pgbench_extended", VS_PGBENCH),
  matrix("poolrt C prepared (max=W) / pgbench -M extended", "c_prepared", "pgbench_extended"),
  matrix("(control) threads + libpq, no pool / pgbench -M prepared", "c_direct", "pgbench_prepared"),
  matrix("poolrt C prepared (max=W) / the same threads without a pool", "c_prepared", "c_direct"),
  matrix("poolrt C prepared, 8 conns / PgBouncer, 8 conns", "c_prepared_max8", "pgbouncer_extended", VS_BOUNCER),
  matrix("poolrt C unprepared, 8 conns / PgBouncer, 8 conns", "c_unprepared_max8", "pgbouncer_extended", VS_BOUNCER),
  matrix("(same, prepared, at every W > 8)", "c_prepared_max8", "pgbouncer_extended"),
  matrix("poolrt C multiplex, 8 conns / pgbench -M prepared (W conns)", "c_multiplex_max8", "pgbench_prepared",
         at_128(1.3, "128 workers on 8 connections with multiplex = true ≥ 1.3x pgbench -M prepared -c 128")),
  matrix("poolrt C multiplex, 8 conns / pgxpool (max=8)", "c_multiplex_max8", "go_pgx_max8",
         at_128(1.2, "128 workers on 8 connections with multiplex = true ≥ 1.2x pgxpool max = 8")),
  matrix("poolrt C multiplex / poolrt C exclusive (both max=8)", "c_multiplex_max8", "c_prepared_max8"),
  matrix("poolrt Lua host / poolrt C (multiplex, max=8)", "lua_multiplex_max8", "c_multiplex_max8"),
  matrix("poolrt Lua host / poolrt C (prepared, max=W)", "lua_prepared", "c_prepared", LUA_VS_C),
  matrix("poolrt Lua host / poolrt C (prepared, max=8)", "lua_prepared_max8", "c_prepared_max8", LUA_VS_C),
  matrix("poolrt Lua, W coroutine workers on 2 threads / poolrt C, a thread per worker (max=8)", "lua_workers_max8",
         "c_prepared_max8", LUA_VS_C),
  matrix("poolrt Lua, W coroutine workers on 2 threads (max=8) / pgbench -M prepared (W conns)", "lua_workers_max8",
         "pgbench_prepared"),
  matrix("poolrt Lua, W coroutine workers on 2 threads / pgxpool (both max=8)", "lua_workers_max8", "go_pgx_max8"),
  matrix("(Lua, raw FFI instead of pool:query) / poolrt C", "lua_ffi", "c_prepared"),
  matrix("poolrt C prepared / pgxpool (max=W)", "c_prepared", "go_pgx", VS_GO),
  matrix("poolrt C prepared / database/sql+lib/pq (max=W)", "c_prepared", "go_pq", VS_GO),
  matrix("poolrt C prepared / pgxpool (max=8)", "c_prepared_max8", "go_pgx_max8", VS_GO),
  matrix("poolrt C prepared / database/sql (max=8)", "c_prepared_max8", "go_pq_max8", VS_GO),
  matrix("poolrt Lua host / pgxpool (max=W)", "lua_prepared", "go_pgx", VS_GO),
  matrix("poolrt Lua host / database/sql+lib/pq (max=W)", "lua_prepared", "go_pq", VS_GO),
  cpu_vs_pgbench("poolrt Lua, W coroutine workers on 2 threads (max=8)", "lua_workers_max8"),
  cpu_vs_pgbench("poolrt C multiplex, a thread per worker (max=8)", "c_multiplex_max8"),
  cpu_vs_pgbench("poolrt C prepared, a thread per worker (max=W)", "c_prepared"),
  { label = "250 workers, max_connections=100: poolrt max 20, errors", measure = "errors", section = "conns250",
    names = { "c_prepared_250_max20", "lua_prepared_250_max20" }, w = 250,
    cmp = "==", threshold = 0, unit = " errors",
    source = T7 .. ": max 20 completes with zero errors" },
  { label = "Lua pick / built-in mru per cycle (instructions, callgrind)", measure = "ratio", section = "callgrind",
    a = "lua_pick", b = "builtin_mru", field = "ir_per_cycle", id = "pick_ir",
    cmp = "<=", threshold = 1.5, unit = "x",
    source = T7 .. ": a Lua pick ≤ 1.5x the built-in per cycle" },
  -- cycles per second: the built-in's rate over the Lua pick's is the cost ratio
  { label = "Lua pick / built-in mru per cycle (wall time, worst T)", measure = "ratio", section = "micro",
    a = "builtin_mru", b = "lua_pick", id = "pick_wall",
    cmp = "<=", threshold = 1.5, unit = "x",
    source = T7 .. ": a Lua pick ≤ 1.5x the built-in per cycle" },
}
