-- luacheck: globals ngx
-- Fake Scalekit, OIDC side: /oauth/authorize, the authorization_code and
-- refresh_token grants of /oauth/token, /keys (JWKS) and /oidc/logout.
--
-- Tokens are RS256 JWTs signed with the openssl CLI (the key pair is made by
-- spec/support/fake.lua at start with `oidc = true`): an independent tool, so the
-- library's own crypto is never what checks itself. Signing blocks the worker for a
-- few milliseconds, which a test server can afford.
local http = require("fake_http")

local ngx = ngx
local json = http.json
local type = type
local tostring = tostring
local tonumber = tonumber

local CONFIG = http.CONFIG
local STATE = ngx.shared.skfake_state

local _M = {}

local CODE_TTL = 60

local function b64url(s)
  return (ngx.encode_base64(s):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

local oauth_error, first = http.oauth_error, http.first

local function issuer()
  return ngx.var.scheme .. "://" .. (ngx.var.http_host or ("127.0.0.1:" .. ngx.var.server_port))
end

local function shell(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local function with_tmp(data, fn)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local ok, res = pcall(fn, path)
  os.remove(path)
  assert(ok, res)
  return res
end

local function sha256(data)
  return with_tmp(data, function(path)
    return shell("openssl dgst -sha256 -binary " .. path)
  end)
end

local function sign(claims)
  local key = CONFIG:get("oidc_key")
  if not key then error("fake scalekit: start the server with oidc = true") end
  local header = b64url(json.encode({ alg = "RS256", typ = "JWT", kid = CONFIG:get("oidc_kid") }))
  local input = header .. "." .. b64url(json.encode(claims))
  local sig = with_tmp(input, function(path)
    return shell("openssl dgst -sha256 -sign " .. key .. " -binary " .. path)
  end)
  return input .. "." .. b64url(sig)
end

local function random_id(prefix)
  return prefix .. ngx.encode_base64(ngx.sha1_bin(tostring(ngx.now()) .. math.random()))
    :gsub("[^%w]", ""):sub(1, 24)
end

-- GET /keys
function _M.keys()
  local path = CONFIG:get("oidc_jwks")
  if not path then return http.send_error(404, "no JWKS: start with oidc = true", "NOT_FOUND") end
  http.begin("oauth")
  local f = assert(io.open(path, "rb"))
  local body = f:read("*a")
  f:close()
  STATE:incr("stat:jwks_fetches", 1, 0)
  return http.answer(200, body)
end

-- GET /oauth/authorize: the "user" logs in at once and is sent back with a code.
function _M.authorize()
  local args = ngx.req.get_uri_args(0)
  local client_id, redirect_uri = first(args.client_id), first(args.redirect_uri)
  if first(args.response_type) ~= "code" then
    return oauth_error(400, "unsupported_response_type", "response_type must be code")
  end
  if client_id ~= CONFIG:get("client_id") then
    return oauth_error(400, "invalid_client", "unknown client_id")
  end
  if type(redirect_uri) ~= "string" or not redirect_uri:find("^https?://") then
    return oauth_error(400, "invalid_request", "redirect_uri is required")
  end
  local code = random_id("code_")
  STATE:set("code:" .. code, json.encode({
    redirect_uri = redirect_uri,
    nonce = first(args.nonce),
    scope = first(args.scope),
    code_challenge = first(args.code_challenge),
    code_challenge_method = first(args.code_challenge_method),
    organization_id = first(args.organization_id),
    email = first(args.login_hint) or "user@example.com",
  }), CODE_TTL)
  local sep = redirect_uri:find("?", 1, true) and "&" or "?"
  local location = redirect_uri .. sep .. "code=" .. ngx.escape_uri(code)
  local state = first(args.state)
  if state then location = location .. "&state=" .. ngx.escape_uri(state) end
  return ngx.redirect(location, 302)
end

local function issue(grant)
  local now = ngx.time()
  local iss, client_id = issuer(), CONFIG:get("client_id")
  local ttl = tonumber(CONFIG:get("token_ttl")) or 3600
  local sub = grant.sub or random_id("usr_")
  local id_claims = {
    iss = iss, aud = { client_id }, sub = sub, iat = now, exp = now + ttl,
    email = grant.email, email_verified = true, name = "Test User",
    oid = grant.organization_id, sid = grant.sid or random_id("ses_"),
  }
  if grant.nonce then id_claims.nonce = grant.nonce end
  local access_claims = {
    iss = iss, sub = sub, aud = { client_id }, iat = now, nbf = now, exp = now + ttl,
    client_id = client_id, sid = id_claims.sid, oid = grant.organization_id,
    scope = grant.scope or "openid profile email", roles = { "admin" },
    permissions = { "organizations:read", "users:read" },
  }
  local refresh = random_id("rt_")
  STATE:set("refresh:" .. refresh, json.encode({
    sub = sub, email = grant.email, organization_id = grant.organization_id,
    sid = id_claims.sid, scope = grant.scope,
  }), 86400)
  STATE:incr("stat:oidc_tokens", 1, 0)
  ngx.header["Cache-Control"] = "no-store"
  return http.answer(200, json.encode({
    access_token = sign(access_claims),
    id_token = sign(id_claims),
    refresh_token = refresh,
    token_type = "Bearer",
    expires_in = ttl,
  }))
end

-- POST /oauth/token with grant_type authorization_code or refresh_token; `args` is
-- the decoded form and the client is already authenticated by the caller.
function _M.grant(grant_type, args)
  if grant_type == "authorization_code" then
    local code = first(args.code)
    local stored = type(code) == "string" and STATE:get("code:" .. code)
    if not stored then return oauth_error(400, "invalid_grant", "unknown or used code") end
    STATE:delete("code:" .. code) -- one use only
    local grant = json.decode(stored)
    if first(args.redirect_uri) ~= grant.redirect_uri then
      return oauth_error(400, "invalid_grant", "redirect_uri does not match")
    end
    if grant.code_challenge then
      local verifier = first(args.code_verifier)
      if type(verifier) ~= "string" or b64url(sha256(verifier)) ~= grant.code_challenge then
        return oauth_error(400, "invalid_grant", "PKCE verification failed")
      end
    end
    return issue(grant)
  end
  -- refresh_token
  local rt = first(args.refresh_token)
  local stored = type(rt) == "string" and STATE:get("refresh:" .. rt)
  if not stored then return oauth_error(400, "invalid_grant", "unknown refresh token") end
  STATE:delete("refresh:" .. rt) -- rotation
  return issue(json.decode(stored))
end

-- GET /oidc/logout
function _M.logout()
  local args = ngx.req.get_uri_args(0)
  local to = first(args.post_logout_redirect_uri)
  if type(to) ~= "string" then return http.answer(200, '{"logged_out":true}') end
  local state = first(args.state)
  if state then to = to .. (to:find("?", 1, true) and "&" or "?") .. "state=" .. ngx.escape_uri(state) end
  return ngx.redirect(to, 302)
end

return _M
