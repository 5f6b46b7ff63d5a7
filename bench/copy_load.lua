-- bench/copy_load.lua -- loads N two-column rows (int, text) into a fresh
-- table, either with conn:copy_in or with one pool:query INSERT per row
-- (prepared, autocommit: what an application without COPY does).
--
--   build/poolrt bench/copy_load.lua copy|insert N
--
-- Prints one key=value line: mode= rows= secs= rows_per_s=
local poolrt = require "poolrt"

local mode, n = (...), tonumber((select(2, ...))) or 100000
assert(mode == "copy" or mode == "insert", "mode: copy | insert")

local rt = poolrt.runtime{ reap_interval = 0 }
local pool = rt:pool("load", { max = 1 })
assert(pool:query("drop table if exists bench_load"))
assert(pool:query("create table bench_load (id int primary key, name text)"))
assert(pool:query("checkpoint"))

local t0 = poolrt.now()
if mode == "copy" then
  local i = 0
  local copied = assert(pool:copy_in("copy bench_load (id, name) from stdin", function()
    i = i + 1
    if i <= n then return { i, "name " .. i } end
  end))
  assert(copied == n, "copied " .. copied)
else
  local conn = assert(pool:acquire())
  for i = 1, n do assert(conn:query("insert into bench_load (id, name) values ($1, $2)", i, "name " .. i)) end
  conn:release()
end
local secs = poolrt.now() - t0
local got = assert(pool:query("select count(*) as c from bench_load"))[1].c
assert(got == n, "table holds " .. got)
assert(pool:query("drop table bench_load"))
print(("mode=%s rows=%d secs=%.3f rows_per_s=%.0f"):format(mode, n, secs, n / secs))
rt:close()
