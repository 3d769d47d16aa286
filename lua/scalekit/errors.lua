--- Structured errors: the one place where scalekit error values are built, where
--- retrying is decided, and where misuse is raised.
--
-- Every I/O failure of the library is returned as `nil, err` where `err` is a table
-- made here. Messages never quote request headers, bodies, tokens or secrets: only
-- what the server said in its error JSON and what the transport reported.
--
-- Misuse (a bug in the calling code: a wrong type, an unknown option) raises a
-- string through `misuse`, positioned at the caller's line, never at ours.
local _M = {}

local setmetatable = setmetatable
local getmetatable = getmetatable
local pairs = pairs
local type = type
local tostring = tostring
local tonumber = tonumber
local concat = table.concat
local format = string.format
local find = string.find
local getinfo = debug.getinfo

local json = require "scalekit.json"
local null = json.null

---@alias scalekit.ErrorKind "http"|"timeout"|"network"|"tls"|"decode"|"auth"|"config"

---@class scalekit.Error
---@field kind scalekit.ErrorKind what failed
---@field status integer? HTTP status, when the server answered
---@field code integer? Scalekit's numeric (gRPC) code from the error body
---@field error_code string? Scalekit's symbolic code (`UNAUTHENTICATED`, …) or ours (`token_expired`, …)
---@field message string human-readable description
---@field details table? the `details` array of the error body
---@field request_id string? the `x-request-id` answered by the server
---@field retryable boolean whether the same call may succeed if tried again
---@field sent boolean? transport errors: false when the request surely never left
---@field retry_after number? seconds the server asked us to wait
---@field operation string? the operationId or endpoint being called
local Error = {}
Error.__index = Error

local KINDS = { http = true, timeout = true, network = true, tls = true, decode = true, auth = true,
                config = true }

function Error.__tostring(e)
  local parts = { "scalekit: ", e.kind, " error" }
  if e.operation then parts[#parts + 1] = " in " .. e.operation end
  if e.status then parts[#parts + 1] = " (HTTP " .. tostring(e.status) .. ")" end
  parts[#parts + 1] = ": "
  parts[#parts + 1] = tostring(e.message)
  if e.error_code then parts[#parts + 1] = " [" .. tostring(e.error_code) .. "]" end
  if e.request_id then parts[#parts + 1] = " request_id=" .. tostring(e.request_id) end
  return concat(parts)
end

function Error.__concat(a, b)
  return tostring(a) .. tostring(b)
end

--- Make an error value.
---@param kind scalekit.ErrorKind
---@param message string
---@param fields table? any of the other fields of scalekit.Error
---@return scalekit.Error
function _M.new(kind, message, fields)
  if not KINDS[kind] then
    _M.misuse("errors.new: unknown error kind %s", tostring(kind))
  end
  local e = {}
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  e.kind = kind
  e.message = message
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

--- True when `v` is a scalekit error (of the given kind, when one is given).
---@param v any
---@param kind scalekit.ErrorKind?
---@return boolean
function _M.is(v, kind)
  if type(v) ~= "table" or getmetatable(v) ~= Error then return false end
  return kind == nil or v.kind == kind
end

_M.Error = Error

-- Retrying, decided here only. RETRY[status]: "auto" when the session retries it
-- (with backoff; for a write only on 429, which says the request was not processed),
-- "caller" when trying again may help but is left to the caller: a 500 after a write
-- says nothing about whether the write happened.
local RETRY = { [429] = "auto", [502] = "auto", [503] = "auto", [504] = "auto", [500] = "caller" }
-- Methods that may be sent twice without changing the outcome (RFC 9110 9.2.2).
local IDEMPOTENT = { GET = true, PUT = true, DELETE = true, HEAD = true }

--- Whether the session sends `method` again after `err`: retryable HTTP answers
--- the server asks us to repeat, and network errors, both only when a repeat cannot
--- do a write twice (an idempotent method, a 429, or a request that never left).
---@param err scalekit.Error
---@param method string
---@param idempotent boolean? overrides the method's rule (the client-credentials POST
---                           may be repeated: it creates nothing)
---@return boolean
function _M.should_retry(err, method, idempotent)
  if not err.retryable then return false end
  if idempotent == nil then idempotent = IDEMPOTENT[method] or false end
  if err.kind == "http" then
    return RETRY[err.status] == "auto" and (idempotent or err.status == 429)
  end
  return idempotent or err.sent == false
end

--- Raise a misuse error: "scalekit: <message>", positioned at the first caller
--- outside this library (whatever the depth of the library frames in between).
---@param fmt string format of the message
function _M.misuse(fmt, ...)
  local msg = "scalekit: " .. format(fmt, ...)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if not info or not find(info.source, _M.LIBRARY_DIR, 1, true) then break end
    level = level + 1
  end
  error(msg, level)
end

-- Edit distance of two short names (Levenshtein), for did-you-mean hints.
local function distance(a, b)
  local la, lb = #a, #b
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = ca == b:byte(j) and 0 or 1
      local v = prev[j] + 1
      if cur[j - 1] + 1 < v then v = cur[j - 1] + 1 end
      if prev[j - 1] + cost < v then v = prev[j - 1] + cost end
      cur[j] = v
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

--- " (did you mean 'x'?)" for the names of `candidates` (a set or a list) closest
--- to `name`, or "" when none is close (at most a third of the name's letters off).
---@param name string
---@param candidates table
---@return string
function _M.did_you_mean(name, candidates)
  if type(name) ~= "string" then return "" end
  local best, best_d = {}, math.max(2, math.floor(#name / 3))
  for k, v in pairs(candidates) do
    local c = type(k) == "string" and k or v
    if type(c) == "string" then
      local ln, lc = name:lower(), c:lower()
      local d = distance(ln, lc)
      -- a shortened name ("send_invite" for "send_invitation_email") is near too: it
      -- shares most of its first letters
      if d >= best_d and #ln >= 4 then
        local p = 0
        while p < #ln and ln:byte(p + 1) == lc:byte(p + 1) do p = p + 1 end
        if p >= 0.75 * #ln then d = 1 end
      end
      if d < best_d then best, best_d = { c }, d elseif d == best_d then best[#best + 1] = c end
    end
  end
  if #best == 0 then return "" end
  table.sort(best)
  return " (did you mean '" .. concat(best, "' or '", 1, math.min(#best, 3)) .. "'?)"
end

-- "@…/lua/scalekit/": frames from files under it belong to the library.
_M.LIBRARY_DIR = (getinfo(1, "S").source:match("^(@.*[/\\])[^/\\]*$") or "@scalekit/")

local function field(t, k)
  local v = t[k]
  if v == null then return nil end
  return v
end

--- Error for a non-2xx answer, filled from Scalekit's error JSON when there is one:
--- `{"code": 16, "message": "…", "details": [{"error_code": "UNAUTHENTICATED"}]}`, or
--- the OAuth form `{"error": "invalid_client", "error_description": "…"}`.
---@param status integer
---@param body string?
---@param meta table? {request_id=, retry_after=, operation=, kind=}
---@return scalekit.Error
function _M.from_response(status, body, meta)
  meta = meta or {}
  local fields = {
    status = json.integer(status) or status,
    request_id = meta.request_id,
    retry_after = meta.retry_after,
    operation = meta.operation,
    retryable = RETRY[status] ~= nil,
  }
  local message
  local doc = body and body ~= "" and json.decode(body)
  if type(doc) == "table" then
    fields.code = json.integer(field(doc, "code"))
    local msg = field(doc, "message")
    if type(msg) == "string" then message = msg end
    local details = field(doc, "details")
    if type(details) == "table" then
      fields.details = details
      for i = 1, #details do
        local d = details[i]
        if type(d) == "table" and type(d.error_code) == "string" then
          fields.error_code = d.error_code
          break
        end
      end
    end
    local oauth = field(doc, "error")
    if type(oauth) == "string" then
      fields.error_code = fields.error_code or oauth
      local desc = field(doc, "error_description")
      message = message or (type(desc) == "string" and desc) or oauth
    end
  end
  if not message then
    message = "HTTP " .. tostring(status) .. (doc == nil and body and body ~= "" and " (non-JSON body)" or "")
  end
  return _M.new(meta.kind or "http", message, fields)
end

--- Error for a failed attempt at the transport level (one shape for both transports).
---@param kind scalekit.ErrorKind "network"|"timeout"|"tls"
---@param message string
---@param sent boolean false when the request surely never left
---@param permanent boolean true when the same attempt would fail the same way
---@return scalekit.Error
function _M.from_transport(kind, message, sent, permanent)
  return _M.new(kind, message, {
    sent = sent and true or false,
    retryable = not permanent and (kind == "network" or kind == "timeout"),
  })
end

--- An error of the token endpoint: a 4xx other than 429 (bad client, bad grant)
--- is a refusal of the credentials, kind "auth"; the rest keeps its kind.
---@param err scalekit.Error
---@return scalekit.Error err the same table
function _M.token_endpoint(err)
  if err.kind == "http" and err.status and err.status < 500 and err.status ~= 429 then
    err.kind = "auth"
  end
  return err
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Parse a Retry-After header: delta-seconds or an HTTP-date. Returns seconds or nil.
---@param v string?
---@param now number? epoch seconds
---@return number|nil
function _M.parse_retry_after(v, now)
  if not v then return nil end
  local n = tonumber(v)
  if n then
    if n < 0 then return nil end
    return n
  end
  -- IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  local d, mon, y, hh, mm, ss = v:match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then return nil end
  local m = MONTHS[mon]
  if not m then return nil end
  -- days from civil (Howard Hinnant), avoiding os.time's local-time interpretation
  y = tonumber(y)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) - (y >= 0 and y or y - 399) % 400
  era = era / 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2 - (153 * mp + 2) % 5) / 5 + tonumber(d) - 1
  local doe = yoe * 365 + (yoe - yoe % 4) / 4 - (yoe - yoe % 100) / 100 + doy
  local days = era * 146097 + doe - 719468
  local at = days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
  local delta = at - (now or os.time())
  return delta > 0 and delta or 0
end

return _M
