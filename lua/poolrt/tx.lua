-- poolrt.tx -- transactions with retries: pool:transaction(fn, opts) and
-- conn:transaction(fn, opts) of poolrt.lua.
--
-- fn(conn, attempt) runs between BEGIN (with the isolation and read-only
-- options) and COMMIT on one connection.  If fn raises, the transaction is
-- rolled back and the error re-raised; if fn returns nil, err, it is rolled
-- back and nil, err returned.  A serialization failure (SQLSTATE 40001) or
-- a deadlock (40P01) -- raised by one of fn's queries or by COMMIT itself --
-- re-runs the whole of fn up to opts.retries times (default 0), after a
-- short jittered pause; once they are used up the result is nil, err naming
-- the SQLSTATE and the attempts.
--
-- Which error ended an attempt is read from the connection's SQLSTATE
-- (prt_conn_sqlstate), not parsed from messages.  That state also tells a
-- transaction that fn let fail and then returned normally from one that
-- worked: once a transaction is aborted every later statement fails, so the
-- last statement fn ran carries an SQLSTATE exactly when COMMIT would
-- silently roll back.
local I = require "poolrt.internal"
local M = {}

local ISOLATION = { serializable = true, ["repeatable read"] = true, ["read committed"] = true }
local RETRYABLE = { ["40001"] = true, ["40P01"] = true }
local OPTS = { isolation = "string", read_only = "boolean", retries = "number" }
local PAUSE_MIN, PAUSE_MAX = 0.005, 0.05 -- seconds; doubling between retries

-- The BEGIN statement for opts, and the retries allowed.  Bad options are
-- programming errors and raise.
local function parse(opts)
  if opts == nil then return "begin", 0 end
  if type(opts) ~= "table" then error("poolrt: transaction(fn, opts): opts must be a table", 4) end
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then error(("poolrt: unknown transaction option %q"):format(tostring(k)), 4) end
    if type(v) ~= want then
      error(("poolrt: transaction option %s must be a %s, got %s"):format(k, want, type(v)), 4)
    end
  end
  if opts.isolation and not ISOLATION[opts.isolation] then
    error(("poolrt: transaction isolation %q (want \"serializable\", \"repeatable read\" or \"read committed\")")
          :format(opts.isolation), 4)
  end
  local retries = opts.retries or 0
  if retries < 0 or retries ~= math.floor(retries) then
    error("poolrt: transaction option retries must be an integer >= 0", 4)
  end
  local sql = "begin"
  if opts.isolation then sql = sql .. " isolation level " .. opts.isolation end
  if opts.read_only ~= nil then sql = sql .. (opts.read_only and " read only" or " read write") end
  return sql, retries
end

local function pack(...) return { n = select("#", ...), ... } end

-- One attempt on conn.  Returns "ok", fn's results; "raise", the error;
-- or "fail", err, sqlstate ("" when not the server's).
local function attempt(conn, fn, begin, n)
  local ok, err = conn:exec_simple(begin)
  if not ok then return "fail", err, conn:sqlstate() end
  local res = pack(pcall(fn, conn, n))
  local held = I.conn_ptr(conn) ~= nil
  local state = not conn.broken and held and conn:sqlstate() or ""
  if not res[1] or (res[2] == nil and res[3] ~= nil) or state ~= "" then
    if held and not conn.broken then conn:exec_simple("rollback") end
    if not res[1] then return "raise", res[2], state end
    if res[2] == nil and res[3] ~= nil then return "fail", res[3], state end
    return "fail", ("fn returned normally, but its transaction had failed (SQLSTATE %s)"):format(state), state
  end
  ok, err = conn:exec_simple("commit")
  if not ok then return "fail", err, conn:sqlstate() end
  return "ok", res
end

-- The final error after `n` attempts that ended in a retryable failure.
local function exhausted(pool, n, err)
  local prefix = ('pool "%s": '):format(pool.name)
  if err:sub(1, #prefix) == prefix then err = err:sub(#prefix + 1) end
  return ("%stransaction failed after %d attempt%s: %s"):format(prefix, n, n == 1 and "" or "s", err)
end

-- conn:transaction(fn, opts) on a connection the caller holds (and keeps).
function M.run(conn, fn, opts)
  if type(fn) ~= "function" then error("poolrt: transaction(fn, opts): fn must be a function", 3) end
  local begin, retries = parse(opts)
  local poolrt = require "poolrt"
  local pause = PAUSE_MIN
  for n = 1, retries + 1 do
    local how, a, state = attempt(conn, fn, begin, n)
    if how == "ok" then return unpack(a, 2, a.n) end
    local retryable = RETRYABLE[state] and not conn.broken
    if not retryable then
      if how == "raise" then error(a, 0) end
      return nil, a
    end
    if n > retries then return nil, exhausted(conn.pool, n, tostring(a)) end
    I.C.prt_pool_note_tx_retry(I.pool_ptr(conn.pool))
    poolrt.sleep(pause * (0.5 + 0.5 * math.random()))
    pause = math.min(pause * 2, PAUSE_MAX)
  end
end

-- pool:transaction(fn, opts): the same on a connection of its own, released
-- afterwards (as broken when it broke); nil, err when none could be had.
function M.pool_run(pool, fn, opts)
  if type(fn) ~= "function" then error("poolrt: transaction(fn, opts): fn must be a function", 3) end
  parse(opts) -- bad options raise before a connection is taken
  local conn, err = pool:acquire()
  if not conn then return nil, err end
  local res = pack(pcall(M.run, conn, fn, opts))
  conn:release()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

return M
