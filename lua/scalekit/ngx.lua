-- luacheck: read globals ngx
--- scalekit inside OpenResty: picks the transport by phase, sleeps without blocking
--- the worker, and shares the token (and the JWKS) between workers.
--
-- scalekit.new() calls attach(session, cfg) when it runs inside ngx_lua. Nothing else
-- changes for the user: the same client works in every phase that allows I/O.
--
--   phase                                         transport   sleep
--   rewrite, access, content, timer, ssl_cert,    cosockets   ngx.sleep
--   ssl_session_fetch, ssl_client_hello, preread
--   init, init_worker, exit_worker                libcurl     blocking (no event
--                                                             loop runs there)
--   set, header_filter, body_filter, log,         raises "scalekit: no I/O in the
--   balancer, ssl_session_store                   <phase> phase; use ngx.timer.at"
--
-- Token store with `shared_dict`: one entry per environment|client_id|scope (never the
-- secret) holding "expires_at refresh_at token", TTL = expires_in. There is no
-- per-worker copy of the token in front of it, on purpose: a shared-dict read costs
-- well under a microsecond next to a network call, and a worker-local copy would
-- outlive the clear() another worker does after a 401 (invalidating it would need
-- IPC), so a revoked token would keep being sent. What each worker keeps is only the
-- "a fetch is running" marker that makes its coroutines wait instead of fetching.
--
-- Single flight (one token request for N workers x M concurrent requests):
--   1. in a worker, the first coroutine that needs a token fetches it; the others
--      poll (ngx.sleep, 1 ms doubling to 50 ms) until it is done and take its result;
--   2. across workers, that coroutine takes a shared-dict lock (dict:add, with an
--      expiry); a loser re-reads the dict while it waits, a winner re-reads before
--      fetching and unlocks on every path (pcall);
--   3. while a still-valid token exists, nobody waits: a refresh ahead of expiry
--      happens in one caller while the others keep using the old token;
--   4. waiting is bounded by `timeout` + 1 s; past it (the fetcher's request was
--      aborted, a worker died holding the lock) the waiter fetches itself. Init
--      phases cannot sleep, so there a caller that cannot lock fetches at once.
-- Without `shared_dict` the C token vault stays the store and step 1 still applies.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local transport = require "scalekit.ngx.transport"

local _M = {}

local ngx = ngx
local get_phase = ngx.get_phase
local ngx_sleep = ngx.sleep
local ngx_now = ngx.now
local update_time = ngx.update_time
local ngx_log = ngx.log
local WARN = ngx.WARN
local core_sleep = core.sleep
local error = error
local pcall = pcall
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local min = math.min
local match = string.match
local format = string.format

local WAIT_FIRST, WAIT_MAX = 0.001, 0.05

-- phases where cosockets and ngx.sleep work
local COSOCKET = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}
-- phases without an event loop to yield to, where blocking is the only way
local BLOCKING = { init = true, init_worker = true, exit_worker = true }

--- true in a cosocket phase, false in an init phase; raises where no I/O may happen.
local function io_mode()
  local phase = get_phase()
  if COSOCKET[phase] then return true end
  if BLOCKING[phase] then return false end
  error("scalekit: no I/O in the " .. tostring(phase) .. " phase; use ngx.timer.at", 0)
end

local function sleep(seconds)
  if io_mode() then return ngx_sleep(seconds) end
  return core_sleep(seconds)
end

local function pick_transport(self)
  if io_mode() then return self.ngx_transport end
  return self.http
end

---------------------------------------------------------------------------
-- single flight
---------------------------------------------------------------------------

-- Per-worker half, shared by both stores: while a coroutine of this worker fetches,
-- the others wait for its result. `self:locked_fetch(...)` does the fetching (with
-- the cross-worker lock for the shared-dict store).
local function single_flight(self, old, old_expires_at, fetch)
  local can_wait = io_mode()
  local flight = self.flight
  if flight then
    if old and ngx_now() < old_expires_at then
      return old, old_expires_at     -- being refreshed; the current one still works
    end
    if can_wait then
      local delay = WAIT_FIRST
      while not flight.done and ngx_now() < flight.deadline do
        ngx_sleep(delay)
        delay = min(delay * 2, WAIT_MAX)
      end
      if flight.done then
        local token, expires_at = self:get()
        if token then return token, expires_at end
        if flight.token then return flight.token, flight.expires_at end
        if flight.err then return nil, flight.err end
      end
    end
    -- overdue (its request was aborted?), failed with a Lua error, or an init phase
    -- that cannot wait: fetch ourselves
  end
  flight = { deadline = ngx_now() + self.wait }
  self.flight = flight
  local ok, token, res = pcall(self.locked_fetch, self, old, old_expires_at, fetch, can_wait)
  if self.flight == flight then self.flight = nil end
  if ok then
    if token then
      flight.token, flight.expires_at = token, res
    else
      flight.err = res
    end
  end
  flight.done = true
  if not ok then error(token, 0) end
  return token, res
end

local lock_serial = 0

local function lock_id()
  lock_serial = lock_serial + 1
  return tostring(ngx.worker.pid()) .. ":" .. lock_serial
end

---------------------------------------------------------------------------
-- token store in a lua_shared_dict
---------------------------------------------------------------------------

local ShmStore = {}
local ShmStore_mt = { __index = ShmStore }

function ShmStore_mt.__tostring(self)
  return "scalekit.ngx.SharedTokenStore (lua_shared_dict " .. self.dict_name .. ")"
end

local function parse(v)
  local exp, ref, token = match(v, "^(%S+) (%S+) (.+)$")
  return token, tonumber(exp), tonumber(ref)
end

--- token, expires_at (epoch s), needs_refresh | nothing
function ShmStore:get()
  local v = self.dict:get(self.key)
  if not v then return end
  local token, expires_at, refresh_at = parse(v)
  if not token then return end
  -- ngx.now() is the cached time of this event-loop turn; init phases have no loop
  if BLOCKING[get_phase()] then update_time() end
  local now = ngx_now()
  if now >= expires_at then return end
  return token, expires_at, now >= refresh_at
end

function ShmStore:set(token, expires_in, margin)
  update_time()
  local expires_at = ngx_now() + expires_in
  local ok, err = self.dict:set(self.key, format("%.3f %.3f %s", expires_at, expires_at - margin, token),
                                expires_in)
  if not ok then
    -- the token still serves this call; it just is not cached
    ngx_log(WARN, "scalekit: cannot cache the access token in lua_shared_dict '",
            self.dict_name, "': ", err)
  end
end

--- Drop the token; with `token`, only if it is still the stored one (after a 401,
--- another worker may already have put a new one there).
function ShmStore:clear(token)
  local dict, key = self.dict, self.key
  if token ~= nil then
    local v = dict:get(key)
    if not v or parse(v) ~= token then return end
  end
  dict:delete(key)
end

-- The token stays in the dict for the other workers and clients.
function ShmStore.close() end

ShmStore.single_flight = single_flight

local function unlock(dict, key, id)
  -- only our own lock: if it expired and someone else took it, leave theirs
  if dict:get(key) == id then dict:delete(key) end
end

function ShmStore:locked_fetch(old, old_expires_at, fetch, can_wait)
  local dict, lock = self.dict, self.lock_key
  local id = lock_id()
  local deadline = ngx_now() + self.wait
  local delay = WAIT_FIRST
  local held = false
  while true do
    local ok, err = dict:add(lock, id, self.wait)
    if ok then
      held = true
      break
    end
    if err ~= "exists" then break end   -- dict full: fetch without the lock
    if old and ngx_now() < old_expires_at then
      return old, old_expires_at        -- another worker refreshes; keep using this one
    end
    if not can_wait or ngx_now() >= deadline then break end  -- lock timeout: fetch ourselves
    ngx_sleep(delay)
    delay = min(delay * 2, WAIT_MAX)
    local token, expires_at, refresh = self:get()
    if token and not refresh then return token, expires_at end
  end
  -- the token may have arrived while we were getting the lock
  local token, expires_at, refresh = self:get()
  if token and not refresh then
    if held then unlock(dict, lock, id) end
    return token, expires_at
  end
  local ok, new, res = pcall(fetch)
  if held then unlock(dict, lock, id) end
  if not ok then error(new, 0) end
  if new then return new, res end
  -- the fetch failed: a token that is still valid (ours, or one another worker got
  -- meanwhile) keeps serving
  token, expires_at = self:get()
  if token then return token, expires_at end
  return nil, res
end

---------------------------------------------------------------------------
-- the C token vault, with the per-worker single flight in front
---------------------------------------------------------------------------

local VaultStore = {}
local VaultStore_mt = { __index = VaultStore }

function VaultStore_mt.__tostring()
  return "scalekit.ngx.VaultTokenStore"
end

function VaultStore:get() return self.vault:get() end
function VaultStore:set(token, expires_in, margin) return self.vault:set(token, expires_in, margin) end
function VaultStore:clear(token) return self.vault:clear(token) end
function VaultStore:close() return self.vault:close() end

VaultStore.single_flight = single_flight

function VaultStore:locked_fetch(_, _, fetch)
  local new, res = fetch()
  if new then return new, res end
  local token, expires_at = self.vault:get()
  if token then return token, expires_at end
  return nil, res
end

---------------------------------------------------------------------------
-- JWKS cache in a lua_shared_dict (same get/set as auth.memory_cache())
---------------------------------------------------------------------------

local ShmCache = {}
local ShmCache_mt = { __index = ShmCache }

function ShmCache:get()
  return (self.dict:get(self.key))
end

function ShmCache:set(text, ttl)
  local ok, err = self.dict:set(self.key, text, ttl)
  if not ok then
    ngx_log(WARN, "scalekit: cannot cache the JWKS in lua_shared_dict '", self.dict_name, "': ", err)
  end
end

---------------------------------------------------------------------------
-- attach
---------------------------------------------------------------------------

--- The shared-dict identity of a client's token: environment, client id and scope,
--- plus a tag derived from the secret (never the secret itself), so that a client
--- configured with a wrong secret is not served the token a correct one stored.
---@param cfg {environment_url: string, client_id: string, client_secret: string, scope: string?}
---@return string
function _M.token_id(cfg)
  local id = cfg.environment_url .. "|" .. cfg.client_id .. "|" .. (cfg.scope or "")
  return id .. "|" .. core.b64url_encode(core.hmac_sha256(cfg.client_secret, id)):sub(1, 16)
end

--- Make `session` OpenResty-aware: cosocket transport and ngx.sleep in request
--- phases, and with cfg.shared_dict the token and JWKS caches in that dict.
---@param session table scalekit.session object (http, store, sleep, jwks_cache…)
---@param cfg table validated options of scalekit.new
---@return true|nil ok
---@return scalekit.Error|nil err
function _M.attach(session, cfg)
  local dict
  local name = cfg.shared_dict
  if name ~= nil then
    dict = ngx.shared[name]
    if not dict then
      return nil, errors.new("auth", "lua_shared_dict '" .. name .. "' not found (add `lua_shared_dict "
        .. name .. " 1m;` to the http block of nginx.conf)", { error_code = "missing_configuration" })
    end
  end

  session.ngx_transport = transport.new({
    timeout = cfg.timeout,
    connect_timeout = cfg.connect_timeout,
    user_agent = session.user_agent, -- the same one the libcurl core sends
    max_body_size = cfg.max_body_size,
    keepalive_timeout = cfg.keepalive_timeout,
    keepalive_pool = cfg.keepalive_pool,
    ca_file = cfg.ca_file,
  })
  session.transport = pick_transport
  session.sleep = sleep

  -- how long anyone waits for somebody else's token fetch (and the lock's expiry)
  local wait = cfg.timeout + 1
  if dict then
    local id = _M.token_id(cfg)
    session.store:close()   -- the C vault made by scalekit.new, unused from here on
    session.store = setmetatable({
      dict = dict, dict_name = name, wait = wait,
      key = "scalekit:token:" .. id,
      lock_key = "scalekit:token-lock:" .. id,
    }, ShmStore_mt)
    session.jwks_cache = setmetatable({
      dict = dict, dict_name = name, key = "scalekit:jwks:" .. cfg.environment_url,
    }, ShmCache_mt)
  else
    session.store = setmetatable({ vault = session.store, wait = wait }, VaultStore_mt)
  end
  return true
end

return _M
