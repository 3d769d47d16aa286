-- luacheck: globals ngx
-- Fake Scalekit: /_admin/… endpoints used by spec/support/fake.lua.
-- Admin requests are not counted in the stats, not logged and not subject to
-- faults.
local http = require("fake_http")
local store = require("fake_store")

local ngx = ngx
local type = type
local tonumber = tonumber
local tostring = tostring
local unpack = rawget(table, "unpack") or rawget(_G, "unpack")

local STATE, TOKENS, CONNS, CONFIG = http.STATE, http.TOKENS, http.CONNS, http.CONFIG

local _M = {}

local function ok(value)
  return http.send_json(200, value)
end

local function bad(msg)
  return http.send_error(400, msg)
end

local function body_table()
  local v, err = http.json_body("admin body is not valid JSON")
  if err then
    return nil, err
  end
  if v == nil or v == http.null then
    return {}
  end
  return v
end

local function stats()
  return {
    tokens_issued = STATE:get("stat:tokens_issued") or 0,
    connections = STATE:get("stat:connections") or 0,
    requests = STATE:get("stat:requests") or 0,
    api_requests = STATE:get("stat:api_requests") or 0,
    faults_applied = STATE:get("stat:faults_applied") or 0,
    faults_pending = STATE:get("faults:n") or 0,
    revocations = STATE:get("stat:revocations") or 0,
    jwks_fetches = STATE:get("stat:jwks_fetches") or 0,
    oidc_tokens = STATE:get("stat:oidc_tokens") or 0,
    organizations = store.count("org"),
    users = store.count("usr"),
    domains = store.count("dom"),
    sso_connections = store.count("conn"),
    sessions = store.count("ses"),
    roles = store.count("role"),
    permissions = store.count("perm"),
    data_free_bytes = ngx.shared.skfake_data:free_space(),
  }
end

local function config()
  return {
    token_ttl = CONFIG:get("token_ttl"),
    client_id = CONFIG:get("client_id"),
    client_secret = CONFIG:get("client_secret"),
    instance = CONFIG:get("instance"),
  }
end

local function reset(opts)
  local gen = STATE:get("tokgen")
  store.flush()
  STATE:flush_all()
  STATE:flush_expired(0)
  CONNS:flush_all()
  CONNS:flush_expired(0)
  STATE:set("faults", "[]")
  STATE:set("faults:n", 0)
  if opts.keep_tokens then
    if gen then
      STATE:set("tokgen", gen)
    end
  else
    TOKENS:flush_all()
    TOKENS:flush_expired(0)
  end
end

local ROUTES = {}

ROUTES["GET /_admin/ping"] = function()
  return ok({ ok = true, instance = CONFIG:get("instance"), worker = ngx.worker.pid() })
end

ROUTES["POST /_admin/reset"] = function(body)
  reset(body)
  return ok({ ok = true })
end

ROUTES["GET /_admin/config"] = function()
  return ok(config())
end

ROUTES["POST /_admin/config"] = function(body)
  if body.token_ttl ~= nil then
    local ttl = tonumber(body.token_ttl)
    if not ttl or ttl < 0 then
      return bad("token_ttl must be a number >= 0")
    end
    CONFIG:set("token_ttl", ttl)
  end
  for _, k in ipairs({ "client_id", "client_secret" }) do
    if body[k] ~= nil then
      if type(body[k]) ~= "string" then
        return bad(k .. " must be a string")
      end
      CONFIG:set(k, body[k])
    end
  end
  return ok(config())
end

-- {organizations = n, users = n, connections = n, sessions = n, organization_id = "org_…"
-- (users' and connections' organization), user_id = "usr_…" (sessions' user)}. Users and
-- connections spread over the organizations just seeded (the first 100), sessions over the
-- users just seeded; without any, over a new organization / the given ids.
ROUTES["POST /_admin/seed"] = function(body)
  local now = ngx.now()
  local res = {}
  local function run(kind, n, parents, fn)
    n = tonumber(n or 0) or 0
    res[kind] = n > 0 and n or 0
    if n <= 0 then
      return {}
    end
    local ids, status, msg = fn(n, parents, now)
    if not ids then
      error({ status, msg })
    end
    res["first_" .. kind:sub(1, -2) .. "_id"], res["last_" .. kind:sub(1, -2) .. "_id"] = ids[1], ids[#ids]
    return ids
  end
  local function given(kind, id)
    if id == nil then
      return nil
    end
    if type(id) ~= "string" or not store.get_json(kind, id) then
      error({ 404, store.KINDS[kind].what .. " not found" })
    end
    return { id }
  end
  local okp, err = pcall(function()
    local orgs = run("organizations", body.organizations, nil, store.seed_orgs)
    local parents = given("org", body.organization_id) or { unpack(orgs, 1, math.min(#orgs, 100)) }
    if #parents == 0 and ((tonumber(body.users) or 0) > 0 or (tonumber(body.connections) or 0) > 0) then
      local r, status, msg = store.create_org({ display_name = "Seeded Users Organization" }, now)
      if not r then error({ status, msg }) end
      parents = { r.id }
      res.users_organization_id = r.id
    end
    local users = run("users", body.users, parents, store.seed_users)
    run("connections", body.connections, parents, store.seed_connections)
    users = given("usr", body.user_id) or users
    if #users == 0 and (tonumber(body.sessions) or 0) > 0 then
      error({ 400, "sessions need users: seed users or give user_id" })
    end
    run("sessions", body.sessions, users, store.seed_sessions)
  end)
  if not okp then
    if type(err) ~= "table" then error(err) end
    return http.send_error(err[1], err[2])
  end
  res.total_organizations = store.count("org")
  res.total_users = store.count("usr")
  return ok(res)
end

ROUTES["POST /_admin/faults"] = function(body)
  local list = body
  if type(list) ~= "table" then
    return bad("faults must be a JSON array or object")
  end
  if list[1] == nil and next(list) ~= nil then
    list = { list } -- a single fault object
  end
  for i, f in ipairs(list) do
    if type(f) ~= "table" then
      return bad("fault #" .. i .. " is not an object")
    end
  end
  local n, err = http.add_faults(list)
  if not n then
    return http.send_error(500, "fault queue: " .. tostring(err))
  end
  return ok({ queued = #list, pending = n })
end

ROUTES["GET /_admin/faults"] = function()
  return http.send(200, http.pending_faults_json())
end

ROUTES["DELETE /_admin/faults"] = function()
  http.clear_faults()
  return ok({ ok = true })
end

ROUTES["POST /_admin/revoke"] = function()
  http.revoke_tokens()
  return ok({ ok = true })
end

ROUTES["GET /_admin/stats"] = function()
  return ok(stats())
end

ROUTES["GET /_admin/requests"] = function()
  return http.send(200, http.request_log_json())
end

function _M.handle()
  http.request_id()
  local key = ngx.req.get_method() .. " " .. ngx.var.uri
  local handler = ROUTES[key]
  if not handler then
    return http.send_error(404, "no admin route " .. key)
  end
  local body, err = body_table()
  if not body then
    return bad(err)
  end
  return handler(body)
end

return _M
