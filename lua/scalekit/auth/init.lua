--- Login with Scalekit (OIDC) and token/webhook validation: the client methods
--- authorization_url, logout_url (auth/urls.lua), authenticate_with_code,
--- refresh_access_token (auth/grants.lua), validate_access_token (auth/jwt.lua over
--- the JWKS of auth/jwks.lua), verify_webhook and verify_interceptor_payload
--- (auth/webhook.lua).
local errors = require "scalekit.errors"
local urls = require "scalekit.auth.urls"
local grants = require "scalekit.auth.grants"
local jwt = require "scalekit.auth.jwt"
local webhook = require "scalekit.auth.webhook"

local _M = {
  pkce = urls.pkce,
  random_string = urls.random_string,
}

local type = type
local pairs = pairs
local tostring = tostring
local misuse = errors.misuse

---@class scalekit.Auth
local Auth = {}
_M.methods = Auth

--- The URL to send the user to for login (`/oauth/authorize`). No I/O.
---@param redirect_uri string where Scalekit sends the user back with a code
---@param opts scalekit.AuthorizationUrlOptions?
---@return string url
function Auth:authorization_url(redirect_uri, opts)
  return urls.authorization_url(self, redirect_uri, opts)
end

--- The URL that ends the Scalekit session (`/oidc/logout`). No I/O.
---@param opts {id_token_hint: string?, post_logout_redirect_uri: string?, state: string?}?
---@return string url
function Auth:logout_url(opts)
  return urls.logout_url(self, opts)
end

---@class scalekit.ValidateOptions
---@field audience (string|string[])? required audience(s)
---@field scopes string[]? scopes the token must carry
---@field permissions string[]? permissions the token must carry
---@field leeway number? clock skew in seconds (default 60)
---@field algorithms string[]? accepted algorithms (default RS*/PS*/ES*; never none or HS*)
---@field issuer string? expected `iss` (default the environment URL)
---@field nonce string? expected `nonce`

local VALIDATE_KNOWN = {
  audience = true, scopes = true, permissions = true, leeway = true, algorithms = true,
  issuer = true, nonce = true, now = true,
}

--- Validate a Scalekit-issued JWT (access or id token): signature against the
--- environment's JWKS, `exp`/`nbf`/`iat`, `iss`, and the optional audience, scopes
--- and permissions. Bad tokens give `nil, err` (kind "auth"), never a Lua error.
---@param token string
---@param opts scalekit.ValidateOptions?
---@return table|nil claims
---@return scalekit.Error|nil err
function Auth:validate_access_token(token, opts)
  local o = { issuer = self.environment_url }
  if opts ~= nil then
    if type(opts) ~= "table" then misuse("validate_access_token: opts must be a table") end
    for k, v in pairs(opts) do
      if not VALIDATE_KNOWN[k] then misuse("validate_access_token: unknown option '%s'", tostring(k)) end
      o[k] = v
    end
  end
  return jwt.verify(token, self._jwks:lookup(), o)
end

--- Exchange the code Scalekit sent to the redirect_uri for tokens; the id_token is
--- verified (signature, iss, aud = client_id, exp, and nonce when given).
---@param code string
---@param redirect_uri string the same redirect_uri as in the authorization URL
---@param opts {code_verifier: string?, nonce: string?}?
---@return {user: table, id_token: string, access_token: string, refresh_token: string?, expires_in: number?}|nil
---@return scalekit.Error|nil err
function Auth:authenticate_with_code(code, redirect_uri, opts)
  return grants.authenticate_with_code(self, code, redirect_uri, opts)
end

--- Get new tokens with a refresh token (an id_token in the answer is verified too).
---@param refresh_token string
---@return {access_token: string, refresh_token: string?, id_token: string?, user: table?, expires_in: number?}|nil
---@return scalekit.Error|nil err
function Auth:refresh_access_token(refresh_token)
  return grants.refresh_access_token(self, refresh_token)
end

--- Verify a Scalekit webhook (Standard Webhooks signature, 300 s tolerance) and
--- return the decoded event.
---@param raw_body string the body exactly as received
---@param headers table request headers (any case; as ngx.req.get_headers() gives them)
---@param secret string the endpoint secret, `whsec_…`
---@param opts {tolerance: (number|false)?, now: number?}?
---@return table|nil event
---@return scalekit.Error|nil err
function Auth:verify_webhook(raw_body, headers, secret, opts) -- luacheck: ignore 212/self
  return webhook.verify(raw_body, headers, secret, opts)
end

--- Verify a signed interceptor request from Scalekit and return its payload.
---@param raw_body string
---@param headers table
---@param secret string
---@param opts {tolerance: (number|false)?, now: number?}?
---@return table|nil payload
---@return scalekit.Error|nil err
function Auth:verify_interceptor_payload(raw_body, headers, secret, opts) -- luacheck: ignore 212/self
  return webhook.verify_interceptor_payload(raw_body, headers, secret, opts)
end

return _M
