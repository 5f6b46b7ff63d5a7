-- Shared set-up for the specs: a runtime against the throwaway server that
-- `make test` started ($POOLRT_CONNINFO), and bounded waits on conditions.
local poolrt = require "poolrt"

local H = { conninfo = assert(os.getenv("POOLRT_CONNINFO"), "POOLRT_CONNINFO is not set (run via make test)") }

-- Polls cond() until it returns a true value or `timeout` seconds pass;
-- returns that value, or raises with `what` so a failed wait names itself.
function H.wait_until(cond, timeout, what)
  local deadline = poolrt.now() + (timeout or 5)
  while true do
    local v = cond()
    if v then return v end
    if poolrt.now() > deadline then error("timed out waiting for " .. (what or "condition"), 2) end
    poolrt.sleep(0.005)
  end
end

-- A runtime whose timer is off unless asked for, so specs drive reaping.
function H.runtime(opts)
  opts = opts or {}
  if opts.reap_interval == nil then opts.reap_interval = 0 end
  return poolrt.runtime(opts)
end

-- One-off admin statement on a connection of its own (never the pool's).
local admin_rt
function H.admin(sql, ...)
  admin_rt = admin_rt or poolrt.runtime{ reap_interval = 0 }
  local rows, err = admin_rt:pool("admin", { max = 1, prepare = false }):query(sql, ...)
  assert(rows, err)
  return rows
end

-- Waits until the server no longer has a backend with this pid.
function H.wait_backend_gone(pid)
  H.wait_until(function()
    return H.admin("select count(*) as n from pg_stat_activity where pid = $1", pid)[1].n == 0
  end, 5, "backend " .. pid .. " to exit")
end

-- A file's contents, or "" when it does not exist (yet).
function H.read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- Waits until the file at `path` contains `pattern` (a Lua pattern);
-- returns the contents.  For output of processes started in the background.
function H.wait_file(path, pattern, timeout, what)
  return H.wait_until(function()
    local s = H.read_file(path)
    return s:find(pattern) and s
  end, timeout, what)
end

-- Runs fn with the runtime's log silenced (specs that provoke errors on
-- purpose), restoring the level afterwards.
function H.quietly(fn, ...)
  local level = poolrt.log_level()
  poolrt.set_log_level("off")
  local res = { pcall(fn, ...) }
  poolrt.set_log_level(level)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
end

-- A fresh path in the run's scratch directory: tools/run-tests.sh makes
-- it ($POOLRT_SPEC_TMP) and removes it when the run ends.
local scratch, nscratch = os.getenv("POOLRT_SPEC_TMP"), 0
function H.tmpname(suffix)
  if not scratch then
    local f = assert(io.popen("mktemp -d /tmp/poolrt-spec.XXXXXX"))
    scratch = f:read("*l")
    f:close()
  end
  nscratch = nscratch + 1
  return ("%s/%d-%d%s"):format(scratch, math.random(1e9), nscratch, suffix or "")
end

-- Writes `src` to a temporary file (a policy, a script) and returns its path.
function H.write_file(src, path)
  path = path or H.tmpname(".lua")
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path
end

-- Runs a shell command; returns its output (stdout and stderr) and exit code.
function H.run(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = f:read("*a")
  f:close()
  local rc = tonumber(out:match("rc=(%d+)\n?$"))
  return (out:gsub("rc=%d+\n?$", "")), rc
end

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Starts a shell command in the background, its stdout and stderr to a file
-- of its own; returns a job:
--   job:done()               true once the command has exited
--   job:wait(timeout, what)  waits (bounded) for that; returns its output
--                            and exit code
-- The exit code goes to a temporary name and is renamed into place, so the
-- file exists only once it holds the whole code: `echo $? > rc` creates rc
-- empty before echo writes to it, and a poll in between read "" (a nil exit
-- code from a command that had finished normally).
local Job = {}
Job.__index = Job
function H.background(cmd)
  local base = H.tmpname()
  local job = setmetatable({ cmd = cmd, out = base .. ".out", rc_file = base .. ".rc" }, Job)
  local tmp = job.rc_file .. ".tmp"
  H.run("(" .. cmd .. " > " .. shq(job.out) .. " 2>&1; echo $? > " .. shq(tmp) .. " && mv " .. shq(tmp) .. " "
        .. shq(job.rc_file) .. ") >/dev/null 2>&1 &")
  return job
end

function Job:done()
  local f = io.open(self.rc_file)
  if f then f:close() end
  return f ~= nil
end

function Job:wait(timeout, what)
  H.wait_until(function() return self:done() end, timeout, what or ("background command: " .. self.cmd))
  return H.read_file(self.out), tonumber(H.read_file(self.rc_file):match("%d+"))
end

-- A loopback TCP port nothing listens on (tools/free-port.sh: below the
-- ephemeral range, picked at random by the shell -- LuaJIT's math.random
-- starts from the same seed in every process, so it would hand every run
-- the same port).
function H.free_port()
  local out, rc = H.run("tools/free-port.sh")
  return assert(rc == 0 and tonumber(out:match("^(%d+)")), "no free port found: " .. out)
end

-- Starts a process that terminates the backend running `select
-- pg_sleep($1)...` 0.2 s after it finds it (within 10 s) and prints
-- "killed PID" (or "nothing to kill").  Returns the popen handle: read
-- it once the statement under test has returned.
function H.sleep_killer()
  local src = H.write_file([[
    local poolrt = require "poolrt"
    local rt = poolrt.runtime{ reap_interval = 0 }
    local admin = rt:pool("killer", { max = 1, prepare = false })
    local deadline = poolrt.now() + 10
    while poolrt.now() < deadline do
      local rows = admin:query("select pid from pg_stat_activity where query like 'select pg_sleep($1)%' " ..
                               "and state = 'active' and pid <> pg_backend_pid() order by pid limit 1")
      if rows and rows[1] then
        poolrt.sleep(0.2)
        assert(admin:query("select pg_terminate_backend($1)", rows[1].pid))
        print("killed " .. rows[1].pid)
        os.exit(0)
      end
      poolrt.sleep(0.01)
    end
    print("nothing to kill")
  ]])
  return assert(io.popen("build/poolrt " .. src))
end

return H
