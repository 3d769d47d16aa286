--- scalekit: Lua client for the Scalekit API (B2B authentication).
--
--   local scalekit = require "scalekit"
--   local sk = assert(scalekit.new{ environment_url = …, client_id = …, client_secret = … })
--   local org, err = sk:call("OrganizationService_GetOrganization", { id = "org_1" })
--
-- See README.md for every option, the error rules and pagination.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local operations = require "scalekit.operations"
local request = require "scalekit.request"
local paginate = require "scalekit.paginate"
local session = require "scalekit.session"
local resources = require "scalekit.resources"
local auth = require "scalekit.auth"

local _M = {
  _VERSION = core.version,
  errors = errors,
  pkce = auth.pkce,                   -- verifier, challenge, "S256"
  random_string = auth.random_string, -- for state and nonce
}

local type = type
local pairs = pairs
local error = error
local rawget = rawget
local rawset = rawset
local tostring = tostring
local setmetatable = setmetatable
local getenv = os.getenv

local json = require("cjson.safe").new()
local json_encode = json.encode

---@class scalekit.Options
---@field environment_url string Scalekit environment URL (https, or http for loopback)
---@field client_id string API client id (`skc_…`)
---@field client_secret string API client secret
---@field timeout number? seconds per attempt (default 10)
---@field connect_timeout number? seconds to connect (default 3)
---@field max_retries integer? retries after the first attempt (default 3)
---@field retry_backoff number? first backoff delay in seconds (default 0.5)
---@field retry_backoff_max number? cap of one backoff delay (default 8)
---@field retry_after_max number? longest Retry-After honoured, seconds (default 60)
---@field token_refresh_margin number? refresh the token this early, seconds (default 60)
---@field scope string? scope asked for with the client-credentials grant
---@field ca_file string? PEM bundle of trusted CAs (peer and host are always verified)
---@field user_agent string? appended to the module's own User-Agent
---@field max_body_size integer? largest accepted response body in bytes (default 16 MiB)
---@field shared_dict string? OpenResty: lua_shared_dict for the token and JWKS caches
---@field keepalive_timeout number? OpenResty: idle seconds of pooled cosockets (default 60)
---@field keepalive_pool integer? OpenResty: connections kept per pool (default 16)
---@field jwks_ttl number? seconds the JWKS is cached (default 3600)
---@field jwks_refresh_interval number? least seconds between JWKS refetches for unknown kids (default 30)
local DEFAULTS = {
  timeout = 10,
  connect_timeout = 3,
  max_retries = 3,
  retry_backoff = 0.5,
  retry_backoff_max = 8,
  retry_after_max = 60,
  token_refresh_margin = 60,
  max_body_size = 16 * 1024 * 1024,
  keepalive_timeout = 60,
  keepalive_pool = 16,
  jwks_ttl = 3600,
  jwks_refresh_interval = 30,
}

local OPTION_TYPES = {
  environment_url = "string", client_id = "string", client_secret = "string",
  timeout = "number", connect_timeout = "number", max_retries = "number",
  retry_backoff = "number", retry_backoff_max = "number", retry_after_max = "number",
  token_refresh_margin = "number", scope = "string", ca_file = "string",
  user_agent = "string", max_body_size = "number",
  shared_dict = "string", keepalive_timeout = "number", keepalive_pool = "number",
  jwks_ttl = "number", jwks_refresh_interval = "number",
}
_M.DEFAULTS = DEFAULTS

-- the largest max_body_size accepted: 1 GiB (a Lua string holds the whole body)
local MAX_BODY_LIMIT = 1024 * 1024 * 1024

local function bad_option(msg)
  error("scalekit.new: " .. msg, 3)
end

local LOOPBACK = { localhost = true, ["[::1]"] = true }

-- https, or http to a loopback address; no userinfo, query or fragment; trailing
-- slashes dropped. Custom domains are just another https URL.
local function check_environment_url(url)
  local scheme, host, path = url:match("^(%a+)://([^/?#]+)(.*)$")
  if not scheme then bad_option("environment_url is not a URL") end
  scheme = scheme:lower()
  if host:find("@", 1, true) then bad_option("environment_url must not contain credentials") end
  if path:find("[?#]") then bad_option("environment_url must not have a query or fragment") end
  if path:find("[%s%c]") or host:find("[%s%c]") then
    bad_option("environment_url must not contain spaces or control characters")
  end
  local hostname = host:match("^(%[[^%]]+%])") or host:match("^([^:]+)")
  if scheme == "http" then
    local h = hostname and hostname:lower()
    if not (LOOPBACK[h] or (h and h:match("^127%.%d+%.%d+%.%d+$"))) then
      bad_option("environment_url must use https (http is allowed only for loopback hosts)")
    end
  elseif scheme ~= "https" then
    bad_option("environment_url must use https")
  end
  path = path:gsub("/+$", "")
  return scheme .. "://" .. host .. path
end

local function validate(opts)
  if type(opts) ~= "table" then bad_option("options must be a table") end
  local cfg = {}
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then bad_option("unknown option '" .. tostring(k) .. "'") end
    if type(v) ~= want then
      bad_option("option '" .. k .. "' must be a " .. want .. ", got " .. type(v))
    end
    if want == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      bad_option("option '" .. k .. "' must be a finite number")
    end
    cfg[k] = v
  end
  for k, v in pairs(DEFAULTS) do
    if cfg[k] == nil then cfg[k] = v end
  end
  for _, k in ipairs({ "environment_url", "client_id", "client_secret" }) do
    if cfg[k] == nil or cfg[k] == "" then bad_option(k .. " is required") end
  end
  for _, k in ipairs({ "timeout", "connect_timeout" }) do
    if not (cfg[k] > 0 and cfg[k] <= 86400) then bad_option(k .. " must be in (0, 86400]") end
  end
  if cfg.max_retries < 0 or cfg.max_retries % 1 ~= 0 or cfg.max_retries > 20 then
    bad_option("max_retries must be an integer in [0, 20]")
  end
  for _, k in ipairs({ "retry_backoff", "retry_backoff_max", "retry_after_max", "token_refresh_margin",
                       "jwks_ttl", "jwks_refresh_interval" }) do
    if cfg[k] < 0 then bad_option(k .. " must not be negative") end
  end
  if cfg.max_body_size < 1024 or cfg.max_body_size > MAX_BODY_LIMIT then
    bad_option("max_body_size must be between 1024 and " .. MAX_BODY_LIMIT)
  end
  if cfg.keepalive_pool < 1 or cfg.keepalive_pool % 1 ~= 0 then
    bad_option("keepalive_pool must be a positive integer")
  end
  if cfg.keepalive_timeout < 0 then bad_option("keepalive_timeout must not be negative") end
  cfg.environment_url = check_environment_url(cfg.environment_url)
  return cfg
end

local function user_agent(extra)
  local lua = _VERSION
  local jit = rawget(_G, "jit")
  if jit then lua = jit.version end
  local ua = "scalekit-lua/" .. core.version .. " (" .. lua .. "; libcurl/" .. core.curl_version() .. ")"
  if extra then
    if extra:find("[%c]") then bad_option("user_agent must not contain control characters") end
    ua = ua .. " " .. extra
  end
  return ua
end

local function in_openresty()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

---@class scalekit.Client : scalekit.Auth
---@field environment_url string
---@field client_id string
local Client = {}

local Client_mt = {
  -- methods first, then resource objects (sk.organizations, …), made on first use
  __index = function(self, k)
    local m = Client[k]
    if m ~= nil then return m end
    local r = resources.bind(self, k)
    if r then rawset(self, k, r) end
    return r
  end,
  __tostring = function(self)
    return "scalekit.Client (" .. self.environment_url .. ", client_id=" .. self.client_id
      .. (rawget(self, "_closed") and ", closed)" or ")")
  end,
}

--- Create a client. Raises on bad options (misuse); performs no I/O.
---@param opts scalekit.Options
---@return scalekit.Client|nil client
---@return scalekit.Error|nil err
function _M.new(opts)
  local cfg = validate(opts)
  local secret = cfg.client_secret
  local form = request.form({
    grant_type = "client_credentials",
    client_id = cfg.client_id,
    client_secret = secret,
    scope = cfg.scope,
  })
  local ua = user_agent(cfg.user_agent)
  local http = core.http({
    timeout = cfg.timeout,
    connect_timeout = cfg.connect_timeout,
    ca_file = cfg.ca_file,
    user_agent = ua,
    max_body_size = cfg.max_body_size,
  })
  local s = session.new({
    base_url = cfg.environment_url,
    token_url = cfg.environment_url .. "/oauth/token",
    -- the secret lives only in these closures: no table field holds it
    token_form = function() return form end,
    client_form = function(fields)
      fields.client_id, fields.client_secret = cfg.client_id, secret
      return request.form(fields)
    end,
    jwks_cache = auth.memory_cache(),
    jwks_ttl = cfg.jwks_ttl,
    jwks_refresh_interval = cfg.jwks_refresh_interval,
    jwks_wait = cfg.timeout + 1, -- longest wait for another coroutine's JWKS fetch
    http = http,
    user_agent = ua,
    store = core.token_vault(),
    sleep = core.sleep,
    max_retries = cfg.max_retries,
    retry_backoff = cfg.retry_backoff,
    retry_backoff_max = cfg.retry_backoff_max,
    retry_after_max = cfg.retry_after_max,
    token_refresh_margin = cfg.token_refresh_margin,
  })
  if in_openresty() then
    -- cosockets in request handlers, a shared-dict token cache: see scalekit/ngx.lua
    local ok, err = require("scalekit.ngx").attach(s, cfg)
    if not ok then
      http:close()
      s.store:close()
      return nil, err
    end
  end
  local self = setmetatable({
    environment_url = cfg.environment_url,
    client_id = cfg.client_id,
    _s = s,
  }, Client_mt)
  return self
end

--- Create a client from SCALEKIT_ENVIRONMENT_URL, SCALEKIT_CLIENT_ID and
--- SCALEKIT_CLIENT_SECRET; `opts` may add any other option.
---@param opts scalekit.Options?
---@return scalekit.Client|nil client
---@return scalekit.Error|nil err
function _M.from_env(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local missing = {}
  for opt, var in pairs({ environment_url = "SCALEKIT_ENVIRONMENT_URL",
                          client_id = "SCALEKIT_CLIENT_ID",
                          client_secret = "SCALEKIT_CLIENT_SECRET" }) do
    local v = getenv(var)
    if v and v ~= "" then
      o[opt] = o[opt] or v
    elseif not o[opt] then
      missing[#missing + 1] = var
    end
  end
  if #missing > 0 then
    table.sort(missing)
    return nil, errors.new("auth", "missing environment variable(s): " .. table.concat(missing, ", "),
                           { error_code = "missing_configuration" })
  end
  return _M.new(o)
end

local function live(self)
  if rawget(self, "_closed") then error("scalekit: client is closed", 3) end
  return self._s
end

--- Call any operation of the API by its operationId.
---@param operation_id string e.g. "OrganizationService_GetOrganization"
---@param params table? path/query params by spec name, JSON body under `body`
---@return table|nil result decoded JSON answer
---@return scalekit.Error|nil err
function Client:call(operation_id, params)
  local s = live(self)
  local op = operations[operation_id]
  if not op then
    error("scalekit: unknown operation '" .. tostring(operation_id) .. "'", 2)
  end
  local path, body = request.build(operation_id, op, params)
  local text
  if body ~= nil then
    text = json_encode(body)
    if not text then error("scalekit: " .. operation_id .. ": body cannot be encoded as JSON", 2) end
  elseif op.body == "required" then
    text = "{}"
  end
  return s:api(op.method, path, text, operation_id)
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
  return live(self):token()
end

--- Drop the cached token; the next call fetches a new one.
function Client:invalidate_token()
  live(self):invalidate_token()
end

--- Free the connections and wipe the token. Idempotent; the client is unusable after.
function Client:close()
  if rawget(self, "_closed") then return end
  self._closed = true
  local s = self._s
  s.http:close()
  s.store:close()
end

-- Login, token validation and webhooks (scalekit/auth.lua), refused once closed.
for name, fn in pairs(auth.methods) do
  Client[name] = function(self, ...)
    live(self)
    return fn(self, ...)
  end
end

Client_mt.__gc = Client.close
Client_mt.__close = Client.close

_M.Client = Client

return _M
