-- `promtool check metrics`, Prometheus' own linter for the text exposition
-- format (Debian package prometheus; tools/deps.sh nginx installs it for
-- `make test`).  A missing promtool is a failure, not a skip.
local H = require "spec.helper"

local M = {}

-- Lints `text`; returns promtool's complaints ("" when none) and exit code.
function M.check(text)
  local _, found = H.run("command -v promtool >/dev/null")
  if found ~= 0 then
    error("promtool is missing -- install it with tools/deps.sh nginx"
          .. " (apt-get install -y --no-install-recommends prometheus)", 2)
  end
  local path = H.write_file(text, H.tmpname(".prom"))
  local out, rc = H.run("promtool check metrics < " .. path)
  os.remove(path)
  return out, rc
end

return M
