-- luacheck: globals ngx
--- sk:login: browser login with a session, for access_by_lua*.
--
--   the redirect_uri path   check state (login cookie), exchange the code with the PKCE
--                           verifier, verify the id_token with the nonce, create the
--                           session, 302 to the URL first asked for
--   the logout_path         clear the session, 302 to Scalekit's /oidc/logout
--   logged in               the session {user, claims, access_token, id_token,
--                           expires_at}; the access token is refreshed `refresh_ahead`
--                           seconds before it expires, once per session for all
--                           workers (ngx/flight.lua over the shared dict: the others
--                           keep the current token, or wait and take the result)
--   not logged in           GET/HEAD: 302 to /oauth/authorize with state, nonce and
--                           PKCE S256; other methods: 401
--
-- The session lives in an AES-256-GCM cookie (gateway/cookie.lua) by default, or with
-- session_store = "shared_dict" in the dict, the cookie holding only a random id.
-- A tampered or expired cookie is "not logged in"; a bad state or nonce is 401;
-- Scalekit unreachable is 502 with the reason in the error log only.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local jwt = require "scalekit.auth.jwt"
local urls = require "scalekit.auth.urls"
local flight = require "scalekit.ngx.flight"
local gateway = require "scalekit.gateway"
local cookie = require "scalekit.gateway.cookie"

local _M = {}

local ngx = ngx
local type = type
local pairs = pairs
local tostring = tostring
local setmetatable = setmetatable
local max = math.max
local sha256 = core.sha256
local b64url = core.b64url_encode
local constant_eq = core.constant_eq
local misuse = errors.misuse

local json = require("cjson.safe").new()

_M.DEFAULTS = {
  session_store = "cookie",
  cookie_name = "scalekit_session",
  cookie_path = "/",
  idle_timeout = 3600,        -- seconds without a request before the session ends
  absolute_timeout = 86400,   -- seconds from login before the session ends
  refresh_ahead = 60,         -- refresh the access token this long before it expires
  login_timeout = 600,        -- seconds the user has to come back from Scalekit
  wait = 10,                  -- seconds a request waits for another one's refresh
  scopes = { "openid", "profile", "email", "offline_access" },
}

local KNOWN = {
  redirect_uri = "string", session_secret = "string", logout_path = "string",
  post_logout_redirect_uri = "string", session_store = "string", shared_dict = "string",
  cookie_name = "string", cookie_path = "string", cookie_domain = "string",
  idle_timeout = "number", absolute_timeout = "number", refresh_ahead = "number",
  login_timeout = "number", wait = "number", scopes = "table", authorization_params = "table",
}

local AUTHORIZE_EXTRA = {
  organization_id = true, connection_id = true, domain_hint = true, login_hint = true,
  provider = true, prompt = true,
}

local LOCAL_HOSTS = { localhost = true, ["127.0.0.1"] = true, ["[::1]"] = true, ["::1"] = true }

-- keys derived from a secret, per secret (weak: a secret no longer used goes away)
local keys = setmetatable({}, { __mode = "k" })
-- flights and per-worker refresh results, per client and dict
local flights = setmetatable({}, { __mode = "k" })

local function check(client, opts)
  if type(opts) ~= "table" then misuse("login: opts must be a table") end
  for k, v in pairs(opts) do
    local want = KNOWN[k]
    if not want then misuse("login: unknown option '%s'", tostring(k)) end
    if type(v) ~= want then misuse("login: option '%s' must be a %s", k, want) end
  end
  if not opts.redirect_uri then misuse("login: option 'redirect_uri' is required (e.g. \"/callback\")") end
  local secret = opts.session_secret
  if not secret or #secret < 32 then
    misuse("login: option 'session_secret' is required and must be at least 32 bytes"
      .. " (e.g. openssl rand -base64 32)")
  end
  local o = {}
  for k, v in pairs(_M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  if o.session_store ~= "cookie" and o.session_store ~= "shared_dict" then
    misuse("login: option 'session_store' must be \"cookie\" or \"shared_dict\"")
  end
  if not o.cookie_name:find("^[%w_]+$") then misuse("login: option 'cookie_name' must be letters, digits, _") end
  for k in pairs(AUTHORIZE_EXTRA) do
    local v = o.authorization_params and o.authorization_params[k]
    if v ~= nil and type(v) ~= "string" then misuse("login: authorization_params.%s must be a string", k) end
  end
  if o.authorization_params then
    for k in pairs(o.authorization_params) do
      if not AUTHORIZE_EXTRA[k] then misuse("login: unknown authorization_params key '%s'", tostring(k)) end
    end
  end
  o.dict = gateway.dict(client, opts.shared_dict, "login")
  if o.session_store == "shared_dict" and not o.dict then
    misuse("login: session_store = \"shared_dict\" needs a lua_shared_dict (option 'shared_dict',"
      .. " or scalekit.new{shared_dict =})")
  end
  local k = keys[secret]
  if not k then
    k = cookie.derive_key(secret, "session cookie")
    keys[secret] = k
  end
  o.key = k
  o.secret = nil
  o.session_secret = nil
  return o
end

-- the request's origin, and whether cookies must be Secure
local function origin()
  local var = ngx.var
  local scheme = var.scheme
  local host = var.http_host or var.host
  local hostname = host:match("^(%[[^%]]+%])") or host:match("^[^:]+") or host
  local secure = not (scheme == "http" and LOCAL_HOSTS[hostname:lower()])
  return scheme .. "://" .. host, secure
end

local function context(client, o)
  local base, secure = origin()
  local redirect_uri = o.redirect_uri
  local callback_path = redirect_uri
  if redirect_uri:find("^https?://") then
    callback_path = redirect_uri:match("^https?://[^/]+(/[^?#]*)") or "/"
  else
    redirect_uri = base .. redirect_uri
  end
  local per = flights[client]
  if not per then
    per = {}
    flights[client] = per
  end
  local dict = o.dict or false
  local f = per[dict]
  if not f then
    f = {
      flight = flight.new{ wait = o.wait, dict = o.dict or nil, lock_prefix = "scalekit:gw:lock:" },
      results = {},   -- without a dict: refresh results of this worker, by session id
    }
    per[dict] = f
  end
  return {
    client = client, o = o, base = base, redirect_uri = redirect_uri, callback_path = callback_path,
    attrs = { secure = secure, path = o.cookie_path, domain = o.cookie_domain },
    name = o.cookie_name, login_name = o.cookie_name .. "_login",
    flight = f.flight, results = f.results, dict = o.dict, now = ngx.time(),
  }
end

local function fail(status, level, ...)
  ngx.log(level, "scalekit: login: ", ...)
  return ngx.exit(status)
end

local function token_exp(access_token, expires_in, now)
  local parts = jwt.decode(access_token)
  local exp = parts and parts.claims.exp
  if type(exp) == "number" then return exp end
  return now + (expires_in or 3600)
end

local function sid_key(sid) return "scalekit:gw:session:" .. sid end

-- the session stored for this request's cookie, or nil
local function load(ctx)
  local value, had = cookie.read(ctx.name)
  ctx.had = had
  if not value then return nil end
  local t = cookie.open(ctx.o.key, ctx.name, value)
  if not t then
    ngx.log(ngx.INFO, "scalekit: login: session cookie does not open (tampered, or another secret)")
    return nil
  end
  if ctx.o.session_store == "shared_dict" then
    if type(t.sid) ~= "string" then return nil end
    local sid = t.sid
    t = json.decode(ctx.dict:get(sid_key(sid)) or "")
    if type(t) ~= "table" then return nil end
    t.sid = sid
  end
  if type(t.at) ~= "string" or type(t.it) ~= "string" or type(t.ct) ~= "number" or type(t.la) ~= "number"
     or type(t.exp) ~= "number" then
    return nil
  end
  local now = ctx.now
  if now - t.ct >= ctx.o.absolute_timeout or now - t.la >= ctx.o.idle_timeout then return nil end
  return t
end

-- write the session; returns the cookie size in bytes
local function save(ctx, s)
  local left = ctx.o.absolute_timeout - (ctx.now - s.ct)
  local value
  if ctx.o.session_store == "shared_dict" then
    s.sid = s.sid or b64url(core.random_bytes(24))
    local stored = { at = s.at, rt = s.rt, it = s.it, exp = s.exp, ct = s.ct, la = s.la }
    local ok, err = ctx.dict:set(sid_key(s.sid), json.encode(stored), left)
    if not ok then ngx.log(ngx.ERR, "scalekit: login: cannot store the session: ", err) end
    value = cookie.seal(ctx.o.key, ctx.name, { sid = s.sid })
  else
    value = cookie.seal(ctx.o.key, ctx.name, { at = s.at, rt = s.rt, it = s.it, exp = s.exp, ct = s.ct, la = s.la })
  end
  local size = cookie.set(ctx.name, value, ctx.attrs, left, ctx.had)
  ngx.ctx.scalekit_cookie_bytes = size
  return size
end

local function clear(ctx, s)
  if s and s.sid and ctx.dict then ctx.dict:delete(sid_key(s.sid)) end
  cookie.clear(ctx.name, ctx.attrs, ctx.had)
end

-- a relative URL of this site, or "/"
local function safe_return(r)
  if type(r) ~= "string" or not r:find("^/") or r:find("^//") or r:find("^/\\") or r:find("[%c]") then
    return "/"
  end
  return r
end

local function start_login(ctx, extra)
  local method = ngx.req.get_method()
  if method ~= "GET" and method ~= "HEAD" then
    ngx.status = 401
    ngx.header["Content-Type"] = "application/json"
    ngx.say('{"error":"login_required"}')
    return ngx.exit(401)
  end
  local state, nonce = urls.random_string(), urls.random_string()
  local verifier, challenge = urls.pkce()
  local value = cookie.seal(ctx.o.key, ctx.login_name, {
    s = state, n = nonce, v = verifier, r = ngx.var.request_uri, t = ctx.now,
  })
  cookie.set(ctx.login_name, value, ctx.attrs, ctx.o.login_timeout)
  local params = { state = state, nonce = nonce, code_challenge = challenge, code_challenge_method = "S256",
                   scopes = ctx.o.scopes }
  for k, v in pairs(ctx.o.authorization_params or {}) do params[k] = v end
  for k, v in pairs(extra or {}) do params[k] = v end
  ngx.header["Cache-Control"] = "no-store"
  return ngx.redirect(ctx.client:authorization_url(ctx.redirect_uri, params), 302)
end

local function session_view(s)
  local parts = jwt.decode(s.it)
  local claims = parts and parts.claims or {}
  local view = {
    user = {
      id = claims.sub, email = claims.email, name = claims.name, email_verified = claims.email_verified,
      given_name = claims.given_name, family_name = claims.family_name, organization_id = claims.oid,
    },
    claims = claims,
    access_token = s.at,
    id_token = s.it,
    expires_at = s.exp,
  }
  ngx.ctx.scalekit_session = view
  return view
end

-- Scalekit unreachable or answering 5xx (ours to report as 502), vs a refusal
local function upstream_failure(err)
  return err.kind ~= "auth" or (err.status ~= nil and err.status >= 500)
end

local function callback(ctx)
  local args = ngx.req.get_uri_args()
  local function arg(n)
    local v = args[n]
    if type(v) == "table" then v = v[1] end
    return type(v) == "string" and v or nil
  end
  local login_value, login_had = cookie.read(ctx.login_name)
  local idp = arg("idp_initiated_login")
  -- (looked up in the method table: a client answers a misuse for unknown names)
  if idp and require("scalekit.auth").methods.get_idp_initiated_login_claims then
    -- IdP-initiated: start an SP-initiated login for the organization / connection named
    local claims, err = ctx.client:get_idp_initiated_login_claims(idp)
    if not claims then return fail(401, ngx.WARN, "IdP-initiated login refused: ", tostring(err)) end
    return start_login(ctx, {
      organization_id = type(claims.organization_id) == "string" and claims.organization_id or nil,
      connection_id = type(claims.connection_id) == "string" and claims.connection_id or nil,
      login_hint = type(claims.login_hint) == "string" and claims.login_hint or nil,
    })
  end
  if arg("error") then
    cookie.clear(ctx.login_name, ctx.attrs, login_had)
    return fail(401, ngx.WARN, "Scalekit answered the login with error ", arg("error"))
  end
  local st = cookie.open(ctx.o.key, ctx.login_name, login_value)
  local code, state = arg("code"), arg("state")
  if not st or type(st.s) ~= "string" or type(st.t) ~= "number" or ctx.now - st.t > ctx.o.login_timeout then
    return fail(401, ngx.WARN, "no login under way for this browser (login cookie missing or expired)")
  end
  if not state or not constant_eq(state, st.s) then
    return fail(401, ngx.WARN, "state does not match the login under way")
  end
  if not code then return fail(401, ngx.WARN, "callback without a code") end
  local res, err = ctx.client:authenticate_with_code(code, ctx.redirect_uri, { code_verifier = st.v, nonce = st.n })
  if not res then
    if upstream_failure(err) then return fail(502, ngx.ERR, "code exchange failed: ", tostring(err)) end
    return fail(401, ngx.WARN, "code exchange refused: ", tostring(err))
  end
  cookie.clear(ctx.login_name, ctx.attrs, login_had)
  local now = ctx.now
  save(ctx, {
    at = res.access_token, rt = res.refresh_token, it = res.id_token,
    exp = token_exp(res.access_token, res.expires_in, now), ct = now, la = now,
  })
  ngx.header["Cache-Control"] = "no-store"
  return ngx.redirect(safe_return(st.r), 302)
end

local function logout(ctx)
  local s = load(ctx)
  clear(ctx, s)
  local to = ctx.o.post_logout_redirect_uri or (ctx.base .. "/")
  if to:find("^/") then to = ctx.base .. to end
  ngx.header["Cache-Control"] = "no-store"
  return ngx.redirect(ctx.client:logout_url{ id_token_hint = s and s.it or nil, post_logout_redirect_uri = to }, 302)
end

-- where the result of refreshing a session is kept for the requests that carry its
-- old cookie: the shared dict, or this worker's table
local function result_store(ctx)
  if ctx.dict then
    local dict = ctx.dict
    return function(k) return dict:get(k) end, function(k, v, ttl)
      local ok, err = dict:set(k, v, ttl)
      if not ok then ngx.log(ngx.WARN, "scalekit: login: cannot keep a refreshed session: ", err) end
    end
  end
  local results = ctx.results
  return function(k)
    local r = results[k]
    if r and ngx.now() < r.until_ then return r.v end
    results[k] = nil
  end, function(k, v, ttl) results[k] = { v = v, until_ = ngx.now() + ttl } end
end

-- the session with fresh tokens: refreshed here, or by whoever refreshes it now
local function refresh(ctx, s)
  local id = b64url(sha256(s.rt)):sub(1, 22)
  local key = "scalekit:gw:refreshed:" .. id
  local get, set = result_store(ctx)
  local function peek()
    local t = json.decode(get(key) or "")
    if type(t) == "table" then return t, t.exp, true end
  end
  local function fetch()
    local res, err = ctx.client:refresh_access_token(s.rt)
    if not res then return nil, err end
    local now = ngx.time()
    local t = {
      at = res.access_token, rt = res.refresh_token or s.rt, it = res.id_token or s.it,
      exp = token_exp(res.access_token, res.expires_in, now),
    }
    -- kept until the old token would have expired, so that every request still
    -- carrying the old cookie takes this result instead of reusing a rotated token
    set(key, json.encode(t), max(120, s.exp - now + 60))
    return t, t.exp
  end
  local t = peek()
  local err
  if not t then
    local old = ctx.now < s.exp and { at = s.at, rt = s.rt, it = s.it, exp = s.exp, old = true } or nil
    t, err = ctx.flight:run("session:" .. id, fetch, peek, old, s.exp)
  end
  if not t then return nil, err end
  if t.old then return s end          -- someone else is refreshing: the current token serves
  local n = { at = t.at, rt = t.rt, it = t.it, exp = t.exp, ct = s.ct, la = ctx.now, sid = s.sid }
  return n, nil, true
end

function _M.login(client, opts)
  local o = check(client, opts)
  local ctx = context(client, o)
  local uri = ngx.var.uri
  if uri == ctx.callback_path then return callback(ctx) end
  if o.logout_path and uri == o.logout_path then return logout(ctx) end
  local s = load(ctx)
  if not s then return start_login(ctx) end
  local now = ctx.now
  local dirty = now - s.la >= math.min(60, o.idle_timeout / 10)
  if now >= s.exp - o.refresh_ahead then
    if not s.rt then
      if now >= s.exp then
        clear(ctx, s)
        return start_login(ctx)
      end
    else
      local n, err, changed = refresh(ctx, s)
      if not n then
        if not upstream_failure(err) then
          ngx.log(ngx.INFO, "scalekit: login: session refresh refused, logging in again: ", tostring(err))
          clear(ctx, s)
          return start_login(ctx)
        end
        if now >= s.exp then return fail(502, ngx.ERR, "session refresh failed: ", tostring(err)) end
        ngx.log(ngx.WARN, "scalekit: login: session refresh failed, the current token serves: ", tostring(err))
      elseif changed then
        s, dirty = n, true
      end
    end
  end
  if dirty then
    s.la = now
    save(ctx, s)
  end
  return session_view(s)
end

return _M
