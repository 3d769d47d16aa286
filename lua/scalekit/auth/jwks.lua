--- The environment's JWKS ({environment_url}/keys) for token validation.
--
-- Fetched once and cached for `jwks_ttl` seconds (in the client, or in a
-- lua_shared_dict under OpenResty), by one caller at a time (the session's flight).
-- A token naming a key id we do not know makes us look again, but at most once per
-- `jwks_refresh_interval` seconds: a flood of forged tokens cannot become a flood of
-- /keys requests.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local jwt = require "scalekit.auth.jwt"

local _M = {}

local type = type
local setmetatable = setmetatable
local monotonic = core.monotonic

local json = require("cjson.safe").new()

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
    fetched_at = nil,   -- monotonic time of our last fetch
    text = nil,         -- the text `finder` was built from
    finder = nil,
  }, Jwks_mt)
end

local function download(self)
  self.fetched_at = monotonic()
  local doc, err = self.session:request("GET", "/keys", nil, "jwks")
  if not doc then return nil, err end
  if type(doc.keys) ~= "table" then
    return nil, errors.new("decode", "JWKS answer has no keys", { operation = "jwks" })
  end
  local text = json.encode(doc)
  self.cache:set(text, self.ttl)
  return text
end

-- the JWKS text: cached, or fetched by one caller at a time
local function fetch(self)
  local cache = self.cache
  return self.session.flight:run("jwks", function() return download(self) end, function()
    local text = cache:get()
    return text, nil, text ~= nil
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
  text, err = download(self)
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
