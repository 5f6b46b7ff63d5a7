-- Hot reload walk-through: a pool serves queries while you edit its policy.
--
--   cp policies/mru.lua /tmp/my_policy.lua
--   build/poolrt --watch --policy /tmp/my_policy.lua examples/hot_reload.lua
--   # in another terminal, change pick = "mru" to pick = "lru" and save:
--   #   the running process prints the new generation and its picks spread out.
--   # or: kill -HUP <pid>   (reload without --watch)
--   # a policy with a mistake is refused; the old one keeps serving.
local poolrt = require "poolrt"

local rt = poolrt.runtime{}                         -- takes --policy from the host
local pool = rt:pool("app", { max = 4 })
local seconds = tonumber(arg[1] or 30)

-- four connections in the idle list
local held = {}
for i = 1, 4 do held[i] = assert(pool:acquire()) end
for i = 1, 4 do held[i]:release() end

local stop, gen = poolrt.now() + seconds, nil
while poolrt.now() < stop do
  local used = {}
  for _ = 1, 8 do
    local c = assert(pool:acquire())
    used[#used + 1] = c.id
    assert(c:query("select 1"))
    c:release()
  end
  local ps = rt:policy_stats()
  if ps.generation ~= gen then
    gen = ps.generation
    print(("generation %d (reloads ok=%d failed=%d): connections handed out %s"):format(
      gen, ps.reloads.ok, ps.reloads.failed, table.concat(used, " ")))
  end
  poolrt.sleep(0.2)
end
