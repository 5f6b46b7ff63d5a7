-- A pool over two servers (a conninfo naming two hosts): new connections
-- are spread over both, unreachable ones are skipped, and the pick policy
-- decides how queries spread (golang/go#68539: MRU concentrates, LRU spreads).
local poolrt = require "poolrt"
local H = require "spec.helper"
local S = require "spec.support.pgserver"

describe("a pool over two endpoints", function()
  local a, b, conninfo
  setup(function()
    a, b = S.start(), S.start()
    conninfo = ("host=127.0.0.1,127.0.0.1 port=%s,%s user=postgres dbname=postgres")
      :format(a.POOLRT_PGPORT, b.POOLRT_PGPORT)
  end)
  teardown(function() a:destroy() b:destroy() end)

  local function spread(policy)
    local rt = H.runtime{ policy = H.write_file(("return { pick = %q }"):format(policy)) }
    local pool = rt:pool("replicas", { max = 4, conninfo = conninfo })
    local held = {}
    for i = 1, 4 do held[i] = assert(pool:acquire()) end
    local opened = {}
    for i = 1, 4 do
      local port = assert(held[i]:query("select current_setting('port') as p"))[1].p
      opened[held[i]:endpoint()] = (opened[held[i]:endpoint()] or 0) + 1
      assert.equal(i % 2 == 1 and a.POOLRT_PGPORT or b.POOLRT_PGPORT, port)
    end
    for i = 1, 4 do held[i]:release() end
    local used = { 0, 0 }
    for _ = 1, 100 do
      pool:with(function(c) used[c:endpoint()] = used[c:endpoint()] + 1 end)
    end
    rt:close()
    return opened, used
  end

  it("opens new connections on the endpoint with the fewest, alternating", function()
    local opened = spread("mru")
    assert.same({ 2, 2 }, opened)
  end)

  it("mru sends every query to one server, lru spreads them evenly", function()
    local _, mru = spread("mru")
    assert.is_true(mru[1] == 100 or mru[2] == 100, ("mru: %d / %d"):format(mru[1], mru[2]))
    local _, lru = spread("lru")
    assert.same({ 50, 50 }, lru)
  end)

  it("skips an endpoint that is down", function()
    b:stop_server()
    local rt = H.runtime{ log_level = "off" }
    local pool = rt:pool("failover", { max = 3, conninfo = conninfo })
    local held = {}
    for i = 1, 3 do
      held[i] = assert(pool:acquire())
      assert.equal(1, held[i]:endpoint())
    end
    for i = 1, 3 do held[i]:release() end
    rt:close()
    poolrt.set_log_level("warn")
    b:start_server()
  end)
end)
