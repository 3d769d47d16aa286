-- luacheck: read globals ngx
--- The client token and the JWKS in a lua_shared_dict, for all workers.
--
-- Token: one entry per environment|client_id|scope|secret tag (never the secret)
-- holding "expires_at refresh_at token", TTL = expires_in. There is no per-worker copy
-- of the token in front of it, on purpose: a shared-dict read costs well under a
-- microsecond next to a network call, and a worker-local copy would outlive the
-- clear() another worker does after a 401 (invalidating it would need IPC), so a
-- revoked token would keep being sent.
local core = require "scalekit.core"
local phase = require "scalekit.ngx.phase"

local _M = {}

local ngx = ngx
local ngx_now = ngx.now
local update_time = ngx.update_time
local ngx_log = ngx.log
local WARN = ngx.WARN
local tonumber = tonumber
local setmetatable = setmetatable
local match = string.match
local format = string.format

--- The shared-dict identity of a client's token: environment, client id and scope,
--- plus a tag derived from the secret (never the secret itself), so that a client
--- configured with a wrong secret is not served the token a correct one stored.
---@param cfg {environment_url: string, client_id: string, client_secret: string, scope: string?}
---@return string
function _M.token_id(cfg)
  local id = cfg.environment_url .. "|" .. cfg.client_id .. "|" .. (cfg.scope or "")
  return id .. "|" .. core.b64url_encode(core.hmac_sha256(cfg.client_secret, id)):sub(1, 16)
end

local TokenStore = {}
local TokenStore_mt = { __index = TokenStore }

function TokenStore_mt.__tostring(self)
  return "scalekit.ngx.TokenStore (lua_shared_dict " .. self.dict_name .. ")"
end

local function parse(v)
  local exp, ref, token = match(v, "^(%S+) (%S+) (.+)$")
  return token, tonumber(exp), tonumber(ref)
end

--- token, expires_at (epoch s), needs_refresh | nothing
function TokenStore:get()
  local v = self.dict:get(self.key)
  if not v then return end
  local token, expires_at, refresh_at = parse(v)
  if not token then return end
  -- ngx.now() is the cached time of this event-loop turn; init phases have no loop
  if phase.blocking() then update_time() end
  local now = ngx_now()
  if now >= expires_at then return end
  return token, expires_at, now >= refresh_at
end

function TokenStore:set(token, expires_in, margin)
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
function TokenStore:clear(token)
  local dict, key = self.dict, self.key
  if token ~= nil then
    local v = dict:get(key)
    if not v or parse(v) ~= token then return end
  end
  dict:delete(key)
end

-- The token stays in the dict for the other workers and clients.
function TokenStore.close() end

---@param dict table ngx.shared.DICT
---@param name string its name
---@param cfg table validated options
function _M.token_store(dict, name, cfg)
  return setmetatable({ dict = dict, dict_name = name, key = "scalekit:token:" .. _M.token_id(cfg) },
                      TokenStore_mt)
end

local JwksCache = {}
local JwksCache_mt = { __index = JwksCache }

function JwksCache:get()
  return (self.dict:get(self.key))
end

function JwksCache:set(text, ttl)
  local ok, err = self.dict:set(self.key, text, ttl)
  if not ok then
    ngx_log(WARN, "scalekit: cannot cache the JWKS in lua_shared_dict '", self.dict_name, "': ", err)
  end
end

--- The environment's JWKS text in the dict (same get/set as auth.jwks.memory_cache()).
function _M.jwks_cache(dict, name, cfg)
  return setmetatable({ dict = dict, dict_name = name, key = "scalekit:jwks:" .. cfg.environment_url },
                      JwksCache_mt)
end

return _M
