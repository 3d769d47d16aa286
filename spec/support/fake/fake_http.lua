-- luacheck: globals ngx
-- Fake Scalekit: shared plumbing for the handlers (JSON, answers in Scalekit's
-- error format, request accounting, the fault queue, bearer tokens).
-- Runs inside nginx (ngx_lua, LuaJIT). State lives in lua_shared_dicts so that
-- every worker sees the same data.
local cjson = require("cjson")

local ngx = ngx
local type = type
local pairs = pairs
local tostring = tostring
local tonumber = tonumber
local concat = table.concat
local floor = math.floor
local str_find = string.find
local str_sub = string.sub
local str_format = string.format

local _M = {}

local json = cjson.new()
json.decode_max_depth(200)
_M.json = json
_M.null = cjson.null

local STATE = ngx.shared.skfake_state
local TOKENS = ngx.shared.skfake_tokens
local CONNS = ngx.shared.skfake_conns
local CONFIG = ngx.shared.skfake_config
_M.STATE, _M.TOKENS, _M.CONNS, _M.CONFIG = STATE, TOKENS, CONNS, CONFIG

local LOG_SIZE = 100
local LOG_BODY_MAX = 1024 * 1024

-- HTTP status -> gRPC code and name, as Scalekit's gateway answers.
local GRPC = {
  [400] = { 3, "INVALID_ARGUMENT" },
  [401] = { 16, "UNAUTHENTICATED" },
  [403] = { 7, "PERMISSION_DENIED" },
  [404] = { 5, "NOT_FOUND" },
  [405] = { 12, "UNIMPLEMENTED" },
  [409] = { 6, "ALREADY_EXISTS" },
  [412] = { 9, "FAILED_PRECONDITION" },
  [429] = { 8, "RESOURCE_EXHAUSTED" },
  [499] = { 1, "CANCELLED" },
  [500] = { 13, "INTERNAL" },
  [501] = { 12, "UNIMPLEMENTED" },
  [502] = { 14, "UNAVAILABLE" },
  [503] = { 14, "UNAVAILABLE" },
  [504] = { 4, "DEADLINE_EXCEEDED" },
}

local DEFAULT_MESSAGE = {
  [400] = "invalid argument",
  [401] = "token is invalid or expired",
  [403] = "permission denied",
  [404] = "not found",
  [409] = "already exists",
  [429] = "rate limit exceeded",
  [500] = "internal error",
  [502] = "bad gateway",
  [503] = "service unavailable",
  [504] = "deadline exceeded",
}

-- Scalekit error body: {"code":16,"message":"…","details":[{"@type":…,"error_code":…}]}
function _M.error_body(status, message, error_code)
  local g = GRPC[status] or { 2, "UNKNOWN" }
  message = message or DEFAULT_MESSAGE[status] or ("HTTP " .. tostring(status))
  return '{"code":' .. g[1] .. ',"message":' .. json.encode(message)
    .. ',"details":[{"@type":"type.googleapis.com/scalekit.v1.errdetails.ErrorInfo",'
    .. '"error_code":' .. json.encode(error_code or g[2]) .. '}]}'
end

-- Sends a complete answer with a Content-Length (never chunked).
function _M.send(status, body, content_type)
  ngx.status = status
  ngx.header["Content-Type"] = content_type or "application/json"
  body = body or ""
  ngx.header["Content-Length"] = #body
  if #body > 0 then
    ngx.print(body)
  end
  return ngx.exit(status)
end

function _M.send_json(status, value)
  return _M.send(status, json.encode(value))
end

function _M.send_error(status, message, error_code)
  return _M.send(status, _M.error_body(status, message, error_code))
end

-- An OAuth 2.0 error answer (RFC 6749 5.2), as the token and OIDC endpoints give.
function _M.oauth_error(status, err, desc)
  return _M.send_json(status, { error = err, error_description = desc })
end

-- The first value of a repeated form or query argument (ngx.req.get_*_args).
function _M.first(v)
  if type(v) == "table" then
    return v[1]
  end
  return v
end

-- RFC 3339 UTC with milliseconds: 2025-03-20T13:55:46.690Z
function _M.rfc3339(t)
  t = t or ngx.now()
  local s = floor(t)
  local ms = floor((t - s) * 1000 + 0.5)
  if ms >= 1000 then
    s, ms = s + 1, 0
  end
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. str_format(".%03dZ", ms)
end

-- Request id, monotonic over the life of the server (not reset).
function _M.request_id()
  local ctx = ngx.ctx
  if not ctx.skfake_rid then
    local n = CONFIG:incr("reqid", 1, 0)
    ctx.skfake_rid = "req_" .. tostring(n)
    ngx.header["x-request-id"] = ctx.skfake_rid
    ngx.header["x-fake-worker"] = tostring(ngx.worker.pid())
  end
  return ctx.skfake_rid
end

-- Raw (undecoded) path of the request line, without the query.
function _M.raw_path()
  local uri = ngx.var.request_uri or "/"
  local q = str_find(uri, "?", 1, true)
  if q then
    return str_sub(uri, 1, q - 1)
  end
  return uri
end

-- Reads the whole request body (memory or temp file); "" when there is none.
function _M.read_body()
  local ctx = ngx.ctx
  if ctx.skfake_body then
    return ctx.skfake_body
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then
        body = f:read("*a")
        f:close()
      end
    end
  end
  ctx.skfake_body = body or ""
  return ctx.skfake_body
end

-- The request body decoded as JSON: nil when it is empty, nil and `invalid` when it
-- is not JSON.
function _M.json_body(invalid)
  local body = _M.read_body()
  if body == "" then
    return nil
  end
  local ok, v = pcall(json.decode, body)
  if ok then
    return v
  end
  return nil, invalid
end

-- Counts and logs one /oauth or /api request. kind: "api" | "oauth"
function _M.record(kind)
  local rid = _M.request_id()
  STATE:incr("stat:requests", 1, 0)
  if kind == "api" then
    STATE:incr("stat:api_requests", 1, 0)
  end
  local conn = ngx.var.connection
  if CONNS:add(conn, true) then
    STATE:incr("stat:connections", 1, 0)
  end

  local body = _M.read_body()
  local truncated = false
  if #body > LOG_BODY_MAX then
    body, truncated = str_sub(body, 1, LOG_BODY_MAX), true
  end
  local n = STATE:incr("log:n", 1, 0)
  local entry = {
    seq = n,
    request_id = rid,
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,
    path = _M.raw_path(),
    query = ngx.var.args or "",
    body = body,
    body_truncated = truncated or nil,
    headers = ngx.req.get_headers(0),
    connection = tonumber(conn),
    worker = ngx.worker.pid(),
    time = ngx.now(),
  }
  STATE:safe_set("log:" .. tostring(n % LOG_SIZE), json.encode(entry))
end

-- Last LOG_SIZE requests, oldest first, as a JSON array string.
function _M.request_log_json()
  local n = STATE:get("log:n") or 0
  local first = n - LOG_SIZE + 1
  if first < 1 then
    first = 1
  end
  local out = {}
  for i = first, n do
    local s = STATE:get("log:" .. tostring(i % LOG_SIZE))
    if s then
      out[#out + 1] = s
    end
  end
  return "[" .. concat(out, ",") .. "]"
end

---------------------------------------------------------------------------
-- Fault queue: a JSON array under STATE "faults", guarded by a small lock
-- because two workers may consume at the same time. "faults:n" is the number
-- of queued faults so that the common case (no faults) costs one dict get.
---------------------------------------------------------------------------

local function lock_faults()
  local deadline = ngx.now() + 2
  while true do
    local ok, err = STATE:add("faults:lock", true, 2)
    if ok then
      return true
    end
    if err ~= "exists" then
      return nil, err
    end
    if ngx.now() > deadline then
      return nil, "timeout"
    end
    ngx.sleep(0.001)
  end
end

local function unlock_faults()
  STATE:delete("faults:lock")
end

local function fault_matches(f, path, method)
  if f.method and type(f.method) == "string" and f.method:upper() ~= method then
    return false
  end
  local m = f.match
  if m == nil or m == _M.null or m == "" then
    return true
  end
  m = tostring(m)
  if str_sub(path, 1, #m) == m then
    return true
  end
  local ok, found = pcall(str_find, path, m)
  return ok and found ~= nil
end

function _M.add_faults(list)
  local ok, err = lock_faults()
  if not ok then
    return nil, err
  end
  local queue = json.decode(STATE:get("faults") or "[]")
  for _, f in ipairs(list) do
    local count = tonumber(f.count) or 1
    f.remaining = count
    queue[#queue + 1] = f
  end
  STATE:set("faults", #queue > 0 and json.encode(queue) or "[]")
  STATE:set("faults:n", #queue)
  unlock_faults()
  return #queue
end

function _M.clear_faults()
  local ok = lock_faults()
  STATE:set("faults", "[]")
  STATE:set("faults:n", 0)
  if ok then
    unlock_faults()
  end
end

function _M.pending_faults_json()
  return STATE:get("faults") or "[]"
end

-- Takes (consumes one use of) the first queued fault that matches.
function _M.take_fault(path, method)
  local n = STATE:get("faults:n")
  if not n or n == 0 then
    return nil
  end
  local ok = lock_faults()
  if not ok then
    return nil
  end
  local queue = json.decode(STATE:get("faults") or "[]")
  local hit
  for i = 1, #queue do
    local f = queue[i]
    if fault_matches(f, path, method) then
      hit = f
      f.remaining = (tonumber(f.remaining) or 1) - 1
      if f.remaining <= 0 then
        table.remove(queue, i)
      end
      break
    end
  end
  if hit then
    STATE:set("faults", #queue > 0 and json.encode(queue) or "[]")
    STATE:set("faults:n", #queue)
    STATE:incr("stat:faults_applied", 1, 0)
  end
  unlock_faults()
  return hit
end

local function set_fault_headers(f)
  if f.retry_after ~= nil and f.retry_after ~= _M.null then
    ngx.header["Retry-After"] = tostring(f.retry_after)
  end
  if type(f.headers) == "table" then
    for k, v in pairs(f.headers) do
      ngx.header[k] = (type(v) == "table") and v or tostring(v)
    end
  end
end

local function send_chunked(status, body, f)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  local size = tonumber(f.chunk_size) or 16
  if size < 1 then
    size = 1
  end
  local pause = tonumber(f.chunk_delay) or 0
  local i = 1
  while i <= #body do
    ngx.print(str_sub(body, i, i + size - 1))
    ngx.flush(true)
    if pause > 0 then
      ngx.sleep(pause)
    end
    i = i + size
  end
  return ngx.exit(status)
end

-- Blocks the whole worker (not just this request) for `sec` seconds.
local function block_worker(sec)
  local deadline = ngx.now() + sec
  repeat
    ngx.update_time()
  until ngx.now() >= deadline
end

-- Applies the fault, if any, for the current request. Returns normally when
-- the request must then be handled as usual; otherwise answers and exits.
-- A `chunked` fault asks the normal handler to answer in chunks: it is kept
-- in ngx.ctx.skfake_chunked.
function _M.apply_fault(path, method)
  local f = _M.take_fault(path, method)
  if not f then
    return
  end
  if f.revoke then
    _M.revoke_tokens()
  end
  set_fault_headers(f)
  local delay = tonumber(f.delay)
  if delay and delay > 0 then
    ngx.sleep(delay)
  end
  local block = tonumber(f.block)
  if block and block > 0 then
    block_worker(block)
  end
  if f.close then
    return ngx.exit(444)
  end
  local status = tonumber(f.status)
  if status then
    local body = f.body
    if type(body) == "table" then
      body = json.encode(body)
    elseif body == nil or body == _M.null then
      body = status >= 400 and _M.error_body(status, f.message, f.error_code) or "{}"
    end
    if f.chunked then
      return send_chunked(status, tostring(body), f)
    end
    return _M.send(status, tostring(body))
  end
  if f.invalid_json then
    local body = type(f.invalid_json) == "string" and f.invalid_json
      or '{"organizations": [ {"id": "org_1", "display_name": <html>oops'
    return _M.send(200, body)
  end
  if f.empty_body then
    return _M.send(200, "")
  end
  if type(f.body) == "string" then
    return _M.send(200, f.body)
  end
  if f.chunked then
    ngx.ctx.skfake_chunked = f
  end
end

-- The start of every handled request: record it (as `kind`), apply its fault.
-- Returns the raw path and the method.
function _M.begin(kind)
  _M.record(kind)
  local path, method = _M.raw_path(), ngx.req.get_method()
  _M.apply_fault(path, method)
  return path, method
end

-- Normal answers go through here so that a `chunked` fault can reshape them.
function _M.answer(status, body)
  local f = ngx.ctx.skfake_chunked
  if f then
    return send_chunked(status, body, f)
  end
  return _M.send(status, body)
end

---------------------------------------------------------------------------
-- Tokens: TOKENS["t:<token>"] = expiry (epoch seconds), flags = generation.
-- Revoking bumps the generation so every earlier token stops working.
---------------------------------------------------------------------------

local urandom

local function random_hex(nbytes)
  if not urandom then
    urandom = io.open("/dev/urandom", "rb")
  end
  local raw = urandom and urandom:read(nbytes)
  local out = {}
  if raw and #raw == nbytes then
    for i = 1, nbytes do
      out[i] = str_format("%02x", raw:byte(i))
    end
  else
    for i = 1, nbytes do
      out[i] = str_format("%02x", math.random(0, 255))
    end
  end
  return concat(out)
end
_M.random_hex = random_hex

function _M.issue_token(ttl)
  local gen = STATE:get("tokgen") or 0
  local token = "skt_" .. random_hex(24)
  local exp = ngx.now() + ttl
  local keep = floor(ttl) + 60
  if keep < 60 then
    keep = 60
  end
  TOKENS:set("t:" .. token, exp, keep, gen)
  STATE:incr("stat:tokens_issued", 1, 0)
  return token
end

function _M.revoke_tokens()
  STATE:incr("tokgen", 1, 0)
  STATE:incr("stat:revocations", 1, 0)
end

-- nil when the Authorization header carries a valid bearer token, else the
-- Scalekit message to answer with.
function _M.check_bearer()
  local h = ngx.var.http_authorization
  if not h or h == "" then
    return "Token empty"
  end
  local scheme, token = h:match("^%s*(%S+)%s*(%S*)%s*$")
  if not scheme or scheme:lower() ~= "bearer" then
    return "token is invalid or expired"
  end
  if token == "" then
    return "Token empty"
  end
  local exp, gen = TOKENS:get("t:" .. token)
  if not exp or exp <= ngx.now() or (gen or 0) ~= (STATE:get("tokgen") or 0) then
    return "token is invalid or expired"
  end
  return nil
end

return _M
