-- A PostgreSQL server of a spec's own (tools/pg.sh), for specs that stop,
-- restart or starve a server without disturbing the shared one.
local S = {}
S.__index = S

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = f:read("*a")
  f:close()
  return out:gsub("rc=%d+\n?$", ""), tonumber(out:match("rc=(%d+)\n?$"))
end

-- Starts a server; opts.max_connections sets the server's limit.
function S.start(opts)
  opts = opts or {}
  local dir = sh("mktemp -d /tmp/poolrt-spec-pg.XXXXXX"):gsub("%s+$", "")
  local env = opts.max_connections and ("POOLRT_PG_MAX_CONNECTIONS=" .. opts.max_connections .. " ") or ""
  local out, rc = sh(env .. "tools/pg.sh start " .. dir)
  assert(rc == 0, "tools/pg.sh start failed: " .. out)
  local self = setmetatable({ dir = dir }, S)
  local f = assert(io.open(dir .. "/env"))
  for line in f:lines() do
    local k, v = line:match("^export ([%w_]+)='(.*)'$")
    if k then self[k] = v end
  end
  f:close()
  self.conninfo = self.POOLRT_CONNINFO
  return self
end

function S:pg_ctl(args)
  local user = self.POOLRT_PGUSER_RUN
  local as = (user and user ~= "" and sh("id -un"):gsub("%s+$", "") ~= user) and ("runuser -u " .. user .. " -- ") or ""
  return sh(as .. self.POOLRT_PGBIN .. "/pg_ctl -w -t 30 -D " .. self.POOLRT_PGDATA .. " " .. args)
end

function S:stop_server()
  local out, rc = self:pg_ctl("-m fast stop")
  assert(rc == 0, "pg_ctl stop failed: " .. out)
end

function S:start_server()
  local out, rc = self:pg_ctl("-l " .. self.dir .. "/server.log start")
  assert(rc == 0, "pg_ctl start failed: " .. out)
end

-- Stops the server and removes its directory.
function S:destroy()
  sh("tools/pg.sh stop " .. self.dir)
end

return S
