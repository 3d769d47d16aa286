--- The request engine behind a client: the client-credentials token, retries with
--- backoff, the 401 → new token → retry-once rule, and JSON decoding.
--
-- The policy is written once, here, and drives every transport. A session is built
-- once by scalekit.new from the validated options and an environment (plain Lua:
-- scalekit.new itself; OpenResty: scalekit/ngx/init.lua), and nothing patches it
-- afterwards:
--   env.transport  t:request(method, url, body, ctype, bearer, raw, compressed)
--                  -> res | nil, err (transport/curl.lua, transport/cosocket.lua);
--                  `bearer` is the token string, or the C vault itself when the
--                  transport says `takes_vault` and the store is that vault (the
--                  token is then read in place: no Lua copy per call)
--   env.store      the token store: get() -> token, expires_at, needs_refresh;
--                  set(token, expires_in, margin); clear([token]); close()
--                  (the C vault of scalekit.core, or ngx/store.lua)
--   env.sleep      sleep(seconds), blocking or yielding
--   env.flight     f:run(name, fetch, peek, old, old_expires_at): one fetch at a
--                  time (ngx/flight.lua; plain Lua has no concurrency: _M.DIRECT)
--   env.jwks_cache get() -> text | nil; set(text, ttl)
local errors = require "scalekit.errors"
local json = require "scalekit.json"
local core = require "scalekit.core"

local _M = {}

local type = type
local setmetatable = setmetatable
local min = math.min
local random = math.random
local should_retry = errors.should_retry

local json_decode = json.decode
local null = json.null
local monotonic = core.monotonic

local Session = {}
Session.__index = Session

--- The flight of plain Lua, where no other caller can run meanwhile: fetch, and
--- when that fails, serve what the store still holds.
_M.DIRECT = {
  run = function(_, _, fetch, peek)
    local v, extra = fetch()
    if v then return v, extra end
    local old, old_extra = peek()
    if old then return old, old_extra end
    return nil, extra
  end,
}

---@param cfg table validated options (scalekit.config)
---@param env table transport, store, sleep, flight, jwks_cache (see the module header)
---@param secrets table token_form(), client_form(fields): the only holders of the secret
function _M.new(cfg, env, secrets)
  local store = env.store
  return setmetatable({
    -- the store when the transport reads the token from it directly (vault:fresh())
    vault = env.transport.takes_vault and type(store) == "userdata" and store.fresh and store or nil,
    base_url = cfg.environment_url,
    token_url = cfg.environment_url .. "/oauth/token",
    max_retries = cfg.max_retries,
    retry_backoff = cfg.retry_backoff,
    retry_backoff_max = cfg.retry_backoff_max,
    retry_after_max = cfg.retry_after_max,
    token_refresh_margin = cfg.token_refresh_margin,
    transport = env.transport,
    store = env.store,
    sleep = env.sleep,
    flight = env.flight,
    jwks_cache = env.jwks_cache,
    token_form = secrets.token_form,
    client_form = secrets.client_form,
    redact_secret = secrets.redact,
    log = cfg.log,
    tool_opts = { timeout = cfg.tool_timeout },
    -- what a libcurl handle of this client is made with (sk:batch's multi handle too)
    http_options = {
      timeout = cfg.timeout, connect_timeout = cfg.connect_timeout, ca_file = cfg.ca_file,
      user_agent = cfg.user_agent, max_body_size = cfg.max_body_size, proxy = cfg.proxy,
      no_proxy = cfg.no_proxy, headers = cfg.extra_headers,
    },
  }, Session)
end

-- Delay before retry number `attempt` (0-based): exponential, capped, with "equal
-- jitter" so that a crowd of clients spreads out but never retries at once.
local function backoff(self, attempt)
  local d = min(self.retry_backoff_max, self.retry_backoff * 2 ^ attempt)
  return d / 2 + random() * d / 2
end
Session.backoff = backoff

-- The client's secret and `token` blanked out of a text the server sent (servers
-- that echo the request would put them into error messages).
local function redact(self, text, token)
  if type(text) ~= "string" or text == "" then return text end
  text = self.redact_secret(text)
  if token and #token >= 8 and text:find(token, 1, true) then
    text = text:gsub(token:gsub("%p", "%%%0"), "[redacted]")
  end
  return text
end

-- An API error whose details name a failure of the upstream tool provider: never
-- retried (a provider 429 retried three times triples the damage) and never a
-- reason to renew our token (a provider's 401 says nothing about it).
local function tool_error(err)
  local details = err.details
  if type(details) ~= "table" then return false end
  for i = 1, #details do
    local d = details[i]
    if type(d) == "table" and (d.error_code == "TOOL_ERROR" or d.errorCode == "TOOL_ERROR") then return true end
  end
  return false
end

-- One logical request: attempts, sleeps and (with `use_token`) the token dance.
-- `idempotent` overrides the method's retry rule (errors.should_retry); `raw` is
-- the transport's pass-through table (sk:proxy_request, tool calls). Returns the
-- transport's res on a 2xx, else nil, err (with err.attempts).
local function perform(self, method, url, body, ctype, opname, use_token, idempotent, raw, max_retries,
                       compressed)
  local transport, log, vault = self.transport, self.log, self.vault
  max_retries = max_retries or self.max_retries
  local attempt, renewed = 0, false
  while true do
    -- `bearer` goes to the transport: the token, or the vault holding it (`gen` then
    -- names that token for the 401 rule, and `token` is read only for an error)
    local token, bearer, gen, err
    if use_token then
      gen = vault and vault:fresh()
      if gen then
        bearer = vault
      else
        token, err = self:token()
        if not token then return nil, err end
        bearer = token
      end
    end
    local res, t0
    if log then
      t0 = monotonic()
      log({ event = "request", operation = opname, method = method, url = url, attempt = attempt + 1 })
    end
    res, err = transport:request(method, url, body, ctype, bearer, raw, compressed)
    local wait
    if res then
      local status = res.status
      if log then
        log({ event = "response", operation = opname, method = method, url = url, attempt = attempt + 1,
              status = status, request_id = res.request_id, duration = monotonic() - t0 })
      end
      if status >= 200 and status < 300 then return res end
      if gen then token = vault:get() end
      local ra = errors.parse_retry_after(res.retry_after)
      err = errors.from_response(status, redact(self, res.body, token), {
        request_id = res.request_id, retry_after = ra, operation = opname,
      })
      if tool_error(err) then
        err.retryable = false
      elseif status == 401 and use_token and not renewed then
        -- The token was revoked or expired early: forget it (only if nobody replaced
        -- it meanwhile), get a new one, and try once more, at once. Never loops.
        renewed = true
        self.store:clear(gen or token)
        err = nil
      elseif should_retry(err, method, idempotent) then
        if ra and ra > self.retry_after_max then
          err.attempts = attempt + 1
          return nil, err
        end
        wait = ra or true
      end
    else
      err.operation = opname
      if log then
        log({ event = "error", operation = opname, method = method, url = url, attempt = attempt + 1,
              kind = err.kind, message = err.message, duration = monotonic() - t0 })
      end
      wait = should_retry(err, method, idempotent)
    end
    if err then
      if not wait or attempt >= max_retries then
        err.attempts = attempt + 1
        return nil, err
      end
      local delay = wait == true and backoff(self, attempt) or wait
      if log then
        log({ event = "retry", operation = opname, method = method, url = url, attempt = attempt + 1,
              delay = delay, status = err.status, kind = err.kind })
      end
      self.sleep(delay)
      attempt = attempt + 1
    end
  end
end

-- Fetch a new client-credentials token and put it in the store.
local function fetch_token(self)
  local res, err = perform(self, "POST", self.token_url, self.token_form(), "form", "oauth/token", false,
                           true)
  if not res then return nil, errors.token_endpoint(err) end
  local doc = json_decode(res.body)
  local token = type(doc) == "table" and doc.access_token
  if type(token) ~= "string" or token == "" or token:find("[%c ]") then
    return nil, errors.new("decode", "token endpoint answered without a usable access_token",
                           { status = res.status, request_id = res.request_id, operation = "oauth/token" })
  end
  -- a lifetime from the network must be a finite, positive number of seconds (at
  -- most a year); anything else gets the default hour
  local expires_in = json.finite(doc.expires_in)
  if not expires_in or expires_in <= 0 or expires_in > 31536000 then
    expires_in = 3600
  end
  -- refresh ahead of expiry: a minute early for day-long tokens, 10% for short ones
  local margin = min(self.token_refresh_margin, expires_in / 10)
  self.store:set(token, expires_in, margin)
  local _, expires_at = self.store:get()
  return token, expires_at
end

--- The current access token, fetched or refreshed when needed, by one caller at a
--- time; a token that is still valid keeps serving while it is refreshed or when
--- the refresh fails.
---@return string|nil token
---@return number|scalekit.Error expires_at_or_err
function Session:token()
  local store = self.store
  local token, expires_at, needs_refresh = store:get()
  if token and not needs_refresh then
    return token, expires_at
  end
  return self.flight:run("token", function() return fetch_token(self) end, function()
    local t, e, stale = store:get()
    return t, e, t ~= nil and not stale
  end, token, expires_at)
end

function Session:invalidate_token()
  self.store:clear()
end

--- Send a request and decode its JSON answer. With `bearer` (API calls) the
--- client's token goes along; without it (OAuth, JWKS) none does.
--- An empty 2xx body is `{}`; so is `null` for operations whose answer has an empty
--- schema (`empty`: deletes); any other body that is not a JSON object or array is a
--- decode error (cjson's null is truthy and would pass as a result).
---@param method string
---@param path string path and query, starting with "/"
---@param body string|nil request body (JSON, or a form with ctype "form")
---@param opname string operationId or endpoint, for errors
---@param ctype string|nil "json" (default) | "form"
---@param bearer boolean|nil send the client's token
---@param empty boolean|nil the operation's answer has an empty schema
---@param opts table|nil {timeout = seconds} for this call (tool calls); {max_retries = n}
---                       (0: one attempt, for fetches in a request path such as the JWKS)
---@return table|nil result
---@return scalekit.Error|nil err
function Session:request(method, path, body, opname, ctype, bearer, empty, opts)
  local raw
  if opts and opts.timeout then raw = { timeout = opts.timeout, content_type = "application/json" } end
  local res, err = perform(self, method, self.base_url .. path, body, raw and "raw" or ctype or "json",
                           opname, bearer, nil, raw, opts and opts.max_retries)
  if not res then return nil, err end
  return _M.decode(res, opname, empty)
end

--- An API call on a full URL, the client's token along (sk:call: the client builds
--- the URL once per call). `compressed` asks for Accept-Encoding (paged lists);
--- `raw` is the pass-through table of a tool call ({timeout =, content_type =}).
---@param method string
---@param url string
---@param body string|nil JSON text
---@param opname string
---@param empty boolean|nil the operation's answer has an empty schema
---@param compressed boolean|nil
---@param raw table|nil
---@return table|nil result
---@return scalekit.Error|nil err
function Session:call(method, url, body, opname, empty, compressed, raw)
  local res, err = perform(self, method, url, body, raw and "raw" or "json", opname, true, nil, raw, nil,
                           compressed)
  if not res then return nil, err end
  local text = res.body
  if text == "" then return {} end
  local doc = json_decode(text)
  if type(doc) == "table" then return doc end
  return _M.decode(res, opname, empty)
end

--- The decoded answer of a 2xx (see Session:request; sk:batch decodes the same way).
---@param res table the transport's res
---@param opname string
---@param empty boolean|nil the operation's answer has an empty schema
---@return table|nil result
---@return scalekit.Error|nil err
function _M.decode(res, opname, empty)
  local text = res.body
  if text == "" then return {} end
  local doc = json_decode(text)
  if empty and doc == null then return {} end
  if type(doc) ~= "table" then
    return nil, errors.new("decode", "response is not a JSON object", {
      status = res.status, request_id = res.request_id, operation = opname,
    })
  end
  return doc
end

--- A pass-through request (sk:proxy_request): any content type both ways, the
--- caller's headers, the tool timeout. Returns {status =, body =, content_type =} on
--- a 2xx, nil, err otherwise (an HTTP error carries the provider's status).
---@param method string
---@param url string absolute URL
---@param body string|nil
---@param raw table {content_type =, headers = {"Name: value", …}, timeout =}
---@param opname string
---@return table|nil res
---@return scalekit.Error|nil err
function Session:raw(method, url, body, raw, opname)
  return perform(self, method, url, body, "raw", opname, true, nil, raw)
end

--- Stats of the transport in use: {requests = n, connects = n}.
function Session:stats()
  return self.transport:stats()
end

--- Free the transport's connections and wipe the token store.
function Session:close()
  self.transport:close()
  self.store:close()
end

return _M
