--- Login and logout URLs (no I/O), and the PKCE and random-string helpers.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local request = require "scalekit.request"

local _M = {}

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local concat = table.concat
local encode = request.encode
local misuse = errors.misuse

local DEFAULT_SCOPES = { "openid", "profile", "email" }

-- authorization_url options, in the order they appear in the URL
local AUTHORIZE_PARAMS = {
  "state", "nonce", "organization_id", "connection_id", "domain_hint", "login_hint",
  "provider", "prompt", "code_challenge", "code_challenge_method",
}
local AUTHORIZE_KNOWN = { scopes = "table", scope = "string" }
for _, k in ipairs(AUTHORIZE_PARAMS) do AUTHORIZE_KNOWN[k] = "string" end

--- Check an options table against `known` (name -> type); nil gives {}.
function _M.check_opts(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then misuse("%s: opts must be a table", fn) end
  for k, v in pairs(opts) do
    local want = known[k]
    if not want then misuse("%s: unknown option '%s'", fn, tostring(k)) end
    if type(v) ~= want then misuse("%s: option '%s' must be a %s", fn, k, want) end
  end
  return opts
end
local check_opts = _M.check_opts

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
function _M.authorization_url(client, redirect_uri, opts)
  if type(redirect_uri) ~= "string" or redirect_uri == "" then
    misuse("authorization_url: redirect_uri must be a non-empty string")
  end
  opts = check_opts("authorization_url", opts, AUTHORIZE_KNOWN)
  local scope = opts.scope
  if not scope then
    local list = opts.scopes or DEFAULT_SCOPES
    for i = 1, #list do
      if type(list[i]) ~= "string" then misuse("authorization_url: scopes must be strings") end
    end
    scope = concat(list, " ")
  end
  local q = { "response_type", "code", "client_id", client.client_id, "redirect_uri", redirect_uri,
              "scope", scope }
  local n = #q
  for _, k in ipairs(AUTHORIZE_PARAMS) do
    q[n + 1], q[n + 2] = k, opts[k]
    n = n + 2
  end
  return client.environment_url .. "/oauth/authorize?" .. query(q, n)
end

--- The URL that ends the Scalekit session (`/oidc/logout`). No I/O.
function _M.logout_url(client, opts)
  opts = check_opts("logout_url", opts, {
    id_token_hint = "string", post_logout_redirect_uri = "string", state = "string",
  })
  local q = query({ "id_token_hint", opts.id_token_hint,
                    "post_logout_redirect_uri", opts.post_logout_redirect_uri,
                    "state", opts.state }, 6)
  return client.environment_url .. "/oidc/logout" .. (q ~= "" and ("?" .. q) or "")
end

return _M
