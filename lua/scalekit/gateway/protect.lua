-- luacheck: globals ngx
--- sk:protect: a bearer-only resource server (RFC 6750) for access_by_lua*, with the
--- RFC 9728 `resource_metadata` challenge for MCP servers, and
--- sk:serve_resource_metadata for the document itself.
--
--   no / empty Authorization, or another scheme  401, bare challenge (no `error`)
--   bad, expired, wrong issuer or audience,      401 error="invalid_token"
--   unknown key, alg none
--   missing scope or permission                   403 error="insufficient_scope", scope=
--   JWKS unreachable                              502 (the reason in the error log)
--
-- Verified tokens are kept in a per-worker LRU (lua-resty-lrucache), keyed by the
-- SHA-256 of the token (never the token), until the token's `exp`, at most
-- `cache_ttl` seconds (the revocation window). A hit skips the signature check;
-- issuer, audience, scopes and permissions are checked on every request.
local core = require "scalekit.core"
local errors = require "scalekit.errors"

local _M = {}

local ngx = ngx
local ngx_var = ngx.var
local ngx_ctx_key = "scalekit_claims"
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local setmetatable = setmetatable
local concat = table.concat
local min = math.min
local os_time = os.time
local sha256 = core.sha256
local misuse = errors.misuse

local json = require("cjson.safe").new()

_M.DEFAULTS = {
  realm = "scalekit",
  leeway = 60,
  cache_ttl = 60,      -- seconds a verified token is trusted without a signature check
  cache_size = 2000,   -- tokens per worker (per client), fixed at the first protect
}

local KNOWN = {
  audience = true, issuer = true, scopes = true, permissions = true, realm = true,
  resource_metadata = true, leeway = true, cache_ttl = true, cache_size = true, algorithms = true,
}

-- a list of strings from a string or a list (nil stays nil)
local function string_list(fn, name, v, allow_empty)
  if v == nil then return nil end
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then misuse("%s: option '%s' must be a string or a list of strings", fn, name) end
  for i = 1, #v do
    if type(v[i]) ~= "string" then misuse("%s: option '%s' must be a list of strings", fn, name) end
  end
  if #v == 0 and not allow_empty then misuse("%s: option '%s' must not be empty", fn, name) end
  return v
end

-- header parameter values: RFC 6750 3 allows %x20-21 / %x23-5B / %x5D-7E
local function param(s)
  return (tostring(s):gsub('[^\32-\126]', "?"):gsub('[\\"]', "'"))
end

local function check(client, opts)
  if type(opts) ~= "table" then misuse("protect: opts must be a table with at least `audience`") end
  for k in pairs(opts) do
    if not KNOWN[k] then misuse("protect: unknown option '%s'", tostring(k)) end
  end
  local aud = opts.audience
  if aud == nil then
    misuse("protect: option 'audience' is required (the audience your API expects, e.g. the client id"
      .. " or resource URL; `audience = false` accepts any)")
  end
  if aud == true then misuse("protect: option 'audience' must be a string, a list of strings or false") end
  local o = {
    audience = aud ~= false and string_list("protect", "audience", aud) or nil,
    issuer = string_list("protect", "issuer", opts.issuer) or { client.environment_url },
    scopes = string_list("protect", "scopes", opts.scopes, true) or {},
    permissions = string_list("protect", "permissions", opts.permissions, true) or {},
    algorithms = string_list("protect", "algorithms", opts.algorithms),
  }
  for _, k in ipairs({ "realm", "resource_metadata" }) do
    local v = opts[k]
    if v ~= nil and type(v) ~= "string" then misuse("protect: option '%s' must be a string", k) end
  end
  for _, k in ipairs({ "leeway", "cache_ttl", "cache_size" }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
      misuse("protect: option '%s' must be a non-negative number", k)
    end
  end
  o.realm = opts.realm or _M.DEFAULTS.realm
  o.resource_metadata = opts.resource_metadata
  o.leeway = opts.leeway or _M.DEFAULTS.leeway
  o.cache_ttl = opts.cache_ttl or _M.DEFAULTS.cache_ttl
  o.cache_size = opts.cache_size or _M.DEFAULTS.cache_size
  return o
end

-- per client, per worker: the LRU of verified tokens
local caches = setmetatable({}, { __mode = "k" })

local function cache_of(client, size)
  local c = caches[client]
  if c == nil then
    local ok, lrucache = pcall(require, "resty.lrucache")
    if not ok then
      misuse("protect: the verified-token cache needs lua-resty-lrucache (Debian: apt install"
        .. " lua-resty-lrucache; OPM: openresty/lua-resty-lrucache), or pass cache_ttl = 0")
    end
    c = assert(lrucache.new(size > 0 and size or 1))
    caches[client] = c
  end
  return c
end

--- Drop every cached verification of `client` in this worker (tests, key rotation).
function _M.flush(client)
  local c = caches[client]
  if c then c:flush_all() end
end

-- answer and end the request
local function deny(o, status, err, desc, scope)
  local parts = { 'Bearer realm="' .. param(o.realm) .. '"' }
  if err then
    parts[#parts + 1] = 'error="' .. err .. '"'
    if desc then parts[#parts + 1] = 'error_description="' .. param(desc) .. '"' end
  end
  if scope then parts[#parts + 1] = 'scope="' .. param(scope) .. '"' end
  if status == 401 and o.resource_metadata then
    parts[#parts + 1] = 'resource_metadata="' .. param(o.resource_metadata) .. '"'
  end
  ngx.status = status
  ngx.header["WWW-Authenticate"] = concat(parts, ", ")
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.say(json.encode({
    error = err or "unauthorized",
    error_description = desc or "a bearer token is required",
  }))
  return ngx.exit(status)
end

local function in_list(v, list)
  for i = 1, #list do
    if list[i] == v then return true end
  end
  return false
end

local function audience_ok(aud, wanted)
  if type(aud) == "string" then return in_list(aud, wanted) end
  if type(aud) == "table" then
    for _, a in ipairs(aud) do
      if type(a) == "string" and in_list(a, wanted) then return true end
    end
  end
  return false
end

-- the set of scopes a token grants: `scope` (space-separated, RFC 9068), or `scp`
local function granted_scopes(claims)
  local set = {}
  for _, name in ipairs({ "scope", "scp" }) do
    local v = claims[name]
    if type(v) == "string" then
      for s in v:gmatch("%S+") do set[s] = true end
    elseif type(v) == "table" then
      for _, s in ipairs(v) do
        if type(s) == "string" then set[s] = true end
      end
    end
  end
  return set
end

local function missing(list, granted)
  local out = {}
  for _, v in ipairs(list) do
    if not granted[v] then out[#out + 1] = v end
  end
  return out
end

-- the claims of a token whose signature, times and issuer are good: from the cache,
-- or verified now (and cached). nil, status, description on failure.
local function verified(client, token, o)
  local cache, key
  if o.cache_ttl > 0 then
    cache = cache_of(client, o.cache_size)
    key = sha256(token)
    local claims = cache:get(key)
    if claims then
      if in_list(claims.iss, o.issuer) then return claims end
      return nil, 401, "token issuer does not match"
    end
  end
  -- validate_access_token takes the list of accepted issuers itself
  local claims, err = client:validate_access_token(token, {
    issuer = o.issuer, leeway = o.leeway, algorithms = o.algorithms,
  })
  if not claims then
    if err.kind ~= "auth" then
      -- the JWKS could not be fetched: our failure, not the token's
      ngx.log(ngx.ERR, "scalekit: protect: cannot verify tokens: ", tostring(err))
      return nil, 502
    end
    return nil, 401, err.message
  end
  if cache then
    local exp = claims.exp
    local ttl = o.cache_ttl
    if type(exp) == "number" then ttl = min(ttl, exp - os_time()) end
    if ttl > 0 then cache:set(key, claims, ttl) end
  end
  return claims
end

function _M.protect(client, opts)
  local o = check(client, opts)
  local auth = ngx_var.http_authorization
  if auth == nil or not auth:find("%S") then return deny(o, 401) end
  local scheme, token = auth:match("^%s*(%S+)%s*(.-)%s*$")
  if scheme:lower() ~= "bearer" then return deny(o, 401) end  -- another scheme: a bare challenge
  if token == "" or token:find("%s") then
    return deny(o, 401, "invalid_token", "the bearer token is malformed")
  end
  local claims, status, desc = verified(client, token, o)
  if not claims then
    if status == 502 then return ngx.exit(502) end
    return deny(o, status, "invalid_token", desc)
  end
  if o.audience and not audience_ok(claims.aud, o.audience) then
    return deny(o, 401, "invalid_token", "token audience does not match")
  end
  local lacks = missing(o.scopes, granted_scopes(claims))
  local perms = claims.permissions
  local perm_set = {}
  if type(perms) == "table" then
    for _, p in ipairs(perms) do perm_set[p] = true end
  end
  local lacks_perm = missing(o.permissions, perm_set)
  if #lacks > 0 or #lacks_perm > 0 then
    local needed = {}
    for _, s in ipairs(o.scopes) do needed[#needed + 1] = s end
    for _, p in ipairs(o.permissions) do needed[#needed + 1] = p end
    local what = #lacks > 0 and ("scope \"" .. lacks[1] .. "\"") or ("permission \"" .. lacks_perm[1] .. "\"")
    return deny(o, 403, "insufficient_scope", "token lacks required " .. what, concat(needed, " "))
  end
  ngx.ctx[ngx_ctx_key] = claims
  return claims
end

local META_KNOWN = {
  resource = "string", scopes_supported = "table", authorization_servers = "table",
  bearer_methods_supported = "table", resource_name = "string", resource_documentation = "string",
  resource_policy_uri = "string", resource_tos_uri = "string", jwks_uri = "string",
  resource_signing_alg_values_supported = "table",
}

function _M.serve_resource_metadata(client, opts)
  opts = opts or {}
  if type(opts) ~= "table" then misuse("serve_resource_metadata: opts must be a table") end
  local doc = {}
  for k, v in pairs(opts) do
    local want = META_KNOWN[k]
    if not want then misuse("serve_resource_metadata: unknown option '%s'", tostring(k)) end
    if type(v) ~= want then misuse("serve_resource_metadata: option '%s' must be a %s", k, want) end
    doc[k] = v
  end
  -- RFC 9728 2: `resource` is required; by default the origin of this request
  doc.resource = doc.resource or (ngx_var.scheme .. "://" .. (ngx_var.http_host or ngx_var.host))
  doc.authorization_servers = doc.authorization_servers or { client.environment_url }
  doc.bearer_methods_supported = doc.bearer_methods_supported or { "header" }
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "max-age=3600"
  ngx.say(json.encode(doc))
  return ngx.exit(200)
end

return _M
