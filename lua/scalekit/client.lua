--- The client: `sk:call`, the iterators, the token, the resources (`sk.organizations`)
--- and the auth methods, over one session built by scalekit.new.
local errors = require "scalekit.errors"
local operations = require "scalekit.operations"
local request = require "scalekit.request"
local paginate = require "scalekit.paginate"
local resources = require "scalekit.resources"
local auth = require "scalekit.auth"
local jwks = require "scalekit.auth.jwks"

local _M = {}

local type = type
local pairs = pairs
local ipairs = ipairs
local rawget = rawget
local rawset = rawset
local tostring = tostring
local setmetatable = setmetatable
local misuse = errors.misuse

local json = require "scalekit.json"
local json_encode = json.encode
local floor = math.floor
local getmetatable = getmetatable
local next = next
local encode = request.encode
local compile = request.compile

-- Operations that run a third-party tool: the longer `tool_timeout` per attempt.
local TOOL_CALLS = { ToolService_ExecuteTool = true }

---@class scalekit.Client : scalekit.Auth
---@field environment_url string
---@field client_id string
local Client = {}

-- Control characters of a configured value, escaped for tostring().
local function printable(s)
  return (s:gsub("[%c\\]", function(c) return ("\\%03d"):format(c:byte()) end))
end

local Client_mt = {
  -- methods first, then resource objects (sk.organizations, …), made on first use
  __index = function(self, k)
    local m = Client[k]
    if m ~= nil then return m end
    local r = resources.bind(self, k)
    if r then
      rawset(self, k, r)
      return r
    end
    -- private fields and non-names are simply absent; a misspelt resource or method
    -- is named, with the nearest real ones
    if type(k) ~= "string" or k:sub(1, 1) == "_" then return nil end
    local names = resources.names()
    for name in pairs(Client) do names[#names + 1] = name end
    errors.misuse("no resource or method '%s'%s", k, errors.did_you_mean(k, names))
  end,
  __tostring = function(self)
    return "scalekit.Client (" .. printable(self.environment_url) .. ", client_id="
      .. printable(self.client_id) .. (rawget(self, "_closed") and ", closed)" or ")")
  end,
}

--- A client over `session` (scalekit.session) for the validated options `cfg`.
---@param cfg table
---@param session table
---@return scalekit.Client
function _M.new(cfg, session)
  return setmetatable({
    environment_url = cfg.environment_url,
    client_id = cfg.client_id,
    _s = session,
    _jwks = jwks.new(session, cfg),
    _strict = cfg.strict,
    _plans = {},
  }, Client_mt)
end

-- path-and-query and body text of `op` (checked by request.build)
local function build(client, operation_id, op, params)
  local path, body = request.build(operation_id, op, params, rawget(client, "_strict"))
  local text
  if body ~= nil then
    text = json_encode(body)
    if not text then misuse("%s: body cannot be encoded as JSON", operation_id) end
  elseif op.body == "required" then
    text = "{}"
  end
  return path, text
end

--- The operation, path-and-query and JSON body text of one call, built and checked
--- (sk:call and sk:batch). Raises on misuse.
---@param client scalekit.Client
---@param operation_id string
---@param params table?
---@return table op entry of scalekit.operations
---@return string path
---@return string|nil body
function _M.prepare(client, operation_id, params)
  local op = operations[operation_id]
  if not op then misuse("unknown operation '%s'", tostring(operation_id)) end
  return op, build(client, operation_id, op, params)
end

local function live(self)
  if type(self) ~= "table" or getmetatable(self) ~= Client_mt then
    misuse("a client method was called with '.'; call it as sk:method(...)")
  end
  if rawget(self, "_closed") then misuse("client is closed") end
  return self._s
end

-- What sk:call needs of an operation, made on its first call by this client: the
-- operation, its method, the session's base URL joined to the path before and after
-- the id (the direct shape, request.compile), Accept-Encoding for paged lists, the
-- pass-through table of tool calls.
local function plan(self, s, operation_id)
  local op = operations[operation_id]
  if not op then misuse("unknown operation '%s'", tostring(operation_id)) end
  local c = compile(op)
  local p = {
    op = op, method = op.method, empty = op.empty, compressed = op.paging ~= nil,
    raw = TOOL_CALLS[operation_id] and { timeout = s.tool_opts.timeout, content_type = "application/json" }
      or nil,
    id_name = c.id_name, prefix = c.id_name and s.base_url .. c.prefix, suffix = c.suffix,
  }
  self._plans[operation_id] = p
  return p
end

--- Call any operation of the API by its operationId.
---@param operation_id string e.g. "OrganizationService_GetOrganization"
---@param params table? path/query params by spec name, JSON body under `body`
---@return table|nil result decoded JSON answer
---@return scalekit.Error|nil err
function Client:call(operation_id, params)
  local s = live(self)
  local p = self._plans[operation_id] or plan(self, s, operation_id)
  local url, text
  -- the direct shape: `{ [id_name] = "a non-empty string" }` and nothing else; any
  -- other params take request.build, which checks (and explains) everything
  local name = p.id_name
  if name and type(params) == "table" then
    local v = params[name]
    if type(v) == "string" and next(params) == name and next(params, name) == nil
      and v ~= "" and v ~= "." and v ~= ".." then
      url = p.prefix .. encode(v) .. p.suffix
    end
  end
  if not url then
    local path
    path, text = build(self, operation_id, p.op, params)
    url = s.base_url .. path
  end
  return s:call(p.method, url, text, operation_id, p.empty, p.compressed, p.raw)
end

--- Iterate the items of a paged list: `for org in sk:each(op, params) do … end`.
--- Raises the error table if a page fails.
---@param operation_id string
---@param params table?
---@return fun():table|nil iterator
function Client:each(operation_id, params)
  live(self)
  return paginate.each(self, operation_id, params)
end

--- Iterate the pages of a paged list: `for page in sk:pages(op, params) do … end`.
---@param operation_id string
---@param params table?
---@return fun():table|nil iterator
function Client:pages(operation_id, params)
  live(self)
  return paginate.pages(self, operation_id, params)
end

--- Collect all items of a paged list (up to opts.limit).
---@param operation_id string
---@param params table?
---@param opts {limit: integer?}?
---@return table|nil items
---@return scalekit.Error|nil err
function Client:all(operation_id, params, opts)
  live(self)
  return paginate.all(self, operation_id, params, opts)
end

--- The cached client-credentials access token, fetched when missing or about to expire.
---@return string|nil token
---@return number|scalekit.Error expires_at epoch seconds, or the error
function Client:token()
  local token, expires_at = live(self):token()
  if token then expires_at = json.integer(floor(expires_at)) or expires_at end
  return token, expires_at
end

--- Drop the cached token; the next call fetches a new one.
function Client:invalidate_token()
  live(self):invalidate_token()
end

--- Requests sent and connections opened by the transport in use:
--- `{requests = n, connects = n}` (keep-alive shows as connects staying low).
---@return {requests: integer, connects: integer}
function Client:stats()
  return live(self):stats()
end

--- Free the connections and wipe the token. Idempotent; the client is unusable after.
function Client:close()
  if rawget(self, "_closed") then return end
  self._closed = true
  self._s:close()
end

-- Methods kept in their own modules (login, token validation and webhooks in
-- scalekit/auth/, …), refused once closed. Each is a table name -> fn(client, ...).
local MIXINS = {
  auth.methods,
  require("scalekit.proxy").methods,
  require("scalekit.batch").methods,
  require("scalekit.gateway").methods,
}
for _, methods in ipairs(MIXINS) do
  for name, fn in pairs(methods) do
    Client[name] = function(self, ...)
      live(self)
      return fn(self, ...)
    end
  end
end

Client_mt.__gc = Client.close
Client_mt.__close = Client.close

return _M
