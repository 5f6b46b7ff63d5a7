-- A primary and a streaming standby of a spec's own (tools/pg-pair.sh),
-- for specs of multi-host conninfo, target_session_attrs and failover.
--
--   local pair = require "spec.support.pair"
--   local p = pair.start()          -- raises (with pg-pair.sh's output) on failure
--   finally(function() p:stop() end)
--   p.primary_port, p.standby_port  -- numbers, the current roles
--   p:conninfo("target_session_attrs=prefer-standby")
--   p:sql("standby", "select pg_is_in_recovery()")  --> "t"
--   p:switchover()                  -- roles flip; the ports follow
--
-- Every wait is bounded.  A spec that wrecks its pair (switchover) starts a
-- pair of its own.  pair.stop_all() (for teardown) stops whatever pairs are
-- still running; if the whole spec process dies first, the guard that
-- pg-pair.sh leaves (POOLRT_PAIR_WATCH_PID) stops them.
local P = {}
P.__index = P

local pair = { running = {} }

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = f:read("*a")
  f:close()
  return (out:gsub("rc=%d+\n?$", "")), tonumber(out:match("rc=(%d+)\n?$"))
end

-- Clock and sleep: the runtime's when the spec runs under build/poolrt,
-- else the shell's (coarse, but every use is a bounded poll).
local ok, poolrt = pcall(require, "poolrt")
local now = ok and poolrt.now or os.time
local sleep = ok and poolrt.sleep or function(s) os.execute("sleep " .. s) end

-- Polls cond() until it returns a true value or `timeout` seconds pass;
-- returns that value or raises naming `what` (and cond's last error, if any).
function pair.wait_until(cond, timeout, what)
  local deadline = now() + (timeout or 10)
  local last
  while true do
    local v, err = cond()
    if v then return v end
    last = err or last
    if now() > deadline then
      error(("timed out after %ss waiting for %s%s"):format(timeout or 10, what or "condition",
            last and (" (last: " .. tostring(last) .. ")") or ""), 2)
    end
    sleep(0.02)
  end
end

function P:_load_env()
  local f = assert(io.open(self.dir .. "/env"))
  local env = {}
  for line in f:lines() do
    local k, v = line:match("^export ([%w_]+)='(.*)'$")
    if k then env[k] = v end
  end
  f:close()
  self.env = env
  self.primary_port = tonumber(env.POOLRT_PRIMARY_PORT)
  self.standby_port = tonumber(env.POOLRT_STANDBY_PORT)
  self.pgbin = env.POOLRT_PGBIN
end

-- Starts a pair in a fresh temporary directory.
function pair.start()
  local dir = sh("mktemp -d /tmp/poolrt-pair.XXXXXX"):gsub("%s+$", "")
  local self = setmetatable({ dir = dir }, P)
  pair.running[self] = true
  -- $PPID, expanded by popen's shell, is this process: the guard watches it.
  local out, rc = sh("POOLRT_PAIR_WATCH_PID=$PPID tools/pg-pair.sh start " .. shq(dir))
  if rc ~= 0 then
    self:stop()
    error("tools/pg-pair.sh start failed: " .. out, 2)
  end
  self:_load_env()
  return self
end

-- The multi-host conninfo (primary first, then standby, as they are now),
-- with `extra` appended: a string ("target_session_attrs=read-write") or a
-- table of keywords ({ target_session_attrs = "prefer-standby" }).
function P:conninfo(extra)
  local s = self.env.POOLRT_PAIR_CONNINFO
  if type(extra) == "table" then
    local keys = {}
    for k in pairs(extra) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do s = s .. " " .. k .. "=" .. tostring(extra[k]) end
  elseif extra and extra ~= "" then
    s = s .. " " .. extra
  end
  return s
end

-- which: "primary" | "standby" (the current roles) | a port number.
function P:port(which)
  if which == "primary" then return self.primary_port end
  if which == "standby" then return self.standby_port end
  return assert(tonumber(which), "which: \"primary\", \"standby\", a port or a conninfo")
end

-- A single-host conninfo for one node.
function P:node_conninfo(which)
  return ("host=127.0.0.1 port=%d dbname=postgres user=postgres"):format(self:port(which))
end

-- Runs `sql` through psql on one node (which: "primary", "standby", a port,
-- or a whole conninfo string such as self:conninfo(...)); returns the first
-- value as a string ("" for NULL, nil when there are no rows), or nil, err.
function P:try_sql(which, sql)
  local ci = (type(which) == "string" and which:find("=")) and which or self:node_conninfo(which)
  local out, rc = sh("PGCONNECT_TIMEOUT=5 " .. self.pgbin .. "/psql -X -Atq -v ON_ERROR_STOP=1 -d "
                     .. shq(ci) .. " -c " .. shq(sql))
  if rc ~= 0 then return nil, (out:gsub("%s+$", "")) end
  return out:match("^([^\n]*)")
end

-- As try_sql, but raises on error.
function P:sql(which, sql)
  local v, err = self:try_sql(which, sql)
  if v == nil and err then error(("sql on %s failed: %s"):format(tostring(which), err), 2) end
  return v
end

-- Polls (bounded) until `sql` on `which` returns `expected` (a string);
-- errors count as "not yet" (a table not replicated yet).
function P:wait_sql(which, sql, expected, timeout, what)
  return pair.wait_until(function()
    local v, err = self:try_sql(which, sql)
    if v == expected then return true end
    return false, err or ("got " .. tostring(v))
  end, timeout or 10, what or (("%q to return %q on %s"):format(sql, expected, tostring(which))))
end

local function tool(self, cmd, arg)
  local out, rc = sh("tools/pg-pair.sh " .. cmd .. " " .. shq(self.dir) .. (arg and " " .. shq(arg) or ""))
  if rc ~= 0 then error("tools/pg-pair.sh " .. cmd .. " failed: " .. out, 3) end
  self:_load_env()
  return out
end

-- Waits (bounded) until the standby streams from the primary.
function P:wait_streaming() return tool(self, "wait-streaming") end

-- Clean switchover: the primary stops (-m fast), the standby is promoted,
-- the old primary restarts as a standby of the new one; waits until it
-- streams.  Afterwards primary_port/standby_port name the new roles.
function P:switchover() return tool(self, "switchover") end

-- Stops (halt) or starts again (resume) the node that has role `which`
-- ("primary" or "standby") now, keeping its data.
function P:halt(which) return tool(self, "halt", which) end
function P:resume(which) return tool(self, "resume", which) end

-- Stops both servers and removes the directory; safe to call twice.
function P:stop()
  if not pair.running[self] then return end
  pair.running[self] = nil
  local out, rc = sh("tools/pg-pair.sh stop " .. shq(self.dir))
  assert(rc == 0, "tools/pg-pair.sh stop failed: " .. out)
end

-- Stops every pair this process started and has not stopped yet.
function pair.stop_all()
  for p in pairs(pair.running) do pcall(P.stop, p) end
end

return pair
