--- The environment's JWKS ({environment_url}/keys) for token validation.
--
-- Fetched once and cached for `jwks_ttl` seconds (in the client, or in a
-- lua_shared_dict under OpenResty), by one caller at a time (the session's flight).
-- A token naming a key id we do not know makes us look again, but at most once per
-- `jwks_refresh_interval` seconds: a flood of forged tokens cannot become a flood of
-- /keys requests.
--
-- A failing /keys must not become a flood either (issue 15):
-- * a fetch is ONE attempt (the session's retries with backoff would block a request
--   for seconds per token);
-- * a failed first fetch (nothing cached) is remembered in the same cache as the JWKS
--   (so, with a lua_shared_dict, by every worker): the callers that were waiting for
--   that fetch get its failure instead of fetching again, and after the second and
--   further failures in a row, validations fail fast with kind "network",
--   error_code "jwks_unavailable" (retryable, retry_after set) for NEGATIVE_BASE * 2^(n-2)
--   seconds (1, 2, 4, ...), at most min(NEGATIVE_MAX, jwks_refresh_interval) but at
--   least 1 s. A single failure is not held against the next validation: a blip of the
--   server costs one failed validation, an outage costs one /keys request per window.
--   The count survives NEGATIVE_MEMORY seconds; a successful fetch resets it.
-- * a failed refetch for an unknown kid keeps the JWKS we have.
--
-- The JWKS document is decoded strictly (scalekit.json); a document that is not strict
-- JSON (NaN, Infinity) is a decode error and is never cached.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local json = require "scalekit.json"
local jwt = require "scalekit.auth.jwt"

local _M = {}

local type = type
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local monotonic = core.monotonic
local min = math.min
local max = math.max
local floor = math.floor
local ceil = math.ceil
local match = string.match
local sub = string.sub

--- Negative cache: first window after the second failure in a row, the largest
--- window, and how long the failure count is kept (seconds).
_M.NEGATIVE_BASE = 1
_M.NEGATIVE_MAX = 5
_M.NEGATIVE_MEMORY = 60

-- session:request options of a JWKS fetch: one attempt, no retry loop
local ONE_ATTEMPT = { max_retries = 0 }

-- A remembered failure, stored as the cache's text (JSON never starts with NUL):
-- "\0jwks-failed\0<at>\0<until>\0<count>\0<message>", times on the monotonic clock
-- (CLOCK_MONOTONIC: the same in every worker of the machine).
local MARK = "\0jwks-failed\0"

local function is_failure(text)
  return sub(text, 1, #MARK) == MARK
end

local function parse_failure(text)
  local at, till, count, message = match(text, "^%z[^%z]*%z([^%z]+)%z([^%z]+)%z(%d+)%z(.*)$")
  if not at then return nil end
  return { at = tonumber(at), till = tonumber(till), count = tonumber(count), message = message }
end

local function unavailable(f)
  local left = max(0, f.till - monotonic())
  return errors.new("network", "JWKS unavailable: the last fetch failed (" .. f.message .. "); next try in "
    .. ceil(left) .. " s", { error_code = "jwks_unavailable", operation = "jwks", retryable = true,
                             retry_after = ceil(left) })
end

-- The default cache: this client's memory. In OpenResty with a shared dict,
-- scalekit/ngx/store.lua gives one with the same get/set.
local MemoryCache = {}
MemoryCache.__index = MemoryCache
function MemoryCache:get()
  if self.text and monotonic() < self.expires then return self.text end
  return nil
end
function MemoryCache:set(text, ttl)
  self.text, self.expires = text, monotonic() + ttl
end

--- A JWKS cache in this process's memory.
---@return table cache with get() -> text|nil and set(text, ttl)
function _M.memory_cache()
  return setmetatable({}, MemoryCache)
end

local Jwks = {}
local Jwks_mt = { __index = Jwks }

---@param session table the client's session (request, flight, jwks_cache)
---@param cfg table validated options (jwks_ttl, jwks_refresh_interval)
function _M.new(session, cfg)
  return setmetatable({
    session = session,
    cache = session.jwks_cache,
    ttl = cfg.jwks_ttl,
    refresh_interval = cfg.jwks_refresh_interval,
    negative_max = max(1, min(_M.NEGATIVE_MAX, cfg.jwks_refresh_interval)),
    fetched_at = nil,   -- monotonic time of our last fetch
    text = nil,         -- the text `finder` was built from
    finder = nil,
  }, Jwks_mt)
end

-- remember a failed first fetch (see the module header)
local function remember_failure(self, err)
  local now = monotonic()
  local prev = self.cache:get()
  local count = 1
  if prev and is_failure(prev) then
    local f = parse_failure(prev)
    if f then count = f.count + 1 end
  end
  local window = count >= 2 and min(self.negative_max, _M.NEGATIVE_BASE * 2 ^ (count - 2)) or 0
  local message = tostring(err and err.message or "unknown error"):gsub("%z", "")
  if #message > 200 then message = sub(message, 1, 200) end
  self.cache:set(MARK .. now .. "\0" .. (now + window) .. "\0" .. floor(count) .. "\0" .. message,
                 _M.NEGATIVE_MEMORY)
end

local function download(self, initial)
  self.fetched_at = monotonic()
  local doc, err = self.session:request("GET", "/keys", nil, "jwks", nil, nil, nil, ONE_ATTEMPT)
  local text
  if doc then
    if type(doc.keys) ~= "table" then
      err = errors.new("decode", "JWKS answer has no keys", { operation = "jwks" })
    else
      -- strict: a document with NaN or Infinity cannot be written back as JSON
      text = json.encode(doc)
      if not text or type(json.decode(text)) ~= "table" then
        text = nil
        err = errors.new("decode", "JWKS answer is not strict JSON", { operation = "jwks" })
      end
    end
  end
  if not text then
    if initial then remember_failure(self, err) end
    return nil, err
  end
  self.cache:set(text, self.ttl)
  return text
end

-- the JWKS text: cached, or fetched by one caller at a time; callers that waited for
-- a fetch that failed get its failure (a failure recorded after they started waiting)
local function fetch(self)
  local cache = self.cache
  local started = monotonic()
  return self.session.flight:run("jwks", function() return download(self, true) end, function()
    local text = cache:get()
    if text == nil then return nil end
    if not is_failure(text) then return text, nil, true end
    local f = parse_failure(text)
    if f and (f.at >= started or monotonic() < f.till) then return nil, unavailable(f), true end
    return nil
  end)
end

-- key finder for `text` (parsed once per distinct text)
local function finder_for(self, text)
  if self.text ~= text then
    local doc = json.decode(text)
    if type(doc) ~= "table" then return nil end
    self.finder = jwt.key_finder(doc)
    self.text = text
  end
  return self.finder
end

--- The key for `kid` (see jwt.verify), or nil[, err].
function Jwks:key(kid)
  local text = self.cache:get()
  local err
  if text and is_failure(text) then
    local f = parse_failure(text)
    if f and monotonic() < f.till then return nil, unavailable(f) end
    text = nil
  end
  if not text then
    text, err = fetch(self)
    if not text then return nil, err end
  end
  local find = finder_for(self, text)
  local key = find and find(kid)
  if key then return key end
  -- unknown kid: keys may have rotated; look again, but not more than once per interval
  local last = self.fetched_at
  if last and monotonic() - last < self.refresh_interval then return nil end
  text, err = download(self, false)
  if not text then return nil, err end
  find = finder_for(self, text)
  return find and find(kid)
end

--- A keys(kid) function for jwt.verify.
function Jwks:lookup()
  local lookup = self.lookup_fn
  if not lookup then
    lookup = function(kid) return self:key(kid) end
    self.lookup_fn = lookup
  end
  return lookup
end

return _M
