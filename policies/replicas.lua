-- replicas.lua: reads go to standbys that keep up, to the primary when none
-- does; a server that keeps refusing connections is left alone for a while.
-- For pools whose conninfo names a primary and its standbys, with
-- target_session_attrs=prefer-standby (reads) or read-write (writes).

local MAX_LAG = 1.0 -- seconds a standby may be behind and still serve reads

return {
  max_lag = MAX_LAG,                      -- C retires connections to a standby that falls behind
  ban = { after = 3, first = 1, max = 30 }, -- 3 failed connects: banned 1 s, doubling up to 30 s

  -- The server for a new connection: the standby the pool prefers with the
  -- fewest of its connections, if one keeps up; else the primary; else
  -- any server the pool allows (roles not known yet).
  endpoint = function(endpoints, pool)
    local standby, primary, any
    for i = 1, #endpoints do
      local e = endpoints[i]
      if e.allowed then
        if e.preferred and e.role == "standby" and e.up and e.lag_seconds < MAX_LAG
           and (not standby or e.pool_open < endpoints[standby].pool_open) then
          standby = i
        elseif e.role == "primary" then
          primary = i
        else
          any = any or i
        end
      end
    end
    return standby or primary or any
  end,
}
