-- poolrt.listen -- LISTEN/NOTIFY: pool:listen(channels) of poolrt.lua
-- (src/listen.c does the work).
--
--   local l = pool:listen({ "jobs", "cache" })
--   local n, err = l:wait(5)   -- { channel =, payload =, pid = } or nil, "timeout"
--   l:close()
--
-- A listener holds one connection of its pool for its whole life (it counts
-- against the pool's max) until close() or the garbage collector gives it
-- back, UNLISTENed.  Channel names are quoted as identifiers: "Jobs" and
-- "a b" are channels of their own.  If the connection drops (server
-- restart, pg_terminate_backend), later waits reconnect and LISTEN again,
-- and the wait that managed it returns nil, "reconnected" once: anything
-- NOTIFY'd while the listener was down is lost (PostgreSQL keeps no
-- notifications for a session that is gone), so re-read what you watch.
-- While it is still reconnecting a wait returns nil, "timeout", detail.
local ffi = require "ffi"
require "poolrt.cdef"
local I -- poolrt.internal, from the first listener on (it loads poolrt)

local M = {}
local C -- poolrt's library handle, from the first listener on

local Listener = {}
Listener.__index = Listener

local ERRLEN = 512
local errbuf = ffi.new("char[?]", ERRLEN)
local note = ffi.new("prt_notification")
local out = ffi.new("prt_listener*[1]")

local function library()
  I = I or require "poolrt.internal"
  C = C or I.C
  return C
end

-- A listener on `pool` (a poolrt pool) for a list of channel names, or nil,
-- err when no connection could be had within the pool's acquire_timeout.
function M.open(pool, channels)
  library()
  if type(channels) == "string" then channels = { channels } end
  if type(channels) ~= "table" or #channels == 0 then
    error("poolrt: listen(channels): channels must be a non-empty list of names", 3)
  end
  for _, ch in ipairs(channels) do
    if type(ch) ~= "string" or ch == "" or ch:find("\0", 1, true) then
      error("poolrt: listen(channels): every channel must be a non-empty string", 3)
    end
  end
  local arr = ffi.new("const char*[?]", #channels, channels)
  local rc = C.prt_listener_open(I.pool_ptr(pool), arr, #channels, out, errbuf, ERRLEN)
  if rc == C.PRT_ECLOSED and I.refresh(pool) then -- the pool was evicted meanwhile
    rc = C.prt_listener_open(I.pool_ptr(pool), arr, #channels, out, errbuf, ERRLEN)
  end
  if rc ~= 0 then return nil, ffi.string(errbuf) end
  return setmetatable({ _l = ffi.gc(out[0], C.prt_listener_close), pool = pool }, Listener)
end

-- A handle on a listener opened elsewhere in this process (its address());
-- it does not own it: whoever opened it closes it.
function M.attach(address)
  library()
  return setmetatable({ _l = ffi.cast("prt_listener*", address) }, Listener)
end

local function live(self)
  local l = self._l
  if not l then error("poolrt: listener is closed", 3) end
  return l
end

-- The next notification within `timeout` seconds: { channel =, payload =,
-- pid = } (pid: the notifying backend), or nil, "timeout" (a third value
-- says why when the listener is reconnecting), nil, "reconnected" (once,
-- after a dropped connection was replaced), or nil, err.
function Listener:wait(timeout)
  local l = live(self)
  if type(timeout) ~= "number" or timeout < 0 then error("poolrt: listener:wait(timeout): timeout must be a number >= 0", 2) end
  local rc = C.prt_listener_wait(l, timeout, note, errbuf, ERRLEN)
  if rc == 0 then
    return { channel = ffi.string(note.channel), payload = ffi.string(note.payload), pid = note.pid }
  end
  if rc == C.PRT_ETIMEDOUT then -- with no connection, err says why the reconnect has not worked yet
    return nil, "timeout", C.prt_listener_backend_pid(l) == 0 and ffi.string(errbuf) or nil
  end
  if rc == C.PRT_ERECONNECTED then return nil, "reconnected" end
  return nil, ffi.string(errbuf)
end

-- The server process id of the listener's connection (nil while reconnecting).
function Listener:backend_pid()
  local pid = C.prt_listener_backend_pid(live(self))
  return pid ~= 0 and pid or nil
end

-- The listener's address, for a handle in another Lua state (M.attach).
function Listener:address() return tonumber(ffi.cast("uintptr_t", live(self))) end

-- UNLISTENs and gives the connection back to the pool.  Idempotent.
function Listener:close()
  local l = self._l
  if not l then return end
  self._l = nil
  ffi.gc(l, nil)
  C.prt_listener_close(l)
end

-- Hands listener `l` over to another Lua state of this process: `l` forgets
-- its pointer without closing it, and the address returned is for
-- M.attach there (resty.poolrt opens listeners on worker threads).
function M.disown(l)
  local ptr = live(l)
  l._l = nil
  ffi.gc(ptr, nil)
  return tonumber(ffi.cast("uintptr_t", ptr))
end

return M
