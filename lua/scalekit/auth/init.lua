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
local did_you_mean = errors.did_you_mean
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
---@field issuer (string|string[])? expected `iss`, or a list of accepted ones (default the
---environment URL; Scalekit MCP tokens may come from `{env}/resources/{id}`)
---@field nonce string? expected `nonce`

local VALIDATE_KNOWN = {
  audience = true, scopes = true, permissions = true, leeway = true, algorithms = true,
  issuer = true, nonce = true, now = true,
}

local function validate(client, token, opts, fn, defaults)
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  if opts ~= nil then
    if type(opts) ~= "table" then misuse("%s: opts must be a table", fn) end
    for k, v in pairs(opts) do
      if not VALIDATE_KNOWN[k] then
        misuse("%s: unknown option '%s'%s", fn, tostring(k), did_you_mean(k, VALIDATE_KNOWN))
      end
      o[k] = v
    end
  end
  -- several accepted issuers: verify without, then require one of them
  local issuers = o.issuer
  if type(issuers) == "table" then
    for i = 1, #issuers do
      if type(issuers[i]) ~= "string" then misuse("%s: opts.issuer[%d] must be a string", fn, i) end
    end
    if #issuers == 0 then misuse("%s: opts.issuer must not be an empty list", fn) end
    o.issuer = nil
  end
  local claims, err = jwt.verify(token, client._jwks:lookup(), o)
  if claims and type(issuers) == "table" then
    local iss = claims.iss
    for i = 1, #issuers do
      if iss == issuers[i] then return claims end
    end
    return nil, errors.new("auth", "token issuer does not match", { error_code = "issuer_mismatch" })
  end
  return claims, err
end

--- Validate a Scalekit-issued JWT (access or id token): signature against the
--- environment's JWKS, `exp`/`nbf`/`iat`, `iss`, and the optional audience, scopes
--- and permissions. Bad tokens give `nil, err` (kind "auth"), never a Lua error.
---@param token string
---@param opts scalekit.ValidateOptions?
---@return table|nil claims
---@return scalekit.Error|nil err
function Auth:validate_access_token(token, opts)
  return validate(self, token, opts, "validate_access_token", { issuer = self.environment_url })
end

--- Verify the `idp_initiated_login` token Scalekit sends to the redirect_uri when a
--- login starts at the identity provider, like an id_token (signature, iss, aud =
--- client_id, exp), and return its claims: connection_id, organization_id,
--- login_hint, relay_state. Continue with sk:authorization_url using them.
---@param token string
---@param opts scalekit.ValidateOptions?
---@return table|nil claims
---@return scalekit.Error|nil err
function Auth:get_idp_initiated_login_claims(token, opts)
  return validate(self, token, opts, "get_idp_initiated_login_claims",
                  { issuer = self.environment_url, audience = self.client_id })
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
