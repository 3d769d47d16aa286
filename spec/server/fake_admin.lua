-- luacheck: globals ngx
-- Fake Scalekit: /_admin/… endpoints used by spec/helpers/server.lua.
-- Admin requests are not counted in the stats, not logged and not subject to
-- faults.
local http = require("fake_http")
local store = require("fake_store")

local ngx = ngx
local json = http.json
local type = type
local tonumber = tonumber
local tostring = tostring

local STATE, TOKENS, CONNS, CONFIG = http.STATE, http.TOKENS, http.CONNS, http.CONFIG

local _M = {}

local function ok(value)
  return http.send_json(200, value)
end

local function bad(msg)
  return http.send_error(400, msg)
end

local function body_table()
  local body = http.read_body()
  if body == "" then
    return {}
  end
  local okd, v = pcall(json.decode, body)
  if not okd then
    return nil, "admin body is not valid JSON"
  end
  if v == http.null then
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

-- {organizations = n, users = n, organization_id = "org_…" (users' org)}
ROUTES["POST /_admin/seed"] = function(body)
  local norg = tonumber(body.organizations or 0) or 0
  local nusr = tonumber(body.users or 0) or 0
  local now = ngx.now()
  local res = { organizations = 0, users = 0 }
  if norg > 0 then
    local r, status, msg = store.seed_orgs(norg, now)
    if not r then
      return http.send_error(status, msg)
    end
    res.organizations = norg
    res.first_organization_id, res.last_organization_id = r.first, r.last
  end
  if nusr > 0 then
    local org_ids = {}
    if type(body.organization_id) == "string" then
      if not store.get_json("org", body.organization_id) then
        return http.send_error(404, "organization not found")
      end
      org_ids[1] = body.organization_id
    elseif norg > 0 then
      -- spread over the organizations just seeded (at most the first 100)
      local first_seq = select(2, ngx.shared.skfake_data:get("org:" .. res.first_organization_id))
      for s = first_seq, first_seq + math.min(norg, 100) - 1 do
        local id = ngx.shared.skfake_data:get("org:s:" .. s)
        if id then
          org_ids[#org_ids + 1] = id
        end
      end
    end
    if #org_ids == 0 then
      local r, status, msg = store.create_org({ display_name = "Seeded Users Organization" }, now)
      if not r then
        return http.send_error(status, msg)
      end
      org_ids[1] = r.id
      res.users_organization_id = r.id
    end
    local r, status, msg = store.seed_users(nusr, org_ids, now)
    if not r then
      return http.send_error(status, msg)
    end
    res.users = nusr
    res.first_user_id, res.last_user_id = r.first, r.last
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
