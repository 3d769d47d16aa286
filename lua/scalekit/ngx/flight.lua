-- luacheck: read globals ngx
--- Single flight in OpenResty: one fetch of a thing (the client token, the JWKS) at a
--- time for all the coroutines of a worker, and, with a lua_shared_dict, for all
--- workers. One wait loop and one unlock path serve both.
--
--   f:run(name, fetch, peek, old, old_expires_at) -> value, extra | nil, err
--     fetch()  gets the thing (and stores it where peek sees it): value, extra | nil, err
--     peek()   what is stored now: value, extra, fresh (fresh: no need to fetch)
--     old      a value still valid until old_expires_at (epoch s): while someone else
--              fetches, callers keep using it instead of waiting
--
-- 1. In a worker, the first coroutine fetches; the others wait (ngx.sleep, 1 ms
--    doubling to 50 ms) for it and take its result (or its error).
-- 2. Across workers, that coroutine first takes a shared-dict lock (dict:add with an
--    expiry); a loser re-reads through peek() while it waits; the winner re-reads
--    before fetching and unlocks on every path (unlock_and_ret, as mlcache does).
-- 3. Waiting is bounded by `wait` seconds; past it (the fetcher's request was
--    aborted, a worker died holding the lock) the waiter fetches itself. Init phases
--    cannot sleep: there a caller that cannot lock fetches at once.
local phase = require "scalekit.ngx.phase"
local errors = require "scalekit.errors"

local _M = {}

local ngx = ngx
local ngx_sleep = ngx.sleep
local ngx_now = ngx.now
local pcall = pcall
local error = error
local tostring = tostring
local setmetatable = setmetatable
local min = math.min

local WAIT_FIRST, WAIT_MAX = 0.001, 0.05

local Flight = {}
local mt = { __index = Flight }

--- @param opts {wait: number, dict: table?, lock_prefix: string?}
function _M.new(opts)
  return setmetatable({
    wait = opts.wait, dict = opts.dict, lock_prefix = opts.lock_prefix,
    running = {},   -- name -> the flight of this worker under way
  }, mt)
end

-- The one wait loop: sleep with backoff until done() is true or the deadline passes.
-- Returns done()'s last answer.
local function wait_until(done, deadline)
  local delay = WAIT_FIRST
  local ok = done()
  while not ok and ngx_now() < deadline do
    ngx_sleep(delay)
    delay = min(delay * 2, WAIT_MAX)
    ok = done()
  end
  return ok
end

local lock_serial = 0

local function lock_id()
  lock_serial = lock_serial + 1
  return tostring(ngx.worker.pid()) .. ":" .. lock_serial
end

-- The lock of `name` across workers: id when held, nil when not (dict full, or no
-- dict). A value handed back meanwhile by peek() ends the wait: fresh, v, extra.
local function lock(self, name, peek, old, old_expires_at, can_wait)
  local dict = self.dict
  if not dict then return nil end
  local key = self.lock_prefix .. name
  local id = lock_id()
  local deadline = ngx_now() + self.wait
  local v, extra, fresh
  local held
  wait_until(function()
    local ok, err = dict:add(key, id, self.wait)
    if ok then held = true; return true end
    if err ~= "exists" then return true end          -- dict full: go on without the lock
    if old and ngx_now() < old_expires_at then      -- another worker refreshes it
      v, extra, fresh = old, old_expires_at, true
      return true
    end
    if not can_wait then return true end             -- init phase: cannot wait
    v, extra, fresh = peek()
    return fresh
  end, can_wait and deadline or 0)
  if fresh then return nil, v, extra end
  return held and id or nil
end

-- unlock (only our own lock: if it expired and another took it, leave theirs) and
-- return what we were going to return
local function unlock_and_ret(self, name, id, ...)
  if id then
    local key = self.lock_prefix .. name
    if self.dict:get(key) == id then self.dict:delete(key) end
  end
  return ...
end

-- fetch with the cross-worker lock; every path goes through unlock_and_ret
local function locked_fetch(self, name, fetch, peek, old, old_expires_at, can_wait)
  local id, v, extra = lock(self, name, peek, old, old_expires_at, can_wait)
  if v ~= nil then return v, extra end
  local fresh
  v, extra, fresh = peek()  -- it may have arrived while we were getting the lock
  if fresh then return unlock_and_ret(self, name, id, v, extra) end
  local ok, value, res = pcall(fetch)
  if not ok then
    unlock_and_ret(self, name, id)
    error(value, 0)
  end
  if value then return unlock_and_ret(self, name, id, value, res) end
  -- the fetch failed: a value that is still valid (ours, or one another worker got
  -- meanwhile) keeps serving
  v, extra = peek()
  if v then return unlock_and_ret(self, name, id, v, extra) end
  return unlock_and_ret(self, name, id, nil, res)
end

function Flight:run(name, fetch, peek, old, old_expires_at)
  local can_wait = phase.can_yield()
  local running = self.running[name]
  if running then
    if old and ngx_now() < old_expires_at then
      return old, old_expires_at   -- being refreshed; the current one still works
    end
    if can_wait and wait_until(function() return running.done end, running.deadline) then
      local v, extra = peek()
      if v then return v, extra end
      if running.value then return running.value, running.extra end
      if running.err then return nil, running.err end
    end
    -- overdue (its request was aborted?) or an init phase that cannot wait: fetch
    -- ourselves
  end
  local flight = { deadline = ngx_now() + self.wait }
  self.running[name] = flight
  local ok, value, res = pcall(locked_fetch, self, name, fetch, peek, old, old_expires_at, can_wait)
  if self.running[name] == flight then self.running[name] = nil end
  if ok then
    if value then
      flight.value, flight.extra = value, res
    else
      flight.err = res
    end
  else
    -- a fetch that raised still hands its waiters a result: they must not each
    -- fetch again (that is the stampede the flight exists to prevent)
    flight.err = errors.new("network", name .. " fetch failed: " .. tostring(value))
  end
  flight.done = true
  if not ok then error(value, 0) end
  return value, res
end

return _M
