-- rt:spawn entry points for spec/batch_spec.lua: OS threads, each its own
-- Lua state, running batches through one multiplexed pool.
local M = {}

-- `nbatch` batches of `size` statements; every `fail_every`-th statement of
-- a batch divides by zero.  Returns "ok=.. failed=.." or the first surprise:
-- a wrong value (another statement's result), an error where none was due,
-- or a success where the statement had to fail.
function M.batches(rt, i, pool_name, nbatch, size, fail_every)
  local pool = rt:pool(pool_name)
  local ok, failed = 0, 0
  for b = 1, nbatch do
    local stmts = {}
    for k = 1, size do
      local bad = fail_every > 0 and k % fail_every == 0
      stmts[k] = { "select $1::int8 as v, 1 / $2::int as one", (i * 1000 + b) * 1000 + k, bad and 0 or 1 }
    end
    local res, errs = pool:query_batch(stmts)
    if not res then return "batch " .. b .. ": " .. tostring(errs) end
    for k = 1, size do
      local bad = fail_every > 0 and k % fail_every == 0
      local want = stmts[k][2]
      if bad then
        if res[k] then return ("caller %d batch %d statement %d should have failed"):format(i, b, k) end
        if not (errs and errs[k] and errs[k]:find("division by zero", 1, true)) then
          return "wrong error: " .. tostring(errs and errs[k])
        end
        failed = failed + 1
      else
        if not res[k] then return ("caller %d batch %d statement %d: %s"):format(i, b, k, tostring(errs[k])) end
        if res[k][1].v ~= want then
          return ("caller %d got %s, want %d"):format(i, tostring(res[k][1].v), want)
        end
        ok = ok + 1
      end
    end
  end
  return ("ok=%d failed=%d"):format(ok, failed)
end

-- Odd threads run batches of `size`, even ones single statements, `n`
-- rounds each, on the same pool; returns "ok" or the first wrong value.
function M.mixed(rt, i, pool_name, n, size)
  local pool = rt:pool(pool_name)
  for r = 1, n do
    if i % 2 == 1 then
      local stmts = {}
      for k = 1, size do stmts[k] = { "select $1::int as v", i * 100000 + r * 100 + k } end
      local res, errs = pool:query_batch(stmts)
      if errs then return "batch error: " .. tostring(select(2, next(errs))) end
      for k = 1, size do
        if res[k][1].v ~= stmts[k][2] then return ("wrong value %s for %d"):format(res[k][1].v, stmts[k][2]) end
      end
    else
      for k = 1, size do
        local want = i * 100000 + r * 100 + k
        local rows, err = pool:query("select $1::int as v", want)
        if not rows then return "query error: " .. err end
        if rows[1].v ~= want then return ("wrong value %s for %d"):format(rows[1].v, want) end
      end
    end
  end
  return "ok"
end

-- A fresh state's first batch, without parameters (nothing allocated for
-- them yet): the rows of each statement, in order, as "1,2".
function M.first_without_params(rt, i, pool_name)
  local res, errs = rt:pool(pool_name):query_batch({ { "select 1 as n" }, { "select 2 as n" } })
  if not res then return "failed: " .. tostring(errs) end
  if errs then return "errors" end
  return res[1][1].n .. "," .. res[2][1].n
end

return M
