--- The request engine behind a client: the client-credentials token, retries with
--- backoff, the 401 → new token → retry-once rule, and JSON decoding.
--
-- The policy is written once, here, and drives every transport: the libcurl core in
-- plain Lua and nginx init phases, cosockets inside OpenResty request handlers. A
-- transport is any object with
--   t:request(method, url, body, content_type, bearer)
--     -> status, body, retry_after, request_id, content_type, location
--     -> nil, kind, message, sent, permanent
-- and a token store any object with get() -> token, expires_at, needs_refresh /
-- set(token, expires_in, margin) / clear([token]) / close(), optionally
-- single_flight(old_token, old_expires_at, fetch) (the C vault of scalekit.core, or
-- the shared-dict store of scalekit.ngx).
local errors = require "scalekit.errors"

local _M = {}

local type = type
local setmetatable = setmetatable
local min = math.min
local random = math.random

local json = require("cjson.safe").new()
local json_decode = json.decode
local null = json.null

-- Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2).
local IDEMPOTENT = { GET = true, PUT = true, DELETE = true }
-- Answers retried automatically; 500 is left to the caller (err.retryable is true)
-- because a 500 after a write says nothing about whether the write happened.
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }

local Session = {}
Session.__index = Session

---@param cfg table
function _M.new(cfg)
  return setmetatable(cfg, Session)
end

-- Delay before retry number `attempt` (0-based): exponential, capped, with "equal
-- jitter" so that a crowd of clients spreads out but never retries at once.
local function backoff(self, attempt)
  local d = min(self.retry_backoff_max, self.retry_backoff * 2 ^ attempt)
  return d / 2 + random() * d / 2
end
_M.backoff = backoff

-- One logical request: attempts, sleeps and (for API calls) the token dance.
-- Returns status, body, request_id, content_type on a 2xx, else nil, err.
local function perform(self, method, url, body, ctype, opname, use_token, idempotent)
  local transport = self:transport()
  local attempt, renewed = 0, false
  if idempotent == nil then idempotent = IDEMPOTENT[method] end
  while true do
    local token, err
    if use_token then
      token, err = self:token()
      if not token then return nil, err end
    end
    local status, rbody, retry_after, request_id, rctype = transport:request(method, url, body, ctype, token)
    local wait, renew
    if status == nil then
      -- transport failure: rbody = kind, retry_after = message, request_id = sent,
      -- rctype = permanent (an answer over max_body_size: the same again next time)
      err = errors.from_transport(rbody, retry_after, opname)
      if rctype then
        err.retryable = false
      else
        wait = idempotent or request_id == false
      end
    elseif status >= 200 and status < 300 then
      return status, rbody, request_id, rctype
    elseif status == 401 and use_token and not renewed then
      -- The token was revoked or expired early: forget it (only if nobody replaced
      -- it meanwhile), get a new one, and try once more. Never loops.
      renewed, renew = true, true
      self.store:clear(token)
    else
      local ra = errors.parse_retry_after(retry_after)
      err = errors.from_response(status, rbody, {
        request_id = request_id, retry_after = ra, operation = opname,
      })
      if RETRY_STATUS[status] and (idempotent or status == 429) then
        if ra and ra > self.retry_after_max then return nil, err end
        wait = ra or true
      end
    end
    -- the 401 renewal is immediate and not counted as a retry
    if not renew then
      if not wait or attempt >= self.max_retries then return nil, err end
      self.sleep(type(wait) == "number" and wait or backoff(self, attempt))
      attempt = attempt + 1
    end
  end
end

-- Fetch a new client-credentials token and put it in the store.
local function fetch_token(self)
  local status, body, request_id = perform(self, "POST", self.token_url, self.token_form(),
                                           "form", "oauth/token", false, true)
  if not status then
    local err = body
    if err.kind == "http" and err.status and err.status < 500 and err.status ~= 429 then
      err.kind = "auth"
    end
    return nil, err
  end
  local doc = json_decode(body)
  local token = type(doc) == "table" and doc.access_token
  if type(token) ~= "string" or token == "" or token:find("[%c ]") then
    return nil, errors.new("decode", "token endpoint answered without a usable access_token",
                           { status = status, request_id = request_id, operation = "oauth/token" })
  end
  local expires_in = doc.expires_in
  if expires_in == null or type(expires_in) ~= "number" or expires_in <= 0 then
    expires_in = 3600
  end
  -- refresh ahead of expiry: a minute early for day-long tokens, 10% for short ones
  local margin = min(self.token_refresh_margin, expires_in / 10)
  self.store:set(token, expires_in, margin)
  local _, expires_at = self.store:get()
  return token, expires_at
end

--- The current access token, fetched or refreshed when needed.
---@return string|nil token
---@return number|scalekit.Error expires_at_or_err
function Session:token()
  local store = self.store
  local token, expires_at, needs_refresh = store:get()
  if token and not needs_refresh then
    return token, expires_at
  end
  if store.single_flight then
    -- shared stores (OpenResty) let one caller fetch while the others wait for it
    return store:single_flight(token, expires_at, function() return fetch_token(self) end)
  end
  local new, res = fetch_token(self)
  if new then return new, res end
  if token then
    -- Refresh failed but the old token is still valid: keep serving with it.
    return token, expires_at
  end
  return nil, res
end

--- The transport for the current context: the libcurl core unless a subclass (the
--- OpenResty integration) picks cosockets.
function Session:transport()
  return self.http
end

function Session:invalidate_token()
  self.store:clear()
end

--- Send an API request (Bearer) and decode its JSON answer.
---@param method string
---@param path string path and query, starting with "/"
---@param body string|nil JSON text
---@param opname string operationId, for errors
---@return table|nil result
---@return scalekit.Error|nil err
function Session:api(method, path, body, opname)
  local status, rbody, request_id = perform(self, method, self.base_url .. path, body,
                                            "json", opname, true)
  if not status then return nil, rbody end
  if rbody == "" then return {} end
  local doc = json_decode(rbody)
  if type(doc) ~= "table" then
    -- invalid JSON, or JSON that is not an object or array (null is truthy in cjson)
    return nil, errors.new("decode", "response is not a JSON object", {
      status = status, request_id = request_id, operation = opname,
    })
  end
  return doc
end

--- Send a request to a non-API endpoint (OAuth, JWKS) without the Bearer token.
---@return table|nil result
---@return scalekit.Error|nil err
function Session:plain(method, path, body, ctype, opname)
  local status, rbody, request_id = perform(self, method, self.base_url .. path, body,
                                            ctype or "json", opname, false,
                                            method == "GET" or nil)
  if not status then return nil, rbody end
  local doc = json_decode(rbody ~= "" and rbody or "{}")
  if type(doc) ~= "table" then
    return nil, errors.new("decode", "response is not valid JSON", {
      status = status, request_id = request_id, operation = opname,
    })
  end
  return doc
end

return _M
