--- The options of scalekit.new: defaults, types, ranges. The only validator: what
--- it returns is trusted by the session, the transports and the C core.
local core = require "scalekit.core"
local errors = require "scalekit.errors"

local _M = {}

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local rawget = rawget
local huge = math.huge
local misuse = errors.misuse

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
---@field strict boolean? check JSON body fields against the API's schemas (default true)
---@field api_version string? sent as `x-api-version` with every API call when set
---@field tool_timeout number? seconds per attempt of tool calls and sk:proxy_request (default 60)
---@field proxy string? HTTP proxy URL (`http://host:port`) for every request; overrides http(s)_proxy
---@field no_proxy string? comma-separated hosts (and domain suffixes) reached without the proxy
---@field log fun(event: table)? called for every attempt, answer and retry (see README "Observability")
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
  strict = true,
  tool_timeout = 60,
}
_M.DEFAULTS = DEFAULTS

local OPTION_TYPES = {
  environment_url = "string", client_id = "string", client_secret = "string",
  timeout = "number", connect_timeout = "number", max_retries = "number",
  retry_backoff = "number", retry_backoff_max = "number", retry_after_max = "number",
  token_refresh_margin = "number", scope = "string", ca_file = "string",
  user_agent = "string", max_body_size = "number",
  shared_dict = "string", keepalive_timeout = "number", keepalive_pool = "number",
  jwks_ttl = "number", jwks_refresh_interval = "number",
  strict = "boolean", api_version = "string", tool_timeout = "number",
  proxy = "string", no_proxy = "string", log = "function",
}

-- The C core's own ceiling (a Lua string holds the whole body).
local MAX_BODY_LIMIT = core.MAX_BODY_LIMIT

local function bad(fmt, ...)
  misuse("new: " .. fmt, ...)
end

local LOOPBACK = { localhost = true, ["[::1]"] = true }

-- https, or http to a loopback address; no userinfo, query or fragment; trailing
-- slashes dropped. Custom domains are just another https URL.
local function check_environment_url(url)
  local scheme, host, path = url:match("^(%a+)://([^/?#]+)(.*)$")
  if not scheme then bad("environment_url is not a URL") end
  scheme = scheme:lower()
  if host:find("@", 1, true) then bad("environment_url must not contain credentials") end
  if path:find("[?#]") then bad("environment_url must not have a query or fragment") end
  if path:find("[%s%c]") or host:find("[%s%c]") then
    bad("environment_url must not contain spaces or control characters")
  end
  local hostname = host:match("^(%[[^%]]+%])") or host:match("^([^:]+)")
  if scheme == "http" then
    local h = hostname and hostname:lower()
    if not (LOOPBACK[h] or (h and h:match("^127%.%d+%.%d+%.%d+$"))) then
      bad("environment_url must use https (http is allowed only for loopback hosts)")
    end
  elseif scheme ~= "https" then
    bad("environment_url must use https")
  end
  path = path:gsub("/+$", "")
  return scheme .. "://" .. host .. path
end

local function user_agent(extra)
  local lua = _VERSION
  local jit = rawget(_G, "jit")
  if jit then lua = jit.version end
  local ua = "scalekit-lua/" .. core.version .. " (" .. lua .. "; libcurl/" .. core.curl_version() .. ")"
  if extra then
    if extra:find("[%c]") then bad("user_agent must not contain control characters") end
    ua = ua .. " " .. extra
  end
  return ua
end

--- Check `opts` and return a new table with the defaults filled in, the URL
--- normalized and `user_agent` the full header value. Raises on misuse.
---@param opts scalekit.Options
---@return table cfg
function _M.validate(opts)
  if type(opts) ~= "table" then bad("options must be a table") end
  local cfg = {}
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then bad("unknown option '%s'", tostring(k)) end
    if type(v) ~= want then
      bad("option '%s' must be a %s, got %s", k, want, type(v))
    end
    if want == "number" and (v ~= v or v == huge or v == -huge) then
      bad("option '%s' must be a finite number", k)
    end
    cfg[k] = v
  end
  for k, v in pairs(DEFAULTS) do
    if cfg[k] == nil then cfg[k] = v end
  end
  for _, k in ipairs({ "environment_url", "client_id", "client_secret" }) do
    if cfg[k] == nil or cfg[k] == "" then bad("%s is required", k) end
  end
  for _, k in ipairs({ "timeout", "connect_timeout", "tool_timeout" }) do
    if not (cfg[k] > 0 and cfg[k] <= 86400) then bad("%s must be in (0, 86400]", k) end
  end
  if cfg.max_retries < 0 or cfg.max_retries % 1 ~= 0 or cfg.max_retries > 20 then
    bad("max_retries must be an integer in [0, 20]")
  end
  for _, k in ipairs({ "retry_backoff", "retry_backoff_max", "retry_after_max", "token_refresh_margin",
                       "jwks_ttl", "jwks_refresh_interval" }) do
    if cfg[k] < 0 then bad("%s must not be negative", k) end
  end
  if cfg.max_body_size < 1024 or cfg.max_body_size > MAX_BODY_LIMIT then
    bad("max_body_size must be between 1024 and %d", MAX_BODY_LIMIT)
  end
  if cfg.keepalive_pool < 1 or cfg.keepalive_pool % 1 ~= 0 then
    bad("keepalive_pool must be a positive integer")
  end
  if cfg.keepalive_timeout < 0 then bad("keepalive_timeout must not be negative") end
  if cfg.api_version and not cfg.api_version:find("^[%w._-]+$") then
    bad("api_version must be letters, digits, '.', '_' or '-'")
  end
  if cfg.proxy then
    local scheme = cfg.proxy:match("^(%a+)://[^/?#%s%c@]+/?$")
    if not scheme or scheme:lower() ~= "http" then
      bad("proxy must be an http://host:port URL (credentials are not supported)")
    end
  end
  if cfg.no_proxy and cfg.no_proxy:find("[%c]") then bad("no_proxy must not contain control characters") end
  cfg.environment_url = check_environment_url(cfg.environment_url)
  -- lines both transports send with every request
  cfg.extra_headers = cfg.api_version and { "x-api-version: " .. cfg.api_version } or nil
  cfg.user_agent = user_agent(cfg.user_agent)
  -- how long anyone waits for somebody else's token or JWKS fetch
  cfg.wait = cfg.timeout + 1
  return cfg
end

local ENV = {
  environment_url = "SCALEKIT_ENVIRONMENT_URL",
  client_id = "SCALEKIT_CLIENT_ID",
  client_secret = "SCALEKIT_CLIENT_SECRET",
}

--- `opts` completed from SCALEKIT_ENVIRONMENT_URL, SCALEKIT_CLIENT_ID and
--- SCALEKIT_CLIENT_SECRET (given options win), or nil, err (kind "config") naming
--- the missing variables.
---@param opts scalekit.Options?
---@param getenv fun(name: string): string?
---@return table|nil opts
---@return scalekit.Error|nil err
function _M.from_env(opts, getenv)
  if opts ~= nil and type(opts) ~= "table" then bad("options must be a table") end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local missing = {}
  for opt, var in pairs(ENV) do
    local v = getenv(var)
    if v and v ~= "" then
      o[opt] = o[opt] or v
    elseif not o[opt] then
      missing[#missing + 1] = var
    end
  end
  if #missing > 0 then
    table.sort(missing)
    return nil, errors.new("config", "missing environment variable(s): " .. table.concat(missing, ", "),
                           { error_code = "missing_configuration" })
  end
  return o
end

return _M
