--- Calls through Scalekit on behalf of a connected account: `sk:proxy_request`
--- sends any HTTP request to `{environment_url}/proxy/{path}`, and Scalekit forwards
--- it to the provider API of the connection with the account's credentials (the
--- official SDKs' `actions.request`).
--
-- Bodies pass through both ways as they are: a string goes out with the content type
-- you give (default application/octet-stream), a table as JSON; the answer comes back
-- raw with its Content-Type, plus `json` when it is JSON. Each attempt may last
-- `tool_timeout` (default 60 s): providers are slower than Scalekit's API. A failure
-- that Scalekit marks as the provider's (error_code TOOL_ERROR) is never retried and
-- never renews the client's token.
local errors = require "scalekit.errors"
local json = require "scalekit.json"
local request = require "scalekit.request"

local _M = {}

local type = type
local pairs = pairs
local tostring = tostring
local concat = table.concat
local sort = table.sort
local misuse = errors.misuse
local encode = request.encode

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local KNOWN = {
  connection_name = "string", identifier = "string", method = "string", path = "string",
  query = "table", headers = "table", body = true, content_type = "string", timeout = "number",
}
-- headers the proxy call sets itself
local RESERVED = { authorization = true, host = true, ["content-length"] = true, ["content-type"] = true,
                   connection_name = true, identifier = true }

local function query_string(q)
  local keys = {}
  for k in pairs(q) do
    if type(k) ~= "string" then misuse("proxy_request: query keys must be strings") end
    keys[#keys + 1] = k
  end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    local list = type(v) == "table" and v or { v }
    for i = 1, #list do
      local x = list[i]
      local text = type(x) == "string" and x or type(x) == "number" and request.number_text(x)
        or type(x) == "boolean" and tostring(x) or nil
      if not text then misuse("proxy_request: query value of '%s' must be a string, number or boolean", k) end
      parts[#parts + 1] = encode(k) .. "=" .. encode(text)
    end
  end
  return concat(parts, "&")
end

local function header_lines(opts)
  local lines = { "connection_name: " .. opts.connection_name, "identifier: " .. opts.identifier }
  for name, value in pairs(opts.headers or {}) do
    if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+.^_`|~-]+$") then
      misuse("proxy_request: header name %s is not a token", tostring(name))
    end
    if type(value) ~= "string" or value:find("[%c]") then
      misuse("proxy_request: header %s must be a string without control characters", name)
    end
    if RESERVED[name:lower()] then
      misuse("proxy_request: header %s is set by the call itself", name)
    end
    lines[#lines + 1] = name .. ": " .. value
  end
  return lines
end

_M.methods = {}

---@class scalekit.ProxyRequest
---@field connection_name string the connection (e.g. "gmail")
---@field identifier string the connected account's identifier (e.g. the user's email)
---@field method string? GET (default), POST, PUT, PATCH or DELETE
---@field path string the provider API path, e.g. "/gmail/v1/users/me/profile"
---@field query table? query parameters (values: strings, numbers, booleans or lists)
---@field headers table? more request headers, name -> value
---@field body (string|table)? raw bytes (with content_type) or a table sent as JSON
---@field content_type string? of a string body (default application/octet-stream)
---@field timeout number? seconds per attempt (default the client's tool_timeout, 60)

--- Make an HTTP request to a provider API through Scalekit, as a connected account.
---@param opts scalekit.ProxyRequest
---@return {status: integer, body: string, content_type: string?, json: any}|nil res
---@return scalekit.Error|nil err
function _M.methods.proxy_request(client, opts)
  if type(opts) ~= "table" then misuse("proxy_request: opts must be a table") end
  for k, v in pairs(opts) do
    local want = KNOWN[k]
    if not want then misuse("proxy_request: unknown option '%s'%s", tostring(k), errors.did_you_mean(k, KNOWN)) end
    if want ~= true and type(v) ~= want then misuse("proxy_request: option '%s' must be a %s", k, want) end
  end
  for _, k in ipairs({ "connection_name", "identifier", "path" }) do
    local v = opts[k]
    if type(v) ~= "string" or not v:find("%S") or v:find("[%c]") then
      misuse("proxy_request: %s is required (a string without control characters)", k)
    end
  end
  local method = (opts.method or "GET"):upper()
  if not METHODS[method] then misuse("proxy_request: method must be GET, POST, PUT, PATCH or DELETE") end
  local path = opts.path
  if path:find("[%s#?]") then misuse("proxy_request: path must not contain spaces, '?' or '#' (use query)") end
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  local url = client.environment_url .. "/proxy" .. path
  if opts.query then
    local q = query_string(opts.query)
    if q ~= "" then url = url .. "?" .. q end
  end
  local body, ctype = opts.body, opts.content_type
  if type(body) == "table" then
    local text, err = json.encode(body)
    if not text then misuse("proxy_request: body cannot be encoded as JSON (%s)", tostring(err)) end
    body, ctype = text, ctype or "application/json"
  elseif body ~= nil and type(body) ~= "string" then
    misuse("proxy_request: body must be a string or a table")
  elseif body ~= nil then
    ctype = ctype or "application/octet-stream"
  end
  if ctype and ctype:find("[%c]") then misuse("proxy_request: content_type must not contain control characters") end
  if method == "GET" and body ~= nil then misuse("proxy_request: GET takes no body") end
  local s = client._s
  local timeout = opts.timeout or s.tool_opts.timeout
  if not (timeout > 0 and timeout <= 86400) then misuse("proxy_request: timeout must be in (0, 86400]") end
  local res, err = s:raw(method, url, body, {
    content_type = ctype, headers = header_lines(opts), timeout = timeout,
  }, "proxy_request")
  if not res then return nil, err end
  local out = { status = res.status, body = res.body, content_type = res.content_type,
                request_id = res.request_id }
  if res.content_type and res.content_type:lower():find("json", 1, true) then
    out.json = json.decode(res.body)
  end
  return out
end

return _M
