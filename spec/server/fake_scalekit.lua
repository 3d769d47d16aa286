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

-- init_by_lua: reads the JSON config written by spec/helpers/server.lua.
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

local function oauth_error(status, err, desc)
  return http.send_json(status, { error = err, error_description = desc })
end

local function first(v)
  if type(v) == "table" then
    return v[1]
  end
  return v
end

function _M.token()
  http.record("oauth")
  local path = http.raw_path()
  local method = ngx.req.get_method()
  http.apply_fault(path, method)

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
  local body = http.read_body()
  if body == "" then
    return nil
  end
  local ok, v = pcall(json.decode, body)
  if ok then
    return v
  end
  return nil, "request body is not valid JSON"
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

local store -- required lazily (after init)

local function fail(status, msg)
  return http.send_error(status, msg)
end

local function list_response(kind, list, key, match)
  local args = ngx.req.get_uri_args(0)
  local size, err = store.page_size(args)
  if not size then
    return fail(400, err)
  end
  local start
  start, err = store.decode_page_token(list, args.page_token)
  if not start then
    return fail(400, err)
  end
  return http.answer(200, store.page(kind, list, key, start, size, match))
end

local function body_or_400()
  local body, err = decode_json_body()
  if err then
    fail(400, err)
    return nil
  end
  return body or {}
end

local function one(key, rec_json, status)
  return http.answer(status or 200, '{"' .. key .. '":' .. rec_json .. "}")
end

local function result(key, rec, status, msg)
  if not rec then
    return fail(status, msg)
  end
  return one(key, json.encode(rec), 201)
end

local function updated(key, rec, status, msg)
  if not rec then
    return fail(status, msg)
  end
  return one(key, json.encode(rec), 200)
end

-- GET/PATCH/DELETE of one stored record (`kind` in the store, `name` in answers).
local function record(method, kind, name, id, update, delete, now)
  if method == "GET" then
    local rec = store.get_json(kind, id)
    if not rec then
      return fail(404, name .. " not found")
    end
    return one(name, rec)
  elseif method == "PATCH" then
    local body = body_or_400()
    if not body then return end
    return updated(name, update(id, body, now))
  elseif method == "DELETE" then
    if not delete(id) then
      return fail(404, name .. " not found")
    end
    return http.answer(200, "{}")
  end
  return false
end

-- Stateful routes, on the raw path. Returns true when answered.
local function route(method, path)
  local unescape = ngx.unescape_uri
  local now = ngx.now()

  if path == "/api/v1/organizations" then
    if method == "GET" then
      local args = ngx.req.get_uri_args(0)
      local ext = first(args.external_id)
      if type(ext) == "string" and ext ~= "" then
        local size, err = store.page_size(args)
        if not size then
          return fail(400, err)
        end
        local ok
        ok, err = store.decode_page_token("organizations", args.page_token)
        if not ok then
          return fail(400, err)
        end
        local id = store.id_by_external("org", ext)
        local rec = id and store.get_json("org", id)
        return http.answer(200, '{"organizations":[' .. (rec or "")
          .. '],"next_page_token":"","prev_page_token":"","total_size":'
          .. (rec and "1" or "0") .. "}")
      end
      return list_response("org", "organizations", "organizations")
    elseif method == "POST" then
      local body = body_or_400()
      if not body then return end
      return result("organization", store.create_org(body, now))
    end
    return false
  end

  local ext = str_match(path, "^/api/v1/organizations:external/([^/]+)$")
  if ext then
    if method == "GET" then
      local id = store.id_by_external("org", unescape(ext))
      local rec = id and store.get_json("org", id)
      if not rec then
        return fail(404, "organization not found")
      end
      return one("organization", rec)
    end
    return false
  end

  local org_id = str_match(path, "^/api/v1/organizations/([^/:]+)$")
  if org_id then
    return record(method, "org", "organization", unescape(org_id), store.update_org, store.delete_org, now)
  end

  org_id = str_match(path, "^/api/v1/organizations/([^/:]+)/users$")
  if org_id then
    org_id = unescape(org_id)
    if method == "GET" then
      if not store.get_json("org", org_id) then
        return fail(404, "organization not found")
      end
      return list_response("usr", "users", "users", store.member_of(org_id))
    elseif method == "POST" then
      local body = body_or_400()
      if not body then return end
      return result("user", store.create_user(org_id, body, now))
    end
    return false
  end

  if path == "/api/v1/users" then
    if method == "GET" then
      return list_response("usr", "users", "users")
    end
    return false
  end

  if path == "/api/v1/users:search" then
    if method == "GET" then
      local q = first(ngx.req.get_uri_args(0).query)
      if type(q) ~= "string" or q == "" then
        return fail(400, "query is required")
      end
      return list_response("usr", "users", "users", store.email_contains(q))
    end
    return false
  end

  local user_id = str_match(path, "^/api/v1/users/([^/:]+)$")
  if user_id then
    return record(method, "usr", "user", unescape(user_id), store.update_user, store.delete_user, now)
  end

  return false
end

function _M.api()
  http.record("api")
  local path = http.raw_path()
  local method = ngx.req.get_method()
  http.apply_fault(path, method)

  local msg = http.check_bearer()
  if msg then
    return http.send_error(401, msg)
  end

  store = store or require("fake_store")
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
