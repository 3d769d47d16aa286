-- luacheck: globals ngx
-- Fake Scalekit: entry points for nginx.conf (init, /oauth/token, /api/…).
local http = require("fake_http")

local ngx = ngx
local json = http.json
local type = type
local tonumber = tonumber
local str_match = string.match

local CONFIG = http.CONFIG

local _M = {}

local DEFAULT_CONFIG = {
  token_ttl = 3600,
  client_id = "skc_test",
  client_secret = "test_secret_value",
}
_M.DEFAULT_CONFIG = DEFAULT_CONFIG

-- init_by_lua: reads the JSON config written by spec/support/fake.lua.
function _M.init(path)
  local conf = {}
  local f = io.open(path, "rb")
  if f then
    local s = f:read("*a")
    f:close()
    conf = json.decode(s)
  end
  for k, v in pairs(DEFAULT_CONFIG) do
    if conf[k] == nil then
      conf[k] = v
    end
  end
  for k, v in pairs(conf) do
    if type(v) ~= "table" then
      CONFIG:set(k, v)
    end
  end
  -- warm the modules in the master so that workers fork with them loaded
  require("fake_store")
  require("fake_admin")
end

function _M.init_worker()
  math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
end

---------------------------------------------------------------------------
-- POST /oauth/token
---------------------------------------------------------------------------

local oauth_error, first = http.oauth_error, http.first

function _M.token()
  local _, method = http.begin("oauth")

  if method ~= "POST" then
    ngx.header["Allow"] = "POST"
    return oauth_error(405, "invalid_request", "the token endpoint only accepts POST")
  end

  local body = http.read_body()
  local args
  local ctype = ngx.var.content_type or ""
  if ctype:lower():find("application/json", 1, true) then
    local ok, t = pcall(json.decode, body)
    args = (ok and type(t) == "table") and t or {}
  else
    args = ngx.decode_args(body, 0) or {}
  end

  local client_id, client_secret = first(args.client_id), first(args.client_secret)
  local basic = false
  local auth = ngx.var.http_authorization
  if auth then
    local b64 = str_match(auth, "^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
    if b64 then
      basic = true
      local pair = ngx.decode_base64(b64) or ""
      local id, secret = str_match(pair, "^([^:]*):(.*)$")
      if id then
        client_id, client_secret = ngx.unescape_uri(id), ngx.unescape_uri(secret)
      end
    end
  end

  local grant = first(args.grant_type)
  if type(grant) ~= "string" or grant == "" then
    return oauth_error(400, "invalid_request", "grant_type is required")
  end
  if grant ~= "client_credentials" and grant ~= "authorization_code" and grant ~= "refresh_token" then
    return oauth_error(400, "unsupported_grant_type",
      "grant_type '" .. grant .. "' is not supported")
  end
  if type(client_id) ~= "string" or client_id == ""
      or type(client_secret) ~= "string" or client_secret == "" then
    return oauth_error(400, "invalid_request", "client_id and client_secret are required")
  end
  if client_id ~= CONFIG:get("client_id") or client_secret ~= CONFIG:get("client_secret") then
    if basic then
      ngx.header["WWW-Authenticate"] = 'Basic realm="scalekit"'
    end
    return oauth_error(401, "invalid_client", "invalid client credentials")
  end

  if grant ~= "client_credentials" then
    return require("fake_oidc").grant(grant, args)
  end

  local ttl = tonumber(CONFIG:get("token_ttl")) or 3600
  local token = http.issue_token(ttl)
  local scope = first(args.scope)
  if type(scope) ~= "string" or scope == "" then
    scope = "openid"
  end
  ngx.header["Cache-Control"] = "no-store"
  return http.answer(200, '{"access_token":' .. json.encode(token)
    .. ',"token_type":"Bearer","expires_in":' .. string.format("%d", math.floor(ttl))
    .. ',"scope":' .. json.encode(scope) .. "}")
end

---------------------------------------------------------------------------
-- /api/…
---------------------------------------------------------------------------

local function decode_json_body()
  return http.json_body("request body is not valid JSON")
end

local function echo()
  local body = http.read_body()
  local decoded = http.null
  if body ~= "" then
    local ok, v = pcall(json.decode, body)
    if ok then
      decoded = v
    end
  end
  local args = ngx.req.get_uri_args(0)
  return http.answer(200, json.encode({
    echo = {
      method = ngx.req.get_method(),
      uri = ngx.var.request_uri,
      path = http.raw_path(),
      query = ngx.var.args or "",
      args = args,
      body = decoded,
      raw_body = body,
      content_type = ngx.var.content_type or "",
      headers = ngx.req.get_headers(0),
    },
  }))
end

local store = require("fake_store")

local function nonempty_arg(v)
  return type(v) == "string" and v ~= ""
end

local function fail(status, msg)
  return http.send_error(status, msg)
end

local function args()
  return ngx.req.get_uri_args(0)
end

local function body_or_400()
  local body, err = decode_json_body()
  if err then
    fail(400, err)
    return nil
  end
  return type(body) == "table" and body or {}
end

local function one(key, rec_json, status)
  return http.answer(status or 200, '{"' .. key .. '":' .. rec_json .. "}")
end

-- {key: rec} (rec a table), or the store's error.
local function reply(key, status_ok)
  return function(rec, status, msg)
    if not rec then
      return fail(status, msg)
    end
    return one(key, store.encode(rec), status_ok)
  end
end

local function paged(kind, list, key, match)
  local a = args()
  local size, err = store.page_size(a)
  if not size then
    return fail(400, err)
  end
  local start
  start, err = store.decode_page_token(list, first(a.page_token))
  if not start then
    return fail(400, err)
  end
  return http.answer(200, store.page(kind, list, key, start, size, match))
end

local function array(key, recs, extra)
  local out = {}
  for i, r in ipairs(recs) do
    out[i] = store.encode(r)
  end
  return http.answer(200, '{"' .. key .. '":[' .. table.concat(out, ",") .. "]" .. (extra or "") .. "}")
end

local function pick(rec, keys)
  local out = {}
  for _, k in ipairs(keys) do
    out[k] = rec[k]
  end
  return out
end

-- Filters on the record's JSON (decoded only when a list is filtered).
local function member_of(org_id)
  return function(rec)
    for _, m in ipairs(json.decode(rec).memberships or {}) do
      if m.organization_id == org_id then
        return true
      end
    end
    return false
  end
end

local function email_contains(q)
  q = q:lower()
  return function(rec)
    local email = json.decode(rec).email
    return type(email) == "string" and email:lower():find(q, 1, true) ~= nil
  end
end

-- GET / PATCH (or PUT) / DELETE of one stored record, the id being the route's
-- last capture; `owner`: a field that must equal the first capture (the parent).
local function record(kind, key, opts)
  opts = opts or {}
  local what = store.KINDS[kind].what
  local function find(c)
    local s = store.get_json(kind, c[#c])
    if s and opts.owner and json.decode(s)[opts.owner] ~= c[1] then
      s = nil
    end
    return s
  end
  local h = {
    GET = function(c)
      local s = find(c)
      if not s then
        return fail(404, what .. " not found")
      end
      return opts.bare and http.answer(200, s) or one(key, s)
    end,
    DELETE = function(c)
      if not find(c) or not store.remove(kind, c[#c]) then
        return fail(404, what .. " not found")
      end
      return http.answer(200, "{}")
    end,
  }
  if opts.update ~= false then
    h[opts.update_method or "PATCH"] = function(c, now)
      local body = body_or_400()
      if not body then return end
      if not find(c) then
        return fail(404, what .. " not found")
      end
      return reply(key)((opts.update or store.update)(kind, c[#c], body, now, opts.hook))
    end
  end
  return h
end

local function create(key, make)
  return function(c, now)
    local body = body_or_400()
    if not body then return end
    return reply(key, 201)(make(body, now, c))
  end
end

local function role_permissions(role_id)
  local out = {}
  for _, p in ipairs(store.get("role", role_id).permissions) do
    out[#out + 1] = store.get("perm", store.id_by_unique("perm", p.name) or "") or p
  end
  return out
end

local function toggle(enabled)
  return function(c)
    local rec = store.get("conn", c[2])
    if not rec or rec.organization_id ~= c[1] then
      return fail(404, "connection not found")
    end
    rec.enabled = enabled
    local ok, status, msg = store.replace("conn", rec, rec)
    if not ok then
      return fail(status, msg)
    end
    return http.send_json(200, { enabled = enabled, error_message = "" })
  end
end

local function update_user(_, id, body, now)
  return store.update_user(id, body, now)
end

local REVOKED = { "absolute_expires_at", "created_at", "expired_at", "idle_expires_at",
  "last_active_at", "logout_at", "session_id", "status", "updated_at", "user_id" }

local function revoke(rec, now)
  rec.status, rec.logout_at, rec.updated_at = "REVOKED", http.rfc3339(now), http.rfc3339(now)
  store.replace("ses", rec, rec)
  return pick(rec, REVOKED)
end

local CONN_LIST = { "domains", "enabled", "id", "key_id", "organization_id", "provider",
  "provider_key", "status", "type" }

-- The stateful routes, on the raw path. `ids`: what each capture names ("org",
-- "usr", "role:name" = a role by its name, "usr:ext" = a user by external id);
-- captures are unescaped and resolved to record ids before the handler runs.
-- When a parent does not exist, the route answers 404 if its id is one this
-- fake could have issued (or `strict`), and is echoed otherwise (org_1, "admin"),
-- so that request-shape specs can use made-up ids. A method the route does not
-- list is echoed too.
local ROUTES = {
  { "^/api/v1/organizations$",
    GET = function()
      local ext = first(args().external_id)
      if type(ext) ~= "string" or ext == "" then
        return paged("org", "organizations", "organizations")
      end
      local _, err = store.decode_page_token("organizations", first(args().page_token))
      if err then return fail(400, err) end
      local id = store.id_by_unique("org", ext)
      local rec = id and store.get_json("org", id)
      return http.answer(200, '{"organizations":[' .. (rec or "")
        .. '],"next_page_token":"","prev_page_token":"","total_size":' .. (rec and "1" or "0") .. "}")
    end,
    POST = create("organization", store.create_org) },
  { "^/api/v1/organizations:external/([^/]+)$", ids = { "org:ext" }, strict = true,
    GET = record("org", "organization").GET },
  { "^/api/v1/organizations/([^/:]+)$", record = { "org", "organization" } },
  { "^/api/v1/organizations/([^/:]+)/portal_links$", ids = { "org" },
    PUT = function(_, now)
      local lid = "lnk_" .. http.random_hex(8)
      local q = ngx.var.args and ngx.var.args ~= "" and ("?" .. ngx.var.args) or ""
      return http.send_json(200, { link = {
        id = lid, location = ngx.var.scheme .. "://" .. ngx.var.http_host .. "/magicLink/" .. lid .. q,
        expire_time = http.rfc3339(now + 60) } })
    end },
  { "^/api/v1/organizations/([^/:]+)/users$", ids = { "org" }, strict = true,
    GET = function(c) return paged("usr", "users", "users", member_of(c[1])) end,
    POST = create("user", function(body, now, c) return store.create_user(c[1], body, now) end) },
  { "^/api/v1/users$", GET = function() return paged("usr", "users", "users") end },
  { "^/api/v1/users:search$",
    GET = function()
      local q = first(args().query)
      if type(q) ~= "string" or q == "" then
        return fail(400, "query is required")
      end
      return paged("usr", "users", "users", email_contains(q))
    end },
  { "^/api/v1/users/([^/:]+)$", record = { "usr", "user", { update = update_user } } },
  { "^/api/v1/users:external/([^/]+)$", ids = { "usr:ext" }, strict = true,
    record = { "usr", "user", { update = update_user } } },
  -- domains (paged by page_number)
  { "^/api/v1/organizations/([^/:]+)/domains$", ids = { "org" },
    GET = function(c)
      local a = args()
      local size, err = store.page_size(a, "page_size", 30)
      local number = tonumber(first(a.page_number) or 0) -- 0-based
      if not size or not number or number < 0 then
        return fail(400, err or "invalid page_number")
      end
      local dtype = first(a.domain_type)
      local all, page = store.all("dom", function(rec)
        local d = json.decode(rec)
        return d.organization_id == c[1] and (not nonempty_arg(dtype) or d.domain_type == dtype)
      end), {}
      for i = number * size + 1, math.min(#all, (number + 1) * size) do
        page[#page + 1] = all[i]
      end
      return array("domains", page, (',"page_number":%d,"page_size":%d'):format(number, size))
    end,
    POST = create("domain", function(body, now, c)
      return store.create("dom", body, now, { organization_id = c[1], environment_id = "env_fake",
        verification_status = "PENDING", verification_method = "DNS" })
    end) },
  { "^/api/v1/organizations/([^/:]+)/domains/([^/:]+)$", ids = { "org" },
    record = { "dom", "domain", { owner = "organization_id", update = false } } },
  -- connections (made by the admin seed)
  { "^/api/v1/connections$",
    GET = function()
      local a = args()
      local org, domain = first(a.organization_id), first(a.domain)
      local out = {}
      for _, rec in ipairs(store.all("conn", nonempty_arg(org) and store.where("organization_id", org))) do
        local list = pick(rec, CONN_LIST)
        list.organization_name = (store.get("org", rec.organization_id) or {}).display_name or ""
        local ok = not nonempty_arg(domain)
        for _, d in ipairs(rec.domains or {}) do
          ok = ok or d == domain
        end
        if ok then out[#out + 1] = list end
      end
      return array("connections", out)
    end },
  { "^/api/v1/organizations/([^/:]+)/connections/([^/:]+)$", ids = { "org" },
    record = { "conn", "connection", { owner = "organization_id", update = false } } },
  { "^/api/v1/organizations/([^/:]+)/connections/([^/:]+):enable$", ids = { "org" }, PATCH = toggle(true) },
  { "^/api/v1/organizations/([^/:]+)/connections/([^/:]+):disable$", ids = { "org" }, PATCH = toggle(false) },
  -- memberships (inside the user records)
  { "^/api/v1/memberships/organizations/([^/:]+)/users/([^/:]+)$", ids = { "org", "usr" },
    membership = true },
  { "^/api/v1/memberships/organizations/([^/:]+)/users:external/([^/]+)$", ids = { "org", "usr:ext" },
    membership = true },
  -- roles and permissions (by name)
  { "^/api/v1/roles$",
    GET = function() return array("roles", store.all("role")) end,
    POST = create("role", store.create_role) },
  { "^/api/v1/roles/([^/:]+)$", ids = { "role:name" }, strict = true,
    record = { "role", "role", { update_method = "PUT", hook = function(rec, src)
      if type(src.permissions) ~= "table" then return rec end
      rec.permissions = {}
      return store.role_permission_refs(rec, src.permissions, ngx.now())
    end } } },
  { "^/api/v1/roles/([^/:]+)/permissions$", ids = { "role:name" },
    GET = function(c) return array("permissions", role_permissions(c[1])) end,
    POST = function(c, now)
      local body = body_or_400()
      if not body then return end
      local ok, status, msg = store.add_role_permissions(c[1], body.permission_names, now)
      if not ok then return fail(status, msg) end
      return array("permissions", role_permissions(c[1]))
    end },
  { "^/api/v1/roles/([^/:]+)/permissions/([^/:]+)$", ids = { "role:name" },
    DELETE = function(c)
      local ok, status, msg = store.remove_role_permission(c[1], c[2])
      if not ok then return fail(status, msg) end
      return http.answer(200, "{}")
    end },
  { "^/api/v1/permissions$",
    GET = function() return paged("perm", "permissions", "permissions") end,
    POST = create("permission", function(body, now) return store.create("perm", body, now,
      { is_scalekit_permission = false }) end) },
  { "^/api/v1/permissions/([^/:]+)$", ids = { "perm:name" }, strict = true,
    record = { "perm", "permission", { update_method = "PUT" } } },
  -- sessions (made by the admin seed)
  { "^/api/v1/sessions/([^/:]+)$", record = { "ses", "session", { bare = true, update = false } } },
  { "^/api/v1/sessions/([^/:]+)/revoke$", ids = { "ses" }, strict = true,
    POST = function(c, now)
      return http.answer(200, '{"revoked_session":' .. store.encode(revoke(store.get("ses", c[1]), now)) .. "}")
    end },
  { "^/api/v1/users/([^/:]+)/sessions$", ids = { "usr" },
    GET = function(c)
      local status = args()["filter.status"]
      local want = {}
      for _, s in ipairs(type(status) == "table" and status or { status }) do
        want[s] = true
      end
      return paged("ses", "sessions", "sessions", function(rec)
        local s = json.decode(rec)
        return s.user_id == c[1] and (next(want) == nil or want[s.status] == true)
      end)
    end },
  { "^/api/v1/users/([^/:]+)/sessions/revoke$", ids = { "usr" },
    POST = function(c, now)
      local out = {}
      for _, s in ipairs(store.all("ses", store.where("user_id", c[1]))) do
        if s.status == "ACTIVE" then out[#out + 1] = revoke(s, now) end
      end
      return array("revoked_sessions", out, ',"total_revoked":' .. #out)
    end },
}

local function membership_handlers()
  local function op(name)
    return function(c, now)
      local body = name == "delete" and {} or body_or_400()
      if not body then return end
      local user, status, msg = store.membership(name, c[1], c[2], body, now)
      if not user then return fail(status, msg) end
      if name == "delete" then return http.answer(200, "{}") end
      return one("user", store.encode(user), name == "create" and 201 or 200)
    end
  end
  return { POST = op("create"), PATCH = op("update"), DELETE = op("delete") }
end

for _, r in ipairs(ROUTES) do
  local h = (r.record and record(r.record[1], r.record[2], r.record[3])) or (r.membership and membership_handlers())
  for m, fn in pairs(h or {}) do
    r[m] = r[m] or fn
  end
end

-- The record id a capture names, or nil.
local function resolve(spec, v)
  local kind, via = spec:match("^(%w+):?(%w*)$")
  if via ~= "" then
    return store.id_by_unique(kind, v), kind
  end
  return store.get_json(kind, v) and v, kind
end

-- Answers the request when a stateful route takes it; false otherwise (echo).
local function route(method, path)
  for _, r in ipairs(ROUTES) do
    local caps = { str_match(path, r[1]) }
    if caps[1] then
      local handler = r[method]
      if not handler then
        return false
      end
      for i = 1, #caps do
        caps[i] = ngx.unescape_uri(caps[i])
      end
      for i, spec in ipairs(r.ids or {}) do
        local id, kind = resolve(spec, caps[i])
        if not id then
          if not r.strict and not store.issued_id(kind, caps[i]) then
            return false
          end
          return fail(404, store.KINDS[kind].what .. " not found")
        end
        caps[i] = id
      end
      return handler(caps, ngx.now())
    end
  end
  return false
end

function _M.api()
  local path, method = http.begin("api")

  local msg = http.check_bearer()
  if msg then
    return http.send_error(401, msg)
  end

  if route(method, path) == false then
    return echo()
  end
end

-- Anything outside /oauth/token, /api/ and /_admin/.
function _M.not_found()
  http.request_id()
  return http.send_error(404, "no route for " .. ngx.var.request_uri)
end

return _M
