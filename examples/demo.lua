-- A short tour of poolrt: one pool, a query with parameters, a transaction,
-- concurrent workers on OS threads and as coroutines, and the pool's
-- statistics.
--
--   make run                       (starts a throwaway PostgreSQL for you)
--   POOLRT_CONNINFO="host=... dbname=..." build/poolrt examples/demo.lua
local poolrt = require "poolrt"
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path

local rt = poolrt.runtime{ reap_interval = 1.0 }       -- conninfo from $POOLRT_CONNINFO
local pool = rt:pool("demo", { max = 4, acquire_timeout = 2.0 })

-- 1. A query: parameters are $1, $2...; values come back typed (int -> number, text -> string).
local rows = assert(pool:query("select $1::int + 1 as n, version() as server", 41))
print(("1. select 41 + 1 -> %s   (%s)"):format(rows[1].n, rows[1].server:match("^%S+ %S+")))

-- 2. A transaction on one connection; it is released even if the function raises.
assert(pool:query("create table if not exists demo_accounts (id int primary key, balance int)"))
pool:with(function(conn)
  assert(conn:query("begin"))
  assert(conn:query("insert into demo_accounts values (1, 100), (2, 50) on conflict (id) do update set balance = excluded.balance"))
  assert(conn:query("update demo_accounts set balance = balance - 30 where id = 1"))
  assert(conn:query("update demo_accounts set balance = balance + 30 where id = 2"))
  assert(conn:query("commit"))
end)
for _, r in ipairs(assert(pool:query("select id, balance from demo_accounts order by id"))) do
  print(("2. account %s balance %s"):format(r.id, r.balance))
end

-- 3. Errors are values: nil plus a message that names the pool.
local _, err = pool:query("select * from no_such_table")
print("3. error: " .. err)

-- 4. Eight OS threads share the pool's four connections (demo_worker.lua, found via package.path).
local t0 = poolrt.now()
local results = assert(rt:spawn(8, "demo_worker", "run", "demo", 250))
local total = 0
for _, n in ipairs(results) do total = total + n end
print(("4. 8 threads ran %d queries on %d connections in %.2fs"):format(
  total, rt:stats().demo.total, poolrt.now() - t0))

-- 5. 200 workers as coroutines of this one thread, plain sequential code each: while
--    one waits for its rows the others run, and their statements go out together,
--    pipelined on a multiplexed pool's connections.
local shared = rt:pool("demo_shared", { max = 4, multiplex = true })
t0 = poolrt.now()
local sums = assert(poolrt.workers(200, function(k)
  local sum = 0
  for i = 1, 25 do sum = sum + shared:query("select $1::int * $2::int as v", k, i)[1].v end
  return sum
end))
print(("5. 200 coroutine workers ran %d queries over %d connection(s) in %.2fs (worker 7's sum: %d)"):format(
  200 * 25, rt:stats().demo_shared.total, poolrt.now() - t0, sums[7]))

-- 6. Statistics, named like PgBouncer's SHOW POOLS.
local s = rt:stats().demo
print("6. pool    cl_active cl_waiting sv_active sv_idle  maxwait  acquires  created  timeouts")
print(("   %-7s %9d %10d %9d %7d %8.3f %9d %8d %9d"):format("demo", s.cl_active, s.cl_waiting,
  s.sv_active, s.sv_idle, s.maxwait, s.acquire_total, s.connections_created_total, s.acquire_timeouts_total))

assert(pool:query("drop table demo_accounts"))
rt:close()
