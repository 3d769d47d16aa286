--- Login with Scalekit (OIDC) and token/webhook validation: the client methods
--- authorization_url, authenticate_with_code, refresh_access_token, logout_url,
--- validate_access_token, verify_webhook and verify_interceptor_payload, plus the
--- PKCE and random-string helpers.
--
-- JWKS: fetched from {environment_url}/keys, cached for `jwks_ttl` seconds (in the
-- client, or in a lua_shared_dict under OpenResty), fetched again at most once per
-- `jwks_refresh_interval` seconds when a token names a key id we do not know — so a
-- flood of forged tokens cannot turn into a flood of /keys requests.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local request = require "scalekit.request"
local jwt = require "scalekit.jwt"
local webhook = require "scalekit.webhook"

local _M = {}

local type = type
local pairs = pairs
local error = error
local ipairs = ipairs
local tostring = tostring
local setmetatable = setmetatable
local pcall = pcall
local min = math.min
local concat = table.concat
local encode = request.encode
local monotonic = core.monotonic

local json = require("cjson.safe").new()

local DEFAULT_SCOPES = { "openid", "profile", "email" }

-- authorization_url options, in the order they appear in the URL
local AUTHORIZE_PARAMS = {
  "state", "nonce", "organization_id", "connection_id", "domain_hint", "login_hint",
  "provider", "prompt", "code_challenge", "code_challenge_method",
}
local AUTHORIZE_KNOWN = { scopes = "table", scope = "string" }
for _, k in ipairs(AUTHORIZE_PARAMS) do AUTHORIZE_KNOWN[k] = "string" end

local function misuse(fn, msg)
  error("scalekit: " .. fn .. ": " .. msg, 3)
end

local function check_opts(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then misuse(fn, "opts must be a table") end
  for k, v in pairs(opts) do
    local want = known[k]
    if not want then misuse(fn, "unknown option '" .. tostring(k) .. "'") end
    if type(v) ~= want then misuse(fn, "option '" .. k .. "' must be a " .. want) end
  end
  return opts
end

-- name=value pairs of a query string; `kv` is name, value, name, value… with `n`
-- entries (values may be nil: those pairs are left out)
local function query(kv, n)
  local parts = {}
  for i = 1, n, 2 do
    local v = kv[i + 1]
    if v ~= nil then parts[#parts + 1] = kv[i] .. "=" .. encode(v) end
  end
  return concat(parts, "&")
end

---@class scalekit.Auth
local Auth = {}
_M.methods = Auth

--- A random URL-safe string (base64url of `bytes` random bytes; default 32) for
--- `state` and `nonce`.
---@param bytes integer?
---@return string
function _M.random_string(bytes)
  return core.b64url_encode(core.random_bytes(bytes or 32))
end

--- A PKCE pair (RFC 7636, S256): keep the verifier, send the challenge.
---@return string verifier
---@return string challenge
---@return string method always "S256"
function _M.pkce()
  local verifier = core.b64url_encode(core.random_bytes(32))
  return verifier, core.b64url_encode(core.sha256(verifier)), "S256"
end

---@class scalekit.AuthorizationUrlOptions
---@field scopes string[]? scopes (default openid, profile, email)
---@field scope string? the scope string as is (instead of `scopes`)
---@field state string? opaque value echoed to the redirect_uri (CSRF protection)
---@field nonce string? echoed in the id_token
---@field organization_id string? send the user to this organization's SSO
---@field connection_id string? send the user to this SSO connection
---@field domain_hint string? pick the organization by email domain
---@field login_hint string? pre-fill the email
---@field provider string? social login provider (google, microsoft, github, …)
---@field prompt string? e.g. "login", "create"
---@field code_challenge string? PKCE challenge (see scalekit.pkce())
---@field code_challenge_method string? "S256"

--- The URL to send the user to for login (`/oauth/authorize`). No I/O.
---@param redirect_uri string where Scalekit sends the user back with a code
---@param opts scalekit.AuthorizationUrlOptions?
---@return string url
function Auth:authorization_url(redirect_uri, opts)
  if type(redirect_uri) ~= "string" or redirect_uri == "" then
    misuse("authorization_url", "redirect_uri must be a non-empty string")
  end
  opts = check_opts("authorization_url", opts, AUTHORIZE_KNOWN)
  local scope = opts.scope
  if not scope then
    local list = opts.scopes or DEFAULT_SCOPES
    for i = 1, #list do
      if type(list[i]) ~= "string" then misuse("authorization_url", "scopes must be strings") end
    end
    scope = concat(list, " ")
  end
  local q = { "response_type", "code", "client_id", self.client_id, "redirect_uri", redirect_uri,
              "scope", scope }
  local n = #q
  for _, k in ipairs(AUTHORIZE_PARAMS) do
    q[n + 1], q[n + 2] = k, opts[k]
    n = n + 2
  end
  return self.environment_url .. "/oauth/authorize?" .. query(q, n)
end

--- The URL that ends the Scalekit session (`/oidc/logout`). No I/O.
---@param opts {id_token_hint: string?, post_logout_redirect_uri: string?, state: string?}?
---@return string url
function Auth:logout_url(opts)
  opts = check_opts("logout_url", opts, {
    id_token_hint = "string", post_logout_redirect_uri = "string", state = "string",
  })
  local q = query({ "id_token_hint", opts.id_token_hint,
                    "post_logout_redirect_uri", opts.post_logout_redirect_uri,
                    "state", opts.state }, 6)
  return self.environment_url .. "/oidc/logout" .. (q ~= "" and ("?" .. q) or "")
end

---------------------------------------------------------------------------
-- JWKS
---------------------------------------------------------------------------

-- The default JWKS cache: this client's memory. scalekit.ngx swaps in a shared one.
local MemoryCache = {}
MemoryCache.__index = MemoryCache
function MemoryCache:get()
  if self.text and monotonic() < self.expires then return self.text end
  return nil
end
function MemoryCache:set(text, ttl)
  self.text, self.expires = text, monotonic() + ttl
end

--- A JWKS cache in this process's memory (the default outside OpenResty).
---@return table cache with get() -> text|nil and set(text, ttl)
function _M.memory_cache()
  return setmetatable({}, MemoryCache)
end

local function download_jwks(s)
  s.jwks_fetched_at = monotonic()
  local doc, err = s:plain("GET", "/keys", nil, nil, "jwks")
  if not doc then return nil, err end
  if type(doc.keys) ~= "table" then
    return nil, errors.new("decode", "JWKS answer has no keys", { operation = "jwks" })
  end
  local text = json.encode(doc)
  s.jwks_cache:set(text, s.jwks_ttl)
  return text
end

-- One fetch at a time per client: in OpenResty, the coroutines of a worker that need
-- the JWKS while a fetch is under way wait for it (s.sleep yields there) instead of
-- each asking /keys. Plain Lua never finds a fetch under way.
local function fetch_jwks(s)
  if s.jwks_fetching then
    local deadline, d = monotonic() + s.jwks_wait, 0.001
    while s.jwks_fetching and monotonic() < deadline do
      s.sleep(d)
      d = min(d * 2, 0.05)
    end
    local text = s.jwks_cache:get()
    if text then return text end
  end
  s.jwks_fetching = true
  local ok, text, err = pcall(download_jwks, s)
  s.jwks_fetching = false
  if not ok then error(text, 0) end
  return text, err
end

-- key finder for the JWKS text currently cached (parsed once per distinct text)
local function finder_for(s, text)
  if s.jwks_text ~= text then
    local doc = json.decode(text)
    if type(doc) ~= "table" then return nil end
    s.jwks_finder = jwt.key_finder(doc)
    s.jwks_text = text
  end
  return s.jwks_finder
end

local function key_lookup(s)
  return function(kid)
    local text = s.jwks_cache:get()
    local err
    if not text then
      text, err = fetch_jwks(s)
      if not text then return nil, err end
    end
    local find = finder_for(s, text)
    local key = find and find(kid)
    if key then return key end
    -- unknown kid: keys may have rotated; look again, but not more than once per interval
    local last = s.jwks_fetched_at
    if last and monotonic() - last < s.jwks_refresh_interval then return nil end
    text, err = fetch_jwks(s)
    if not text then return nil, err end
    find = finder_for(s, text)
    return find and find(kid)
  end
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
  local s = self._s
  local o = { issuer = self.environment_url }
  if opts ~= nil then
    if type(opts) ~= "table" then misuse("validate_access_token", "opts must be a table") end
    for k, v in pairs(opts) do
      if not VALIDATE_KNOWN[k] then misuse("validate_access_token", "unknown option '" .. tostring(k) .. "'") end
      o[k] = v
    end
  end
  if type(token) ~= "string" then
    return nil, errors.new("auth", "token must be a string, got " .. type(token),
                           { error_code = "token_malformed" })
  end
  return jwt.verify(token, key_lookup(s), o)
end

---------------------------------------------------------------------------
-- code exchange and refresh
---------------------------------------------------------------------------

local function token_grant(self, fields, opname)
  local s = self._s
  local doc, err = s:plain("POST", "/oauth/token", s.client_form(fields), "form", opname)
  if not doc then
    if err.kind == "http" and err.status and err.status < 500 and err.status ~= 429 then
      err.kind = "auth"
    end
    return nil, err
  end
  if type(doc.access_token) ~= "string" then
    return nil, errors.new("decode", "token endpoint answered without an access_token", { operation = opname })
  end
  return doc
end

local function with_identity(self, doc, nonce, opname)
  local res = {
    access_token = doc.access_token,
    refresh_token = type(doc.refresh_token) == "string" and doc.refresh_token or nil,
    id_token = type(doc.id_token) == "string" and doc.id_token or nil,
    expires_in = type(doc.expires_in) == "number" and doc.expires_in or nil,
    token_type = type(doc.token_type) == "string" and doc.token_type or nil,
  }
  if res.id_token then
    local claims, err = jwt.verify(res.id_token, key_lookup(self._s), {
      issuer = self.environment_url, audience = self.client_id, nonce = nonce,
    })
    if not claims then
      err.operation = opname
      return nil, err
    end
    res.user = claims
  end
  return res
end

--- Exchange the code Scalekit sent to the redirect_uri for tokens; the id_token is
--- verified (signature, iss, aud = client_id, exp, and nonce when given).
---@param code string
---@param redirect_uri string the same redirect_uri as in the authorization URL
---@param opts {code_verifier: string?, nonce: string?}?
---@return {user: table, id_token: string, access_token: string, refresh_token: string?, expires_in: number?}|nil
---@return scalekit.Error|nil err
function Auth:authenticate_with_code(code, redirect_uri, opts)
  if type(code) ~= "string" or code == "" then misuse("authenticate_with_code", "code must be a non-empty string") end
  if type(redirect_uri) ~= "string" or redirect_uri == "" then
    misuse("authenticate_with_code", "redirect_uri must be a non-empty string")
  end
  opts = check_opts("authenticate_with_code", opts, { code_verifier = "string", nonce = "string" })
  local doc, err = token_grant(self, {
    grant_type = "authorization_code", code = code, redirect_uri = redirect_uri,
    code_verifier = opts.code_verifier,
  }, "authenticate_with_code")
  if not doc then return nil, err end
  if type(doc.id_token) ~= "string" then
    return nil, errors.new("decode", "token endpoint answered without an id_token",
                           { operation = "authenticate_with_code" })
  end
  return with_identity(self, doc, opts.nonce, "authenticate_with_code")
end

--- Get new tokens with a refresh token (an id_token in the answer is verified too).
---@param refresh_token string
---@return {access_token: string, refresh_token: string?, id_token: string?, user: table?, expires_in: number?}|nil
---@return scalekit.Error|nil err
function Auth:refresh_access_token(refresh_token)
  if type(refresh_token) ~= "string" or refresh_token == "" then
    misuse("refresh_access_token", "refresh_token must be a non-empty string")
  end
  local doc, err = token_grant(self, { grant_type = "refresh_token", refresh_token = refresh_token },
                               "refresh_access_token")
  if not doc then return nil, err end
  return with_identity(self, doc, nil, "refresh_access_token")
end

---------------------------------------------------------------------------
-- webhooks
---------------------------------------------------------------------------

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
