--- scalekit: Lua client for the Scalekit API (B2B authentication).
--
--   local scalekit = require "scalekit"
--   local sk = assert(scalekit.new{ environment_url = …, client_id = …, client_secret = … })
--   local org, err = sk:call("OrganizationService_GetOrganization", { id = "org_1" })
--
-- See README.md for every option, the error rules and pagination. This file only
-- builds a client: options (config.lua), then the environment of the session (here
-- for plain Lua; scalekit/ngx/ inside OpenResty), the session, the client.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local config = require "scalekit.config"
local request = require "scalekit.request"
local session = require "scalekit.session"
local client = require "scalekit.client"
local auth = require "scalekit.auth"
local jwks = require "scalekit.auth.jwks"
local curl = require "scalekit.transport.curl"

local _M = {
  _VERSION = core.version,
  errors = errors,
  DEFAULTS = config.DEFAULTS,
  pkce = auth.pkce,                   -- verifier, challenge, "S256"
  random_string = auth.random_string, -- for state and nonce
  interceptor_response = require("scalekit.auth.webhook").interceptor_response,
}

local type = type
local tostring = tostring
local pairs = pairs
local ipairs = ipairs
local rawget = rawget
local getenv = os.getenv

local function in_openresty()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

-- A configuration error, also written to nginx's error log inside OpenResty: the
-- usual `assert(scalekit.new{…})` raises the error table, which ngx_lua cannot print
-- ("init_by_lua error: unknown error"), so the message would be lost.
local function config_error(err)
  local ngx = in_openresty() and rawget(_G, "ngx")
  if ngx then ngx.log(ngx.ERR, tostring(err)) end
  return err
end

-- The transport, token store, sleep, flight and JWKS cache of plain Lua.
local function plain_environment(cfg)
  return {
    transport = curl.new(cfg),
    store = core.token_vault(),
    sleep = core.sleep,
    flight = session.DIRECT,
    jwks_cache = jwks.memory_cache(),
  }
end

-- The secret lives only in these closures: no table field holds it.
local function secrets(cfg)
  local id, secret = cfg.client_id, cfg.client_secret
  local form = request.form({
    grant_type = "client_credentials", client_id = id, client_secret = secret, scope = cfg.scope,
  })
  cfg.client_secret = nil
  -- the secret as it appears raw and form-encoded, as Lua patterns
  local patterns = {}
  for _, v in ipairs({ secret, request.encode(secret) }) do
    patterns[#patterns + 1] = (v:gsub("%p", "%%%0"))
  end
  return {
    token_form = function() return form end,
    client_form = function(fields)
      fields.client_id, fields.client_secret = id, secret
      return request.form(fields)
    end,
    redact = function(text)
      if #secret < 4 then return text end
      for i = 1, #patterns do
        if text:find(patterns[i]) then text = text:gsub(patterns[i], "[redacted]") end
      end
      return text
    end,
  }
end

--- Create a client. Raises on bad options (misuse); performs no I/O.
---@param opts scalekit.Options
---@return scalekit.Client|nil client
---@return scalekit.Error|nil err
function _M.new(opts)
  local cfg = config.validate(opts)
  local env, err
  if in_openresty() then
    env, err = require("scalekit.ngx").environment(cfg, jwks.memory_cache)
    if not env then return nil, config_error(err) end
  else
    env = plain_environment(cfg)
  end
  return client.new(cfg, session.new(cfg, env, secrets(cfg)))
end

--- A client-credentials token for another M2M client (an organization's API
--- client, say), with the scopes it asks for: fetched once, never cached.
---@param opts {environment_url: string, client_id: string, client_secret: string, scopes: string[]?}
---@return string|nil token
---@return number|scalekit.Error expires_at epoch seconds, or the error
function _M.client_token(opts)
  if type(opts) ~= "table" then errors.misuse("client_token: opts must be a table") end
  local o = {}
  for k, v in pairs(opts) do
    if k ~= "scopes" then o[k] = v end
  end
  local scopes = opts.scopes
  if scopes ~= nil then
    if type(scopes) ~= "table" then errors.misuse("client_token: scopes must be a list of strings") end
    for i = 1, #scopes do
      if type(scopes[i]) ~= "string" or scopes[i]:find("[%s%c]") then
        errors.misuse("client_token: scopes[%d] must be a string without spaces", i)
      end
    end
    o.scope = table.concat(scopes, " ")
  end
  local sk, err = _M.new(o)
  if not sk then return nil, err end
  local token, expires_at = sk:token()
  sk:close()
  return token, expires_at
end

--- Create a client from SCALEKIT_ENVIRONMENT_URL, SCALEKIT_CLIENT_ID and
--- SCALEKIT_CLIENT_SECRET; `opts` may add any other option.
---@param opts scalekit.Options?
---@return scalekit.Client|nil client
---@return scalekit.Error|nil err
function _M.from_env(opts)
  local o, err = config.from_env(opts, getenv)
  if not o then return nil, config_error(err) end
  return _M.new(o)
end

return _M
