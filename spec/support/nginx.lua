-- Helpers for the specs that drive real nginx through examples/nginx/run.sh
-- (spec/openresty_spec.lua, spec/nginx_budget_spec.lua): start and stop it,
-- HTTP GETs with curl, server connections by application_name, metrics.
local H = require "spec.helper"

local N = {}
N.RUN = "examples/nginx/run.sh"

function N.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Missing packages are a failure, not a skip: `make test` installs them.
function N.check_deps()
  local missing = {}
  local bin = os.getenv("NGINX_BIN")  -- run.sh honours it too
  local _, rc = H.run(bin and ("test -x " .. N.q(bin)) or "command -v nginx >/dev/null || test -x /usr/sbin/nginx")
  if rc ~= 0 then missing[#missing + 1] = bin or "nginx" end
  for _, f in ipairs{ "/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so",
                      "/usr/share/lua/5.1/resty/core.lua" } do
    local fh = io.open(f)
    if fh then fh:close() else missing[#missing + 1] = f end
  end
  local _, crc = H.run("command -v curl >/dev/null")
  if crc ~= 0 then missing[#missing + 1] = "curl" end
  if #missing > 0 then
    error("OpenResty specs need nginx + the lua module: missing " .. table.concat(missing, ", ")
          .. " -- install with tools/deps.sh nginx (apt-get install -y nginx libnginx-mod-http-lua lua-resty-core curl)", 0)
  end
end

-- GET url: body, status, seconds (curl's time_total).
function N.get(url)
  local out, rc = H.run("curl -sS -m 10 -o - -w '\\n@@%{http_code} %{time_total}' " .. N.q(url))
  local body, status, secs = out:match("^(.*)\n@@(%d+) ([%d.]+)$")
  if not body then error("curl " .. url .. " failed (rc " .. tostring(rc) .. "): " .. out, 2) end
  return body, tonumber(status), tonumber(secs)
end

-- A world-readable scratch dir: nginx runs as www-data when we are root.
function N.scratch_dir()
  local out, rc = H.run("d=$(mktemp -d /tmp/poolrt-nginx-spec.XXXXXX) && chmod 755 \"$d\" && echo \"$d\"")
  assert(rc == 0, out)
  return (out:gsub("%s+$", ""))
end

function N.write_readable(path, src)
  H.write_file(src, path)
  assert(select(2, H.run("chmod 644 " .. N.q(path))) == 0)
  return path
end

function N.backends(app, extra)
  return tonumber(H.admin("select count(*) as n from pg_stat_activity where application_name = $1" .. (extra or ""),
                          app)[1].n)
end

-- Ports of this host's TCP sockets in ESTABLISHED state (/proc/net/tcp).
local function established_ports()
  local ports = {}
  local f = io.open("/proc/net/tcp")
  if not f then return ports end
  for line in f:lines() do
    local lport, st = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)")
    if st == "01" then ports[tonumber(lport, 16)] = true end
  end
  f:close()
  return ports
end

-- Server connections of `app` whose client still holds them open: a backend
-- whose client has closed its socket stays in pg_stat_activity until it has
-- finished exiting, which on a loaded machine can outlast the moment its
-- budget unit went to a new connection.  What a budget bounds is the
-- connections its clients hold, so that is what this counts when the plain
-- count is over `limit`.
function N.backends_held(app, limit)
  local n = N.backends(app)
  if n <= limit then return n end -- the cheap count already says so (sampling stays fast)
  local rows = H.admin("select client_port from pg_stat_activity where application_name = $1", app)
  local open = established_ports()
  n = 0
  for _, r in ipairs(rows) do
    if open[tonumber(r.client_port)] then n = n + 1 end
  end
  return n
end

function N.pid_alive(pid)
  local _, rc = H.run("kill -0 " .. pid)
  return rc == 0
end

-- Starts nginx through run.sh; returns { prefix, url, master, app }.
-- o: app (application_name), workers, pool_max, policy, conf (a template),
-- env (more environment variables for run.sh and nginx).
function N.start_nginx(o)
  local env = {
    "POOLRT_CONNINFO=" .. N.q(H.conninfo .. " application_name=" .. o.app),
    "NGINX_WORKERS=" .. (o.workers or 1),
    "POOLRT_NGINX_POOL_MAX=" .. (o.pool_max or 4),
  }
  if o.policy then env[#env + 1] = "POOLRT_NGINX_POLICY=" .. N.q(o.policy) end
  if o.conf then env[#env + 1] = "NGINX_CONF=" .. N.q(o.conf) end
  for k, v in pairs(o.env or {}) do env[#env + 1] = k .. "=" .. N.q(v) end
  local out, rc = H.run(table.concat(env, " ") .. " " .. N.RUN .. " start")
  assert(rc == 0, "examples/nginx/run.sh start failed:\n" .. out)
  local n = { prefix = out:match("prefix=(%S+)"), url = out:match("url=(%S+)"), app = o.app, workers = o.workers or 1 }
  assert(n.prefix and n.url, "run.sh printed no prefix/url:\n" .. out)
  local f = assert(io.open(n.prefix .. "/logs/nginx.pid"))
  n.master = f:read("*l")
  f:close()
  H.wait_until(function()
    local ok, body, status = pcall(N.get, n.url .. "/ping")
    return ok and status == 200 and body == "pong\n"
  end, 10, "nginx to answer /ping")
  return n
end

function N.error_log(n)
  local f = io.open(n.prefix .. "/logs/error.log")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- Graceful `nginx -s quit` through run.sh (which waits for the master).
function N.stop_nginx(n)
  if not n or n.stopped then return end
  n.stopped = true
  local out, rc = H.run(N.RUN .. " stop " .. N.q(n.prefix))
  if rc ~= 0 or N.pid_alive(n.master) then
    H.run("kill -KILL " .. n.master .. "; pkill -KILL -P " .. n.master)
    error("nginx did not quit cleanly: " .. out)
  end
end

function N.cleanup(n)
  if not n then return end
  pcall(N.stop_nginx, n)
  H.run("rm -rf " .. N.q(n.prefix))
end

-- The JSON value of "key":"value" / "key":number in a body.
function N.field(body, key)
  return body:match('"' .. key .. '":"([^"]*)"') or body:match('"' .. key .. '":([%d.-]+)')
end

-- Sample value of a metric line with these labels in Prometheus text
-- ("": a sample without labels).
function N.metric(text, name, labels)
  if labels == "" then return tonumber(text:match("\n" .. name .. " (%S+)\n")) end
  for line in text:gmatch("[^\n]+") do
    local n, l, v = line:match("^([%w_]+){(.-)} (%S+)$")
    if n == name and l == labels then return tonumber(v) end
  end
end

return N
