--- JSON at the library's edges, one private lua-cjson instance (never the shared
--- module's settings, which belong to the application).
--
-- Decoding is strict: what the network sends must be JSON, so the non-JSON numbers
-- lua-cjson accepts by default (NaN, Infinity, hex) are refused, and `finite` /
-- `integer` check every number that drives a decision (lifetimes, exp/nbf/iat,
-- Retry-After, page counts): 1e999 parses as JSON and still is not a lifetime.
--
-- Encoding writes integers exactly: lua-cjson 2.1.0 prints numbers with at most 14
-- significant digits, so a body integer of 15+ digits would change value; those are
-- written by us (placeholders swapped for their digits after encoding).
local cjson = require "cjson.safe"

local _M = {}

local type = type
local pairs = pairs
local next = next
local tonumber = tonumber
local setmetatable = setmetatable
local getmetatable = getmetatable
local format = string.format
local gsub = string.gsub
local floor = math.floor
local huge = math.huge
local tointeger = rawget(math, "tointeger")
local mtype = rawget(math, "type")

local codec = cjson.new()
codec.decode_invalid_numbers(false)
codec.encode_invalid_numbers(false)
codec.decode_max_depth(128)
codec.encode_max_depth(128)

_M.null = codec.null

--- Decode `text`; nil, message on anything that is not strict JSON.
---@param text string
---@return any value
---@return string|nil err
_M.decode = codec.decode  -- (the C function itself: no Lua frame per decode)

--- A finite number (NaN, ±inf and non-numbers give nil).
function _M.finite(v)
  if type(v) ~= "number" or v ~= v or v == huge or v == -huge then return nil end
  return v
end

--- An integral finite number in [lo, hi], as an integer on 5.3+ (nil otherwise).
function _M.integer(v, lo, hi)
  v = _M.finite(v)
  if not v or floor(v) ~= v or (lo and v < lo) or (hi and v > hi) then return nil end
  return tointeger and tointeger(v) or v
end

-- integers cjson would round: more than 14 significant digits
local LIMIT = 1e14

local function big_integer(v)
  if mtype then return mtype(v) == "integer" and (v >= LIMIT or v <= -LIMIT) end
  return false  -- 5.1/LuaJIT numbers are doubles: cjson's rounding is their own
end

-- A copy of `v` where every big integer is a placeholder string, or nil when there
-- is none (the common case: no copy at all).
local function with_placeholders(v, found, depth)
  if type(v) == "number" then
    if big_integer(v) then
      found[#found + 1] = format("%d", v)
      return "\0sk-int-" .. #found .. "\0", true
    end
    return v, false
  end
  -- deeper than cjson's limit (or a cycle): left as is, cjson refuses it
  if type(v) ~= "table" or depth > 128 then return v, false end
  local copy, changed = nil, false
  for k, x in pairs(v) do
    local nx, c = with_placeholders(x, found, depth + 1)
    if c then
      if not copy then
        copy = {}
        for k2, x2 in pairs(v) do copy[k2] = x2 end
        setmetatable(copy, getmetatable(v))
      end
      copy[k] = nx
      changed = true
    end
  end
  return copy or v, changed
end

--- Encode `v`; nil, message when it cannot be JSON (functions, NaN, cycles, sparse
--- arrays). Integers keep every digit.
---@param v any
---@return string|nil text
---@return string|nil err
function _M.encode(v)
  if not mtype or type(v) ~= "table" or next(v) == nil then return codec.encode(v) end
  local found = {}
  local copy, changed = with_placeholders(v, found, 1)
  local text, err = codec.encode(copy)
  if not text or not changed then return text, err end
  return (gsub(text, '"\\u0000sk%-int%-(%d+)\\u0000"', function(i) return found[tonumber(i)] end))
end

return _M
