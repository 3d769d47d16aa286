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
local cjson = require("cjson.safe").new()

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
  if opts.now ~= nil and type(opts.now) ~= "number" then
    misuse("webhook: opts.now must be a number")
  end
  return opts
end

local function verify(raw_body, headers, secret, opts)
  opts = check_args(raw_body, headers, secret, opts)

  local id, why = header_value(headers, "webhook-id")
  if not id then return fail("webhook_missing_header", why) end
  local timestamp
  timestamp, why = header_value(headers, "webhook-timestamp")
  if not timestamp then return fail("webhook_missing_header", why) end
  local signatures
  signatures, why = header_value(headers, "webhook-signature")
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

  local event = str_find(raw_body, "^[ \t\r\n]*{") and cjson.decode(raw_body)
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
  return verify(raw_body, headers, secret, opts)
end

--- Verify a request of a Scalekit interceptor and decode its JSON payload.
---
--- Scalekit signs interceptor requests exactly like webhooks (same three headers,
--- same `whsec_` secret scheme, same HMAC and tolerance; the official SDKs share one
--- routine for both), so this is the same verification under its own name.
---@param raw_body string the request body exactly as received
---@param headers table request headers, any key case, string or list-of-strings values
---@param secret string the interceptor's signing secret, `whsec_<base64>` (prefix optional)
---@param opts { tolerance: (number|false)?, now: number? }?
---@return table? payload the decoded JSON body
---@return scalekit.Error? err
function _M.verify_interceptor_payload(raw_body, headers, secret, opts)
  return verify(raw_body, headers, secret, opts)
end

return _M
