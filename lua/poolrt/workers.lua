-- poolrt/workers.lua -- poolrt.workers(n, fn, ...): n workers as coroutines
-- of the calling thread's Lua state, the way pgbench serves its clients
-- from a few threads and Go runs goroutines on a few OS threads: a worker
-- is plain sequential code, and while its pool:query waits the others run.
--
-- The loop goes in rounds.  Each worker runs until its next pool:query,
-- or until it ends, sleeps or calls coroutine.yield(); then the statements
-- the round collected go out as one pool:query_batch per pool (each with a
-- Sync of its own, so one failing touches no other; with multiplex = true
-- pipelined on a shared connection, the thread doing its I/O), and each
-- worker is resumed with its own rows, or nil, err, in the order its
-- statement completed.  So a thread pays one wake-up per round, not one
-- per statement, and a worker's statements keep its order.
--
-- A pipeline runs its statements one after another on one server process,
-- which suits quick statements; once a pool's statements take longer than
-- SPREAD_ABOVE each (measured from its rounds), its rounds are spread
-- instead (pool:query_batch's spread: chunks of up to 16 on connections of
-- their own, run by several server processes at once).  Measured on 2
-- cores, 128 workers on max = 8: pgbench's select 0.82x as fast spread as
-- on one connection, 1 ms statements 3.7x as fast.
--
-- poolrt.sleep(s) in a worker lets the others run: the worker is resumed
-- in the first round that ends after s (the thread sleeps only when every
-- worker sleeps).  Anything else that blocks (pool:exec_simple, which
-- needs the simple protocol, pool:acquire, :with, :transaction) blocks
-- every worker of the thread while it runs, and a round lasts as long as
-- its slowest statement.
local poolrt = require "poolrt"
local I = require "poolrt.internal"

local W = {}
local TOKEN, RAISE, SLEEP = {}, {}, {} -- a worker's statement; a decoding error to raise in it; its sleep
local is_worker = I.workers -- coroutine -> true while it is a worker (weak keys)
local new_req, run_batch = I.new_req, I.run_batch
local yield, resume, status = coroutine.yield, coroutine.resume, coroutine.status
local now = poolrt.now
local CHUNK = poolrt.C.PRT_SPREAD_CHUNK -- a spread chunk's size
-- I.spread_above: SPREAD_ABOVE, seconds per statement (internal, so that a
-- spec can judge quick and slow by a margin its machine keeps under load).
I.spread_above = I.spread_above or 1e-4

-- pool:query inside a worker: the statement joins the round, and the
-- worker waits for its outcome.  Bad parameters raise here, in the worker,
-- as they would outside.
function W.query(pool, flags, sql, ...)
  local req = new_req(flags, { sql, ... }, 1, select("#", ...))
  local a, b = yield(TOKEN, pool, req)
  if a == RAISE then error(b, 0) end
  return a, b
end

-- poolrt.sleep inside a worker.
function W.sleep(s)
  yield(SLEEP, now() + s)
end

local function by_wake(a, b) return a.at < b.at end

-- The sleepers due at `now` (worker numbers, in the order of `sleepers`,
-- sorted by_wake), and the rest ({ k =, at = } each, as in `sleepers`).
local function due(sleepers, now)
  local ks, rest = {}, {}
  for _, z in ipairs(sleepers) do
    if z.at <= now then ks[#ks + 1] = z.k else rest[#rest + 1] = z end
  end
  return ks, rest
end

function W.run(n, fn, ...)
  if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then error("poolrt: workers count must be an integer >= 0", 2) end
  if type(fn) ~= "function" then error("poolrt: workers(n, fn, ...): fn must be a function", 2) end
  local nargs, args = select("#", ...), { ... }
  local cos, out, errs = {}, {}, {}
  -- This round's statements, grouped by pool in the order the pools came:
  local groups, by_pool = {}, {}
  local again = {} -- workers that yielded on their own: resumed next round
  local sleepers = {} -- { k =, at = }: workers in poolrt.sleep
  -- pool -> seconds per statement its rounds took (a moving average); false
  -- after its first round, which is not measured (connections opened,
  -- statements prepared)
  local took = {}

  -- Resumes worker k with ...; notes what it did next.
  local function step(k, ...)
    local co = cos[k]
    local ok, a, b, c = resume(co, ...) -- (TOKEN, pool, request), (SLEEP, wake time), or a plain yield
    if not ok then
      errs[#errs + 1] = ("worker %d: %s"):format(k, tostring(a))
    elseif status(co) == "dead" then
      out[k] = a
    elseif a == TOKEN then
      local g = by_pool[b]
      if not g then
        g = { pool = b, reqs = {}, who = {} }
        by_pool[b] = g
        groups[#groups + 1] = g
      end
      g.reqs[#g.reqs + 1], g.who[#g.who + 1] = c, k
      return
    elseif a == SLEEP then
      sleepers[#sleepers + 1] = { k = k, at = b }
      return
    else
      again[#again + 1] = k
      return
    end
    is_worker[co] = nil
  end

  for k = 1, n do
    cos[k] = coroutine.create(fn)
    is_worker[cos[k]] = true
  end
  I.workers_looping(1) -- nothing below raises: resume and run_batch are protected
  for k = 1, n do step(k, k, unpack(args, 1, nargs)) end
  while #groups > 0 or #again > 0 or #sleepers > 0 do
    local round, yielded = groups, again
    groups, by_pool, again = {}, {}, {}
    for _, g in ipairs(round) do
      local m, est = #g.reqs, took[g.pool]
      local spread = est and est > I.spread_above and m > CHUNK
      local t0 = now()
      local ok, results, berrs, raised = pcall(run_batch, g.pool, m, g.reqs, spread)
      -- one connection runs a chunk's statements one after another
      local one = (now() - t0) / (spread and math.ceil(m / math.ceil(m / CHUNK)) or m)
      if est == nil then took[g.pool] = false
      elseif est == false then took[g.pool] = one
      else took[g.pool] = 0.7 * est + 0.3 * one end
      for j = 1, m do
        if not ok then
          step(g.who[j], RAISE, results) -- the pool itself failed (a closed runtime): each worker raises it
        elseif not results then
          step(g.who[j], nil, berrs) -- the batch as a whole could not run: each statement's error
        elseif raised and raised[j] then
          step(g.who[j], RAISE, raised[j])
        elseif results[j] then
          step(g.who[j], results[j])
        else
          step(g.who[j], nil, berrs[j])
        end
      end
    end
    for _, k in ipairs(yielded) do step(k) end
    if #sleepers > 0 then
      table.sort(sleepers, by_wake)
      local t = now()
      if #groups == 0 and #again == 0 and sleepers[1].at > t then -- nothing else to run: wait for the first
        poolrt.C.prt_sleep(sleepers[1].at - t)
        t = now()
      end
      local woken
      woken, sleepers = due(sleepers, t)
      for _, k in ipairs(woken) do step(k) end
    end
  end
  I.workers_looping(-1)
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return out
end

return W
