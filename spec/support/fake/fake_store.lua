-- luacheck: globals ngx
-- Fake Scalekit: every stateful record in a lua_shared_dict, through ONE generic
-- collection mechanism parameterized per kind (KINDS below).
--
-- Layout in ngx.shared.skfake_data, for each kind ("org", "usr", "dom", …):
--   <kind>:<id>        record as a JSON string (flags = its sequence number)
--   <kind>:s:<seq>     id of the record created as number <seq> (1, 2, …)
--   <kind>:n           last sequence number handed out
--   <kind>:count       live records
--   <kind>:u:<value>   id, for the kind's unique field (external_id, name, domain)
-- Lists walk the sequence numbers, so a page costs O(page_size) dict reads and
-- the records are never decoded unless a filter needs it. Page tokens are
-- base64("pt1:<list>:<seq>") cursors; deleted records just leave holes.
local http = require("fake_http")

local ngx = ngx
local json = http.json
local null = http.null
local tostring = tostring
local tonumber = tonumber
local type = type
local ipairs = ipairs
local concat = table.concat
local str_format = string.format

local DATA = ngx.shared.skfake_data
local STATE = http.STATE

local _M = {}

local function nonempty(v)
  return type(v) == "string" and v ~= ""
end

local function copy(v)
  return type(v) == "table" and json.decode(json.encode(v)) or v
end

-- cjson 2.1.0 has no empty_array: these keys always hold arrays.
local ARRAYS = {
  permissions = true, domains = true, roles = true, memberships = true, features = true,
  authenticated_clients = true, authenticated_organizations = true, groups = true,
}
local function encode(v)
  return (json.encode(v):gsub('"([%w_]+)":{}', function(k)
    if ARRAYS[k] then return '"' .. k .. '":[]' end
  end))
end
_M.encode = encode

---------------------------------------------------------------------------
-- Kinds: prefix of ids, name in messages, unique field, fields a create/update
-- may set ({name, lua type, default}), required fields, fixed (create-only) fields.
---------------------------------------------------------------------------

local KINDS = {
  org = { what = "organization", unique = "external_id", required = { "display_name" },
          fields = { { "display_name", "string" }, { "external_id", "string", "" },
                     { "region_code", "string", "US" }, { "metadata", "table", {} },
                     { "slug", "string" }, { "logo_url", "string" } } },
  usr = { what = "user", unique = "external_id", required = { "email" },
          fields = { { "email", "string" }, { "external_id", "string", "" },
                     { "metadata", "table", {} } } },
  dom = { what = "domain", unique = "domain", required = { "domain" }, fixed = { domain = true },
          fields = { { "domain", "string" }, { "domain_type", "string", "ORGANIZATION_DOMAIN" } } },
  conn = { what = "connection" },
  ses = { what = "session", id_field = "session_id" },
  role = { what = "role", unique = "name", no_times = true, required = { "name" }, fixed = { name = true },
           fields = { { "name", "string" }, { "display_name", "string", "" },
                      { "description", "string", "" }, { "extends", "string", "" } } },
  perm = { what = "permission", unique = "name", required = { "name" }, fixed = { name = true },
           fields = { { "name", "string" }, { "description", "string", "" } } },
}
_M.KINDS = KINDS

local function id_prefix()
  local p = STATE:get("idprefix")
  if not p then
    STATE:add("idprefix", math.random(10000, 99999))
    p = STATE:get("idprefix")
  end
  return p
end

-- "org_" + 17 digits: a 5-digit prefix chosen at every reset, then the sequence.
local function make_id(kind, seq)
  return str_format("%s_%05d%012d", kind, id_prefix(), seq)
end

-- true when `id` has the shape of an id this fake hands out for `kind`.
function _M.issued_id(kind, id)
  local p, digits = tostring(id):match("^(%l+)_(%d+)$")
  return p == kind and #digits == 17
end

local function store_error(err)
  return nil, 500, "fake store: " .. tostring(err)
end

---------------------------------------------------------------------------
-- Paging
---------------------------------------------------------------------------

function _M.encode_page_token(list, seq)
  return ngx.encode_base64("pt1:" .. list .. ":" .. tostring(seq))
end

-- page_size: default 10, max 100 (clamped). nil, msg on garbage.
function _M.page_size(args, key, default)
  local v = args[key or "page_size"]
  if type(v) == "table" then v = v[#v] end
  if v == nil or v == "" or v == true then return default or 10 end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) then return nil, "invalid " .. (key or "page_size") end
  if n <= 0 then return default or 10 end
  return n > 100 and 100 or n
end

-- Returns the sequence number to start at, or nil, msg.
function _M.decode_page_token(list, token)
  if token == nil or token == "" or token == true then return 1 end
  if type(token) ~= "string" then return nil, "invalid page token" end
  local raw = ngx.decode_base64(token)
  local l, seq = (raw or ""):match("^pt1:([%w_]+):(%d+)$")
  if not l or l ~= list then return nil, "invalid page token" end
  return tonumber(seq)
end

-- The JSON of record number `s` of `kind` when it exists and passes `match`.
local function at(kind, s, match)
  local id = DATA:get(kind .. ":s:" .. s)
  local rec = id and DATA:get(kind .. ":" .. id)
  if rec and (not match or match(rec)) then return rec end
  return nil
end

-- One page of records of `kind` from cursor `start`; `match(rec_json)` is an
-- optional filter. Answers the JSON text of the list response.
function _M.page(kind, list, key, start, size, match)
  local last = DATA:get(kind .. ":n") or 0
  local items, seq = {}, start
  while seq <= last and #items < size do
    items[#items + 1] = at(kind, seq, match)
    seq = seq + 1
  end
  local next_token = ""
  while seq <= last do
    if at(kind, seq, match) then
      next_token = _M.encode_page_token(list, seq)
      break
    end
    seq = seq + 1
  end
  local prev_token = ""
  if start > 1 then
    local n, s, pstart = 0, math.min(start - 1, last), nil
    while s >= 1 and n < size do
      if at(kind, s, match) then n, pstart = n + 1, s end
      s = s - 1
    end
    if pstart then prev_token = _M.encode_page_token(list, pstart) end
  end
  local total = DATA:get(kind .. ":count") or 0
  if match then
    total = 0
    for s = 1, last do
      if at(kind, s, match) then total = total + 1 end
    end
  end
  return '{"' .. key .. '":[' .. concat(items, ",") .. '],"next_page_token":'
    .. json.encode(next_token) .. ',"prev_page_token":' .. json.encode(prev_token)
    .. ',"total_size":' .. str_format("%d", total) .. "}"
end

-- Every record of `kind` passing `match`, decoded, in creation order.
function _M.all(kind, match)
  local out = {}
  for s = 1, DATA:get(kind .. ":n") or 0 do
    local rec = at(kind, s, match)
    if rec then out[#out + 1] = json.decode(rec) end
  end
  return out
end

-- Filter: the decoded record's `field` equals `value`.
function _M.where(field, value)
  return function(rec)
    return json.decode(rec)[field] == value
  end
end

---------------------------------------------------------------------------
-- Records
---------------------------------------------------------------------------

function _M.get_json(kind, id)
  return (DATA:get(kind .. ":" .. id))
end

function _M.get(kind, id)
  local s = DATA:get(kind .. ":" .. id)
  return s and json.decode(s)
end

function _M.count(kind)
  return DATA:get(kind .. ":count") or 0
end

function _M.id_by_unique(kind, value)
  return (DATA:get(kind .. ":u:" .. value))
end

local function claim(kind, rec, old)
  local field = KINDS[kind].unique
  local v = field and rec[field]
  if not nonempty(v) or (old and old[field] == v) then return true end
  local ok, err = DATA:safe_add(kind .. ":u:" .. v, rec[KINDS[kind].id_field or "id"])
  if ok then return true end
  if err == "exists" then
    return nil, 409, KINDS[kind].what .. " with " .. field .. " '" .. v .. "' already exists"
  end
  return store_error(err)
end

local function release(kind, rec)
  local field = KINDS[kind].unique
  if field and nonempty(rec[field]) then DATA:delete(kind .. ":u:" .. rec[field]) end
end

-- Stores a new record: assigns id and sequence, claims the unique value.
-- Returns the record, or nil, status, message.
function _M.insert(kind, rec)
  local seq, err = DATA:incr(kind .. ":n", 1, 0)
  if not seq then return store_error(err) end
  local idf = KINDS[kind].id_field or "id"
  rec[idf] = make_id(kind, seq)
  local ok, status, msg = claim(kind, rec)
  if not ok then return nil, status, msg end
  ok, err = DATA:safe_set(kind .. ":" .. rec[idf], encode(rec), 0, seq)
  if ok then ok, err = DATA:safe_set(kind .. ":s:" .. seq, rec[idf]) end
  if not ok then return store_error(err) end
  DATA:incr(kind .. ":count", 1, 0)
  return rec
end
local insert = _M.insert

-- Replaces a record (same id and sequence), moving the unique value's index.
function _M.replace(kind, old, rec)
  local id = rec[KINDS[kind].id_field or "id"]
  local _, seq = DATA:get(kind .. ":" .. id)
  local ok, status, msg = claim(kind, rec, old)
  if not ok then return nil, status, msg end
  local field = KINDS[kind].unique
  if field and old[field] ~= rec[field] then release(kind, old) end
  local serr
  ok, serr = DATA:safe_set(kind .. ":" .. id, encode(rec), 0, seq or 0)
  if not ok then return store_error(serr) end
  return rec
end
local replace = _M.replace

function _M.remove(kind, id)
  local s, seq = DATA:get(kind .. ":" .. id)
  if not s then return false end
  DATA:delete(kind .. ":" .. id)
  if seq then DATA:delete(kind .. ":s:" .. seq) end
  release(kind, json.decode(s))
  DATA:incr(kind .. ":count", -1, 0)
  return true
end

-- The fields of a request body, bare or wrapped as {<what> = {…}}.
local function unwrap(kind, body)
  local inner = type(body) == "table" and body[KINDS[kind].what]
  if type(inner) == "table" then return inner end
  if type(body) ~= "table" then return nil end
  return body
end

-- Copies the kind's fields from `src` into `rec`; a JSON null resets a field to
-- its default. nil, 400, msg on a wrong type or an empty required field.
local function assign(kind, rec, src, creating)
  local k = KINDS[kind]
  for _, f in ipairs(k.fields or {}) do
    local name, want, default = f[1], f[2], f[3]
    local v = src[name]
    if (creating or not (k.fixed and k.fixed[name])) and v ~= nil then
      if v == null then
        v = copy(default) or (want == "table" and {} or "")
      elseif type(v) ~= want then
        return nil, 400, name .. " must be a " .. (want == "table" and "object" or want)
      end
      rec[name] = v
    elseif creating and default ~= nil then
      rec[name] = copy(default)
    end
  end
  for _, name in ipairs(k.required or {}) do
    if not nonempty(rec[name]) then return nil, 400, name .. " is required" end
  end
  return rec
end

-- A new record of `kind` from a request body; `extra` (optional) is merged in
-- first (parent ids, computed fields). Timestamps: create_time / update_time.
function _M.create(kind, body, now, extra)
  local src = unwrap(kind, body)
  if not src then return nil, 400, "invalid request body" end
  local ts = http.rfc3339(now)
  local rec = KINDS[kind].no_times and {} or { create_time = ts, update_time = ts }
  for key, v in pairs(extra or {}) do rec[key] = v end
  local ok, status, msg = assign(kind, rec, src, true)
  if not ok then return nil, status, msg end
  return insert(kind, rec)
end

-- Applies a request body to the stored record `id`; `hook(rec, fields)` may
-- change more (returns nil, status, msg to refuse).
function _M.update(kind, id, body, now, hook)
  local old = _M.get(kind, id)
  if not old then return nil, 404, KINDS[kind].what .. " not found" end
  local src = unwrap(kind, body)
  if not src then return nil, 400, "invalid request body" end
  local rec = copy(old)
  local ok, status, msg = assign(kind, rec, src, false)
  if ok and hook then ok, status, msg = hook(rec, src) end
  if not ok then return nil, status, msg end
  if rec.update_time then rec.update_time = http.rfc3339(now) end
  return replace(kind, old, rec)
end

---------------------------------------------------------------------------
-- Organizations and users: the extras on top of the generic records
---------------------------------------------------------------------------

function _M.create_org(body, now)
  return _M.create("org", body, now, {
    settings = { features = { { name = "sso", enabled = false }, { name = "dir_sync", enabled = false } } },
  })
end

local PROFILE_FIELDS = {
  "given_name", "family_name", "name", "locale", "phone_number", "picture",
  "metadata", "custom_attributes", "groups", "preferred_username", "gender",
}

local function merge_profile(profile, p)
  if type(p) == "table" then
    for _, k in ipairs(PROFILE_FIELDS) do
      if p[k] ~= nil and p[k] ~= null then profile[k] = p[k] end
    end
  end
  return profile
end

local function role_refs(roles)
  local out = {}
  for _, r in ipairs(type(roles) == "table" and roles or {}) do
    if type(r) == "table" and nonempty(r.name) then
      local stored = _M.get("role", _M.id_by_unique("role", r.name) or "")
      out[#out + 1] = { name = r.name, id = stored and stored.id or "",
                        display_name = stored and stored.display_name or r.display_name or r.name }
    end
  end
  return out
end

local function membership(org_id, m, now)
  m = type(m) == "table" and m or {}
  return {
    organization_id = org_id,
    membership_status = "ACTIVE",
    join_time = http.rfc3339(now),
    metadata = type(m.metadata) == "table" and m.metadata or nil,
    roles = type(m.roles) == "table" and role_refs(m.roles) or nil,
    inviter_email = nonempty(m.inviter_email) and m.inviter_email or nil,
  }
end

-- body: {"user": {email, external_id, user_profile, metadata, membership}} or
-- the user fields at the top level (as in the OpenAPI description).
function _M.create_user(org_id, body, now)
  if not DATA:get("org:" .. org_id) then return nil, 404, "organization not found" end
  local u = unwrap("usr", body) or {}
  local rec, status, msg = _M.create("usr", body, now, { memberships = { membership(org_id, u.membership, now) } })
  if not rec then return nil, status, msg end
  -- the profile id derives from the user id: store again with it
  rec.user_profile = merge_profile({ id = "usp_" .. rec.id:sub(5), given_name = "", family_name = "",
    name = "", email_verified = false, metadata = {}, custom_attributes = {} }, u.user_profile)
  local _, seq = DATA:get("usr:" .. rec.id)
  DATA:safe_set("usr:" .. rec.id, encode(rec), 0, seq or 0)
  return rec
end

function _M.update_user(id, body, now)
  return _M.update("usr", id, body, now, function(rec, u)
    if type(u.user_profile) == "table" then
      rec.user_profile = type(rec.user_profile) == "table" and rec.user_profile or {}
      for _, k in ipairs(PROFILE_FIELDS) do
        if u.user_profile[k] ~= nil then rec.user_profile[k] = u.user_profile[k] end
      end
    end
    return rec
  end)
end

-- Memberships live in the user record. op: "create" | "update" | "delete".
function _M.membership(op, org_id, user_id, body, now)
  local user = _M.get("usr", user_id)
  if not user then return nil, 404, "user not found" end
  if not DATA:get("org:" .. org_id) then return nil, 404, "organization not found" end
  local ms, at_i = user.memberships or {}, nil
  for i, m in ipairs(ms) do
    if m.organization_id == org_id then at_i = i end
  end
  body = type(body) == "table" and body or {}
  if op == "create" then
    if at_i then return nil, 409, "user is already a member of the organization" end
    ms[#ms + 1] = membership(org_id, body, now)
  elseif not at_i then
    return nil, 404, "membership not found"
  elseif op == "delete" then
    table.remove(ms, at_i)
  else
    if type(body.metadata) == "table" then ms[at_i].metadata = body.metadata end
    if type(body.roles) == "table" then ms[at_i].roles = role_refs(body.roles) end
  end
  user.memberships = ms
  user.update_time = http.rfc3339(now)
  return replace("usr", user, user)
end

---------------------------------------------------------------------------
-- Roles and permissions
---------------------------------------------------------------------------

function _M.create_role(body, now)
  local rec, status, msg = _M.create("role", body, now, {
    default_creator = false, default_member = false, dependent_roles_count = 0, is_org_role = false,
    permissions = {},
  })
  local perms = (unwrap("role", body) or {}).permissions
  if rec and type(perms) == "table" and #perms > 0 then
    return _M.add_role_permissions(rec.id, perms, now)
  end
  return rec, status, msg
end

-- Appends references to the named (existing) permissions to role.permissions.
function _M.role_permission_refs(role, names, now)
  if type(names) ~= "table" then return nil, 400, "permission_names must be a list" end
  local has = {}
  for _, p in ipairs(role.permissions) do has[p.name] = true end
  for _, name in ipairs(names) do
    local perm = type(name) == "string" and _M.get("perm", _M.id_by_unique("perm", name) or "")
    if not perm then return nil, 404, "permission '" .. tostring(name) .. "' not found" end
    if not has[name] then
      has[name] = true
      role.permissions[#role.permissions + 1] = { id = perm.id, name = perm.name,
        description = perm.description, role_name = role.name, create_time = http.rfc3339(now),
        update_time = http.rfc3339(now) }
    end
  end
  return role
end

function _M.add_role_permissions(role_id, names, now)
  local role = _M.get("role", role_id)
  if not role then return nil, 404, "role not found" end
  local ok, status, msg = _M.role_permission_refs(role, names, now)
  if not ok then return nil, status, msg end
  return replace("role", role, role)
end

function _M.remove_role_permission(role_id, name)
  local role = _M.get("role", role_id)
  if not role then return nil, 404, "role not found" end
  for i, p in ipairs(role.permissions) do
    if p.name == name then
      table.remove(role.permissions, i)
      return replace("role", role, role)
    end
  end
  return nil, 404, "permission '" .. name .. "' is not in the role"
end

---------------------------------------------------------------------------
-- Seeding (admin API): records that the public API cannot create
---------------------------------------------------------------------------

-- Seeded organizations are a bit richer so that one answers ~600 bytes.
function _M.seed_orgs(n, now)
  local ids, ts = {}, http.rfc3339(now)
  for i = 1, n do
    local tag = str_format("%06d", (DATA:get("org:n") or 0) + 1)
    local rec, status, msg = insert("org", {
      display_name = "Seeded Organization " .. tag,
      external_id = "seed-org-" .. tag .. "-" .. tostring(id_prefix()),
      region_code = "US",
      slug = "seeded-organization-" .. tag,
      logo_url = "https://assets.example.com/logos/seeded-organization-" .. tag .. ".png",
      metadata = { plan = "enterprise", industry = "software", seeded = "true", index = tostring(i) },
      settings = { features = {
        { name = "sso", enabled = true }, { name = "dir_sync", enabled = false },
        { name = "domain_verification", enabled = false }, { name = "session_policy", enabled = false },
      } },
      create_time = ts,
      update_time = ts,
    })
    if not rec then return nil, status, msg end
    ids[#ids + 1] = rec.id
  end
  return ids
end

-- One record per entry, `parents` taken round-robin; make(parent, i, tag, ts).
local function seed(kind, n, parents, now, make)
  local ids, ts = {}, http.rfc3339(now)
  for i = 1, n do
    local tag = str_format("%06d", (DATA:get(kind .. ":n") or 0) + 1)
    local rec, status, msg = make(parents[((i - 1) % #parents) + 1], i, tag, ts)
    if type(rec) == "table" and not rec.id and not rec.session_id then
      rec, status, msg = insert(kind, rec)
    end
    if not rec then return nil, status, msg end
    ids[#ids + 1] = rec.id or rec.session_id
  end
  return ids
end

function _M.seed_users(n, org_ids, now)
  return seed("usr", n, org_ids, now, function(org_id, _, tag)
    return _M.create_user(org_id, {
      email = "user-" .. tag .. "@seeded.example.com",
      external_id = "seed-usr-" .. tag .. "-" .. tostring(id_prefix()),
      user_profile = { given_name = "User", family_name = tag, name = "User " .. tag },
    }, now)
  end)
end

local PROVIDERS = { { "OKTA", "SAML" }, { "MICROSOFT_AD", "OIDC" }, { "GOOGLE", "OIDC" } }

function _M.seed_connections(n, org_ids, now)
  return seed("conn", n, org_ids, now, function(org_id, _, tag)
    local p = PROVIDERS[(tonumber(tag) - 1) % #PROVIDERS + 1]
    return { organization_id = org_id, provider = p[1],
             type = p[2], status = "COMPLETED", enabled = true, debug_enabled = false, key_id = "",
             provider_key = p[1]:lower(), configuration_type = "MANUAL", domains = {},
             attribute_mapping = { email = "email", given_name = "first_name", family_name = "last_name" } }
  end)
end

function _M.seed_sessions(n, user_ids, now)
  return seed("ses", n, user_ids, now, function(user_id, i, _, ts)
    local user = _M.get("usr", user_id) or {}
    local org_id = user.memberships and user.memberships[1] and user.memberships[1].organization_id or ""
    return { user_id = user_id, organization_id = org_id, status = "ACTIVE",
             authenticated_organizations = { org_id }, authenticated_clients = {},
             created_at = ts, updated_at = ts, last_active_at = ts,
             idle_expires_at = http.rfc3339(now + 1800), absolute_expires_at = http.rfc3339(now + 86400),
             device = { browser = "Firefox", browser_version = "128.0", device_type = "desktop",
                        os = "Linux", os_version = "6.1", ip = "203.0.113." .. tostring(i % 250 + 1),
                        user_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                        location = { city = "Berlin", region = "DE", region_subdivision = "BE",
                                     latitude = "52.52", longitude = "13.40" } } }
  end)
end

---------------------------------------------------------------------------

function _M.flush()
  DATA:flush_all()
  DATA:flush_expired(0)
end

return _M
