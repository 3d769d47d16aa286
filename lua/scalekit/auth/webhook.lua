--- Webhook (and interceptor) request verification, Standard Webhooks scheme.
--
-- Scalekit signs each request with the headers `webhook-id`, `webhook-timestamp` and
-- `webhook-signature`; the signature is base64(HMAC-SHA256(secret, id "." timestamp
-- "." body)) where `secret` is the base64 part of `whsec_<base64>`, sent as a
-- space-separated list of `v1,<signature>` entries (several during a key rotation).
--
-- Failures are `nil, err`: kind "auth" with `error_code` one of
-- webhook_missing_header, webhook_bad_timestamp, webhook_timestamp_out_of_tolerance,
-- webhook_bad_secret, webhook_bad_signature; kind "decode" when the signature is good
-- but the body is not a JSON object. Secrets, signatures and bodies never appear in
-- error messages.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local misuse = errors.misuse
local json = require "scalekit.json"

local type = type
local pairs = pairs
local tostring = tostring
local tonumber = tonumber
local os_time = os.time
local str_lower = string.lower
local str_find = string.find
local str_sub = string.sub
local str_gmatch = string.gmatch
local b64decode = core.b64decode
local b64encode = core.b64encode
local hmac_sha256 = core.hmac_sha256
local constant_eq = core.constant_eq

local _M = {}

--- Default accepted distance between `webhook-timestamp` and now, in seconds.
_M.DEFAULT_TOLERANCE = 300

local SECRET_PREFIX = "whsec_"

-- the header families of each kind of request, first preferred
local WEBHOOK = { "webhook" }
local INTERCEPTOR = { "interceptor", "webhook" }

local VERIFY_OPTS = { tolerance = true, now = true }

local function fail(code, message)
  return nil, errors.new("auth", message, { error_code = code })
end

-- The one value of header `name` (lower case) in `headers`, whose keys may be in
-- any case and whose values may be strings or lists of strings (as
-- ngx.req.get_headers() gives them). Returns the value, or nil and why.
local function header_value(headers, name)
  local found
  for k, v in pairs(headers) do
    if type(k) == "string" and str_lower(k) == name then
      local values = v
      if type(v) ~= "table" then values = { v } end
      for i = 1, #values do
        local s = values[i]
        if type(s) ~= "string" then
          return nil, "header " .. name .. " is not a string"
        end
        if found == nil then
          found = s
        elseif found ~= s then
          return nil, "header " .. name .. " is given several times with different values"
        end
      end
    end
  end
  if found == nil or found == "" then
    return nil, "missing header " .. name
  end
  return found
end

local function check_args(raw_body, headers, secret, opts)
  if type(raw_body) ~= "string" then
    misuse("webhook: raw_body must be a string, got %s", type(raw_body))
  end
  if type(headers) ~= "table" then
    misuse("webhook: headers must be a table, got %s", type(headers))
  end
  if type(secret) ~= "string" then
    misuse("webhook: secret must be a string, got %s", type(secret))
  end
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    misuse("webhook: opts must be a table")
  end
  for k in pairs(opts) do
    if not VERIFY_OPTS[k] then
      misuse("webhook: unknown option %s", tostring(k))
    end
  end
  local tol = opts.tolerance
  if tol ~= nil and tol ~= false and (type(tol) ~= "number" or tol ~= tol or tol < 0) then
    misuse("webhook: opts.tolerance must be a non-negative number or false")
  end
  if opts.now ~= nil and not json.finite(opts.now) then
    -- NaN would make every comparison false: the timestamp check would pass
    misuse("webhook: opts.now must be a finite number")
  end
  return opts
end

-- The header family of a request: the first of `prefixes` whose `-id` header is
-- there (interceptor calls carry interceptor-*, older ones webhook-*).
local function pick_prefix(headers, prefixes)
  for i = 1, #prefixes do
    if header_value(headers, prefixes[i] .. "-id") then return prefixes[i] end
  end
  return prefixes[1]
end

local function verify(raw_body, headers, secret, opts, prefixes)
  opts = check_args(raw_body, headers, secret, opts)
  local prefix = pick_prefix(headers, prefixes)

  local id, why = header_value(headers, prefix .. "-id")
  if not id then return fail("webhook_missing_header", why) end
  local timestamp
  timestamp, why = header_value(headers, prefix .. "-timestamp")
  if not timestamp then return fail("webhook_missing_header", why) end
  local signatures
  signatures, why = header_value(headers, prefix .. "-signature")
  if not signatures then return fail("webhook_missing_header", why) end

  -- Secret: optional `whsec_` prefix, then standard base64 of the key bytes.
  if str_sub(secret, 1, #SECRET_PREFIX) == SECRET_PREFIX then
    secret = str_sub(secret, #SECRET_PREFIX + 1)
  end
  local key = b64decode(secret)
  if not key or key == "" then
    return fail("webhook_bad_secret", "webhook secret is not valid base64")
  end

  -- Timestamp: integer seconds since the epoch (at most 15 digits, exact in a double).
  if not str_find(timestamp, "^%d+$") or #timestamp > 15 then
    return fail("webhook_bad_timestamp", "webhook-timestamp is not an integer")
  end
  local ts = tonumber(timestamp)
  local tolerance = opts.tolerance
  if tolerance == nil then tolerance = _M.DEFAULT_TOLERANCE end
  if tolerance and tolerance > 0 then
    local now = opts.now or os_time()
    if ts < now - tolerance or ts > now + tolerance then
      return fail("webhook_timestamp_out_of_tolerance",
                  "webhook-timestamp is more than " .. tolerance .. " s away from now")
    end
  end

  local expected = b64encode(hmac_sha256(key, id .. "." .. timestamp .. "." .. raw_body))
  local matched = false
  for entry in str_gmatch(signatures, "%S+") do
    local comma = str_find(entry, ",", 1, true)
    if comma and str_sub(entry, 1, comma - 1) == "v1"
      and constant_eq(str_sub(entry, comma + 1), expected)
    then
      matched = true
    end
  end
  if not matched then
    return fail("webhook_bad_signature", "no webhook-signature matches")
  end

  local event = str_find(raw_body, "^[ \t\r\n]*{") and json.decode(raw_body)
  if type(event) ~= "table" then
    return nil, errors.new("decode", "webhook body is not a JSON object")
  end
  return event
end

--- Verify a webhook request and decode its JSON body.
---@param raw_body string the request body exactly as received
---@param headers table request headers, any key case, string or list-of-strings values
---@param secret string the endpoint's signing secret, `whsec_<base64>` (prefix optional)
---@param opts { tolerance: (number|false)?, now: number? }? tolerance: seconds (default 300; false/0: no check)
---@return table? event the decoded JSON body
---@return scalekit.Error? err
function _M.verify(raw_body, headers, secret, opts)
  return verify(raw_body, headers, secret, opts, WEBHOOK)
end

--- Verify a request of a Scalekit interceptor and decode its JSON payload.
---
--- Scalekit signs interceptor calls like webhooks (same HMAC over id.timestamp.body,
--- same `whsec_` secret, same tolerance) under its own headers: `interceptor-id`,
--- `interceptor-timestamp`, `interceptor-signature`. Requests that carry the
--- `webhook-*` names instead are accepted too.
---@param raw_body string the request body exactly as received
---@param headers table request headers, any key case, string or list-of-strings values
---@param secret string the interceptor's signing secret, `whsec_<base64>` (prefix optional)
---@param opts { tolerance: (number|false)?, now: number? }?
---@return table? payload the decoded JSON body
---@return scalekit.Error? err
function _M.verify_interceptor_payload(raw_body, headers, secret, opts)
  return verify(raw_body, headers, secret, opts, INTERCEPTOR)
end

local DECISIONS = { ALLOW = true, DENY = true }

--- The JSON answer an interceptor endpoint returns to Scalekit:
--- `{"decision": "ALLOW"|"DENY", "error": {"message": …}?, "response": {…}?}`.
---@param decision "ALLOW"|"DENY"
---@param opts {message: string?, response: table?}?
---@return string json
function _M.interceptor_response(decision, opts)
  if not DECISIONS[decision] then misuse("interceptor_response: decision must be \"ALLOW\" or \"DENY\"") end
  if opts ~= nil and type(opts) ~= "table" then misuse("interceptor_response: opts must be a table") end
  opts = opts or {}
  if opts.message ~= nil and type(opts.message) ~= "string" then
    misuse("interceptor_response: opts.message must be a string")
  end
  if opts.response ~= nil and type(opts.response) ~= "table" then
    misuse("interceptor_response: opts.response must be a table")
  end
  local doc = { decision = decision, response = opts.response }
  if opts.message then doc.error = { message = opts.message } end
  local text, err = json.encode(doc)
  if not text then misuse("interceptor_response: %s", tostring(err)) end
  return text
end

return _M
