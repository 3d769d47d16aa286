-- luacheck: globals ngx
--- Encrypted cookies of the gateway: a Lua table as JSON, sealed with AES-256-GCM by
--- the C core (core.aead_seal: random 96-bit nonce, 128-bit tag, the cookie name as
--- associated data, so a value cannot be moved to another cookie), base64url, and
--- split into chunks `name`, `name_2`, … past CHUNK bytes (browsers keep 4096
--- bytes per cookie, name and attributes included).
--
-- The key is derived from the session secret with HKDF-SHA256 (RFC 5869, one
-- block): PRK = HMAC(salt, secret), key = HMAC(PRK, info .. 0x01).
local core = require "scalekit.core"

local _M = {}

local ngx = ngx
local type = type
local tostring = tostring
local concat = table.concat
local hmac = core.hmac_sha256
local seal, open = core.aead_seal, core.aead_open
local b64url_encode, b64url_decode = core.b64url_encode, core.b64url_decode

local json = require("cjson.safe").new()

_M.CHUNK = 4000
_M.MAX_CHUNKS = 8

--- A 32-byte key for `purpose` from `secret`.
function _M.derive_key(secret, purpose)
  local prk = hmac("scalekit-lua gateway v1", secret)
  return hmac(prk, purpose .. "\1")
end

--- The sealed, encoded value of table `t` for cookie `name`.
function _M.seal(key, name, t)
  local text = json.encode(t)
  return b64url_encode(assert(seal(key, text, name)))
end

--- The table sealed in `value`, or nil (absent, tampered, another key or cookie).
function _M.open(key, name, value)
  if type(value) ~= "string" or value == "" then return nil end
  local raw = b64url_decode(value)
  if not raw then return nil end
  local text = open(key, raw, name)
  if not text then return nil end
  local t = json.decode(text)
  if type(t) ~= "table" then return nil end
  return t
end

--- The value of cookie `name` as sent, its chunks joined, and how many chunks
--- the request carried.
function _M.read(name)
  local var = ngx.var
  local first = var["cookie_" .. name]
  if not first then return nil, 0 end
  local parts, n = { first }, 1
  while n < _M.MAX_CHUNKS do
    local v = var["cookie_" .. name .. "_" .. (n + 1)]
    if not v then break end
    n = n + 1
    parts[n] = v
  end
  return concat(parts), n
end

-- add Set-Cookie lines to the response, keeping the ones already there
local function add(lines)
  local h = ngx.header["Set-Cookie"]
  local all = {}
  if type(h) == "table" then
    for i = 1, #h do all[#all + 1] = h[i] end
  elseif h then
    all[1] = h
  end
  for i = 1, #lines do all[#all + 1] = lines[i] end
  ngx.header["Set-Cookie"] = all
end

local function attributes(a, max_age)
  local s = "; Path=" .. (a.path or "/") .. "; HttpOnly; SameSite=" .. (a.same_site or "Lax")
  if a.secure then s = s .. "; Secure" end
  if a.domain then s = s .. "; Domain=" .. a.domain end
  if max_age then s = s .. "; Max-Age=" .. tostring(max_age) end
  return s
end

--- Set cookie `name` to `value` (chunked) for `max_age` seconds; `had` is the number
--- of chunks the request carried (those beyond the new count are deleted).
--- Returns the number of bytes of the value.
function _M.set(name, value, a, max_age, had)
  local lines, n = {}, 0
  local size = _M.CHUNK
  for i = 1, #value, size do
    n = n + 1
    lines[n] = (n == 1 and name or (name .. "_" .. n)) .. "=" .. value:sub(i, i + size - 1)
      .. attributes(a, max_age)
  end
  for i = n + 1, had or 0 do
    lines[#lines + 1] = name .. "_" .. i .. "=" .. attributes(a, 0)
  end
  add(lines)
  return #value, n
end

--- Delete cookie `name` and its `had` chunks.
function _M.clear(name, a, had)
  local lines = { name .. "=" .. attributes(a, 0) }
  for i = 2, had or 1 do lines[#lines + 1] = name .. "_" .. i .. "=" .. attributes(a, 0) end
  add(lines)
end

return _M
