-- luacheck: globals ngx
-- Fake Scalekit: organizations and users in a lua_shared_dict.
--
-- Layout in ngx.shared.skfake_data, for kind "org" and "usr":
--   <kind>:<id>      record as a JSON string (flags = its sequence number)
--   <kind>:s:<seq>   id of the record created as number <seq> (1, 2, …)
--   <kind>:n         last sequence number handed out
--   <kind>:count     live records
--   <kind>:ext:<external_id>  id (unique external ids)
-- Lists walk the sequence numbers, so a page costs O(page_size) dict reads and
-- the records are never decoded unless a filter needs it. Page tokens are
-- base64("pt1:<list>:<seq>") cursors; deleted records just leave holes.
local http = require("fake_http")

local ngx = ngx
local json = http.json
local tostring = tostring
local tonumber = tonumber
local type = type
local concat = table.concat
local str_format = string.format

local DATA = ngx.shared.skfake_data
local STATE = http.STATE

local _M = {}

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

local function store_error(err)
  return nil, 500, "fake store: " .. tostring(err)
end

local function nonempty_string(v)
  return type(v) == "string" and v ~= ""
end

---------------------------------------------------------------------------
-- Paging
---------------------------------------------------------------------------

function _M.encode_page_token(list, seq)
  return ngx.encode_base64("pt1:" .. list .. ":" .. tostring(seq))
end

-- page_size: default 10, max 100 (clamped). nil, msg on garbage.
function _M.page_size(args)
  local v = args.page_size
  if v == nil or v == "" or v == true then
    return 10
  end
  if type(v) == "table" then
    v = v[#v]
  end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) then
    return nil, "invalid page_size"
  end
  if n <= 0 then
    return 10
  end
  if n > 100 then
    return 100
  end
  return n
end

-- Returns the sequence number to start at, or nil, msg.
function _M.decode_page_token(list, token)
  if token == nil or token == "" or token == true then
    return 1
  end
  if type(token) ~= "string" then
    return nil, "invalid page token"
  end
  local raw = ngx.decode_base64(token)
  local l, seq = (raw or ""):match("^pt1:([%w_]+):(%d+)$")
  if not l or l ~= list then
    return nil, "invalid page token"
  end
  return tonumber(seq)
end

-- One page of records of `kind` from cursor `start`; `match(rec_json)` is an
-- optional filter. Answers the JSON text of the list response.
function _M.page(kind, list, key, start, size, match)
  local last = DATA:get(kind .. ":n") or 0
  local items = {}
  local seq = start

  local function get(s)
    local id = DATA:get(kind .. ":s:" .. s)
    if not id then
      return nil
    end
    local rec = DATA:get(kind .. ":" .. id)
    if rec and (not match or match(rec)) then
      return rec
    end
    return nil
  end

  while seq <= last and #items < size do
    local rec = get(seq)
    if rec then
      items[#items + 1] = rec
    end
    seq = seq + 1
  end

  local next_token = ""
  while seq <= last do
    if get(seq) then
      next_token = _M.encode_page_token(list, seq)
      break
    end
    seq = seq + 1
  end

  local prev_token = ""
  if start > 1 then
    local n, s, pstart = 0, start - 1, nil
    if s > last then
      s = last
    end
    while s >= 1 and n < size do
      if get(s) then
        n = n + 1
        pstart = s
      end
      s = s - 1
    end
    if pstart then
      prev_token = _M.encode_page_token(list, pstart)
    end
  end

  local total
  if match then
    total = 0
    for s = 1, last do
      if get(s) then
        total = total + 1
      end
    end
  else
    total = DATA:get(kind .. ":count") or 0
  end

  return '{"' .. key .. '":[' .. concat(items, ",") .. '],"next_page_token":'
    .. json.encode(next_token) .. ',"prev_page_token":' .. json.encode(prev_token)
    .. ',"total_size":' .. str_format("%d", total) .. "}"
end

---------------------------------------------------------------------------
-- Generic record helpers
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

function _M.id_by_external(kind, ext)
  return (DATA:get(kind .. ":ext:" .. ext))
end

-- Stores a new record: assigns id and sequence, claims the external id.
-- Returns the record, or nil, status, message.
local function insert(kind, rec)
  local seq, err = DATA:incr(kind .. ":n", 1, 0)
  if not seq then
    return store_error(err)
  end
  rec.id = make_id(kind, seq)
  if nonempty_string(rec.external_id) then
    local ok, aerr = DATA:safe_add(kind .. ":ext:" .. rec.external_id, rec.id)
    if not ok then
      if aerr == "exists" then
        return nil, 409, (kind == "org" and "organization" or "user")
          .. " with external_id '" .. rec.external_id .. "' already exists"
      end
      return store_error(aerr)
    end
  end
  local ok, serr = DATA:safe_set(kind .. ":" .. rec.id, json.encode(rec), 0, seq)
  if not ok then
    return store_error(serr)
  end
  ok, serr = DATA:safe_set(kind .. ":s:" .. seq, rec.id)
  if not ok then
    return store_error(serr)
  end
  DATA:incr(kind .. ":count", 1, 0)
  return rec
end

-- Replaces a record (same id and sequence), moving the external id index.
local function replace(kind, old, rec)
  local _, seq = DATA:get(kind .. ":" .. old.id)
  if nonempty_string(rec.external_id) and rec.external_id ~= old.external_id then
    local ok, aerr = DATA:safe_add(kind .. ":ext:" .. rec.external_id, rec.id)
    if not ok then
      if aerr == "exists" then
        return nil, 409, "external_id '" .. rec.external_id .. "' already exists"
      end
      return store_error(aerr)
    end
  end
  if nonempty_string(old.external_id) and rec.external_id ~= old.external_id then
    DATA:delete(kind .. ":ext:" .. old.external_id)
  end
  local ok, serr = DATA:safe_set(kind .. ":" .. rec.id, json.encode(rec), 0, seq or 0)
  if not ok then
    return store_error(serr)
  end
  return rec
end

local function remove(kind, id)
  local s, seq = DATA:get(kind .. ":" .. id)
  if not s then
    return false
  end
  local rec = json.decode(s)
  DATA:delete(kind .. ":" .. id)
  if seq then
    DATA:delete(kind .. ":s:" .. seq)
  end
  if nonempty_string(rec.external_id) then
    DATA:delete(kind .. ":ext:" .. rec.external_id)
  end
  DATA:incr(kind .. ":count", -1, 0)
  return true
end

---------------------------------------------------------------------------
-- Organizations
---------------------------------------------------------------------------

local function default_features()
  return {
    { name = "sso", enabled = false },
    { name = "dir_sync", enabled = false },
  }
end

local ORG_FIELDS = { "display_name", "external_id", "region_code", "metadata", "slug", "logo_url" }

-- body: {display_name, external_id, region_code, metadata, slug, logo_url}
-- (also accepted wrapped as {organization = {...}}).
function _M.create_org(body, now)
  local o = body
  if type(body) == "table" and type(body.organization) == "table" then
    o = body.organization
  end
  if type(o) ~= "table" or not nonempty_string(o.display_name) then
    return nil, 400, "display_name is required"
  end
  if o.external_id ~= nil and o.external_id ~= http.null and type(o.external_id) ~= "string" then
    return nil, 400, "external_id must be a string"
  end
  local ts = http.rfc3339(now)
  local rec = {
    display_name = o.display_name,
    external_id = nonempty_string(o.external_id) and o.external_id or "",
    region_code = nonempty_string(o.region_code) and o.region_code or "US",
    metadata = type(o.metadata) == "table" and o.metadata or {},
    settings = { features = default_features() },
    create_time = ts,
    update_time = ts,
  }
  if nonempty_string(o.slug) then
    rec.slug = o.slug
  end
  if nonempty_string(o.logo_url) then
    rec.logo_url = o.logo_url
  end
  return insert("org", rec)
end

-- The stored record `kind`:`id` and the update fields of `body` (bare or wrapped in
-- `{<wrapper> = {…}}`), or nil, status, message.
local function update_target(kind, id, body, wrapper, what)
  local old = _M.get(kind, id)
  if not old then
    return nil, 404, what .. " not found"
  end
  local fields = body
  if type(body) == "table" and type(body[wrapper]) == "table" then
    fields = body[wrapper]
  end
  if type(fields) ~= "table" then
    return nil, 400, "invalid request body"
  end
  return old, fields
end

function _M.update_org(id, body, now)
  local old, o, msg = update_target("org", id, body, "organization", "organization")
  if not old then
    return nil, o, msg
  end
  if o.display_name ~= nil and not nonempty_string(o.display_name) then
    return nil, 400, "display_name must be a non-empty string"
  end
  local rec = json.decode(json.encode(old))
  for _, k in ipairs(ORG_FIELDS) do
    local v = o[k]
    if v ~= nil then
      if v == http.null then
        v = (k == "metadata") and {} or ""
      end
      rec[k] = v
    end
  end
  rec.id = old.id
  rec.update_time = http.rfc3339(now)
  return replace("org", old, rec)
end

function _M.delete_org(id)
  return remove("org", id)
end

-- Seeded organizations are a bit richer so that one answers ~600 bytes.
function _M.seed_orgs(n, now)
  local first, last
  local ts = http.rfc3339(now)
  for i = 1, n do
    local seq = (DATA:get("org:n") or 0) + 1
    local tag = str_format("%06d", seq)
    local rec, status, msg = insert("org", {
      display_name = "Seeded Organization " .. tag,
      external_id = "seed-org-" .. tag .. "-" .. tostring(id_prefix()),
      region_code = "US",
      slug = "seeded-organization-" .. tag,
      logo_url = "https://assets.example.com/logos/seeded-organization-" .. tag .. ".png",
      metadata = {
        plan = "enterprise",
        industry = "software",
        seeded = "true",
        index = tostring(i),
      },
      settings = {
        features = {
          { name = "sso", enabled = true },
          { name = "dir_sync", enabled = false },
          { name = "domain_verification", enabled = false },
          { name = "session_policy", enabled = false },
        },
      },
      create_time = ts,
      update_time = ts,
    })
    if not rec then
      return nil, status, msg
    end
    first = first or rec.id
    last = rec.id
  end
  return { first = first, last = last }
end

---------------------------------------------------------------------------
-- Users
---------------------------------------------------------------------------

local PROFILE_FIELDS = {
  "given_name", "family_name", "name", "locale", "phone_number", "picture",
  "metadata", "custom_attributes", "groups", "preferred_username", "gender",
}

local function build_profile(p, id)
  local profile = {
    id = "usp_" .. id:sub(5),
    given_name = "",
    family_name = "",
    name = "",
    email_verified = false,
    metadata = {},
    custom_attributes = {},
  }
  if type(p) == "table" then
    for _, k in ipairs(PROFILE_FIELDS) do
      if p[k] ~= nil and p[k] ~= http.null then
        profile[k] = p[k]
      end
    end
  end
  return profile
end

-- body: {"user": {email, external_id, user_profile, metadata, membership}} or
-- the user fields at the top level (as in the OpenAPI description).
function _M.create_user(org_id, body, now)
  if not DATA:get("org:" .. org_id) then
    return nil, 404, "organization not found"
  end
  local u = body
  if type(body) == "table" and type(body.user) == "table" then
    u = body.user
  end
  if type(u) ~= "table" or not nonempty_string(u.email) then
    return nil, 400, "email is required"
  end
  local ts = http.rfc3339(now)
  local membership = {
    organization_id = org_id,
    membership_status = "ACTIVE",
    join_time = ts,
  }
  if type(u.membership) == "table" then
    if type(u.membership.metadata) == "table" then
      membership.metadata = u.membership.metadata
    end
    if type(u.membership.roles) == "table" and #u.membership.roles > 0 then
      membership.roles = u.membership.roles
    end
  end
  local rec = {
    email = u.email,
    external_id = nonempty_string(u.external_id) and u.external_id or "",
    metadata = type(u.metadata) == "table" and u.metadata or {},
    memberships = { membership },
    create_time = ts,
    update_time = ts,
  }
  local res, status, msg = insert("usr", rec)
  if not res then
    return nil, status, msg
  end
  -- the profile id derives from the user id: store again with it
  rec.user_profile = build_profile(u.user_profile, rec.id)
  local _, seq = DATA:get("usr:" .. rec.id)
  DATA:safe_set("usr:" .. rec.id, json.encode(rec), 0, seq or 0)
  return rec
end

function _M.update_user(id, body, now)
  local old, u, msg = update_target("usr", id, body, "user", "user")
  if not old then
    return nil, u, msg
  end
  local rec = json.decode(json.encode(old))
  if u.external_id ~= nil then
    rec.external_id = (u.external_id == http.null) and "" or tostring(u.external_id)
  end
  if type(u.metadata) == "table" then
    rec.metadata = u.metadata
  end
  if nonempty_string(u.email) then
    rec.email = u.email
  end
  if type(u.user_profile) == "table" then
    rec.user_profile = type(rec.user_profile) == "table" and rec.user_profile or {}
    for _, k in ipairs(PROFILE_FIELDS) do
      local v = u.user_profile[k]
      if v ~= nil then
        rec.user_profile[k] = v
      end
    end
  end
  rec.update_time = http.rfc3339(now)
  return replace("usr", old, rec)
end

function _M.delete_user(id)
  return remove("usr", id)
end

-- Users spread round-robin over `org_ids` (a list, may be empty).
function _M.seed_users(n, org_ids, now)
  local first, last
  for i = 1, n do
    local seq = (DATA:get("usr:n") or 0) + 1
    local tag = str_format("%06d", seq)
    local org_id = org_ids[((i - 1) % #org_ids) + 1]
    local rec, status, msg = _M.create_user(org_id, {
      email = "user-" .. tag .. "@seeded.example.com",
      external_id = "seed-usr-" .. tag .. "-" .. tostring(id_prefix()),
      user_profile = { given_name = "User", family_name = tag, name = "User " .. tag },
    }, now)
    if not rec then
      return nil, status, msg
    end
    first = first or rec.id
    last = rec.id
  end
  return { first = first, last = last }
end

-- Filters (decode only when filtering: users lists are small).
function _M.member_of(org_id)
  return function(rec)
    local u = json.decode(rec)
    for _, m in ipairs(u.memberships or {}) do
      if m.organization_id == org_id then
        return true
      end
    end
    return false
  end
end

function _M.email_contains(q)
  q = q:lower()
  return function(rec)
    local u = json.decode(rec)
    return type(u.email) == "string" and u.email:lower():find(q, 1, true) ~= nil
  end
end

---------------------------------------------------------------------------

function _M.flush()
  DATA:flush_all()
  DATA:flush_expired(0)
end

return _M
