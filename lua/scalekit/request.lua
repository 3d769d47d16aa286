--- Turns (operation, params) into the path-and-query of an HTTP request.
--
-- Rules (README "Parameters"): path and query parameters by their spec names at the
-- top level of `params`, the JSON body under `params.body`. Path values are
-- percent-encoded as one segment (so "/", "..", "?" and "#" can never change the
-- route); query values are encoded per RFC 3986, arrays as repeated keys, booleans
-- as true/false. Anything the operation does not know is a misuse and raises.
local _M = {}

local type = type
local pairs = pairs
local tostring = tostring
local concat = table.concat
local sort = table.sort
local format = string.format
local find = string.find
local floor = math.floor

local HUGE = math.huge

--- Percent-encode everything but RFC 3986 unreserved characters (in C: this runs for
--- every path and query value of every call).
---@param s string
---@return string
local encode = require("scalekit.core").url_encode
_M.encode = encode

--- Form encoding (application/x-www-form-urlencoded) of a flat table, keys sorted.
---@param t table<string, string|number|boolean>
---@return string
function _M.form(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for i = 1, #keys do
    local k = keys[i]
    parts[i] = encode(k) .. "=" .. encode(tostring(t[k]))
  end
  return concat(parts, "&")
end

local errors_misuse = require("scalekit.errors").misuse

-- Misuse names the operation; errors.misuse positions it at the caller's line.
local function misuse(op_id, fmt, ...)
  errors_misuse("%s: " .. fmt, op_id, ...)
end

local function is_integral(v)
  return v == v and v ~= HUGE and v ~= -HUGE and floor(v) == v
end

-- Integral numbers are written without a fraction or exponent even when they are
-- floats (lua-cjson and arithmetic can produce 10.0 on 5.4).
local function number_text(v)
  if is_integral(v) and v > -2^53 and v < 2^53 then
    return format("%d", v)
  end
  return format("%.17g", v)
end

local function scalar_text(op_id, name, ptype, v)
  local t = type(v)
  if ptype == "string" then
    if t == "string" then return v end
    if t == "number" then return number_text(v) end
  elseif ptype == "integer" then
    if t == "number" and is_integral(v) then return number_text(v) end
    if t == "string" and find(v, "^%-?%d+$") then return v end
  elseif ptype == "number" then
    if t == "number" and v == v and v ~= HUGE and v ~= -HUGE then return number_text(v) end
  elseif ptype == "boolean" then
    if t == "boolean" then return v and "true" or "false" end
  end
  misuse(op_id, "parameter '%s' must be %s %s, got %s", name,
         ptype == "integer" and "an" or "a", ptype, t == "number" and tostring(v) or t)
end

-- One path parameter as an encoded segment.
local function path_value(op_id, name, v)
  if v == nil then misuse(op_id, "missing required path parameter '%s'", name) end
  v = scalar_text(op_id, name, "string", v)
  if v == "" then misuse(op_id, "path parameter '%s' must not be empty", name) end
  -- "." and ".." segments are removed by URL normalization (libcurl, proxies,
  -- servers), whatever their encoding: they would change the route
  if v == "." or v == ".." then misuse(op_id, "path parameter '%s' must not be '.' or '..'", name) end
  return encode(v)
end

-- Per-operation data derived once: path pieces and sorted query names (keyed by the
-- entries of scalekit.operations, which live as long as the module).
local compiled = {}

local function compile(op)
  local c = compiled[op]
  if c then return c end
  local pieces, names = {}, {}
  local pos = 1
  local path = op.path
  while true do
    local a, b, name = find(path, "{([%w_]+)}", pos)
    if not a then break end
    pieces[#pieces + 1] = path:sub(pos, a - 1)
    pieces[#pieces + 1] = false -- placeholder, filled per call
    names[#pieces] = name
    pos = b + 1
  end
  pieces[#pieces + 1] = path:sub(pos)
  local known = { body = true }
  local qnames = {}
  for i = 1, #op.path_params do known[op.path_params[i]] = true end
  for q in pairs(op.query) do
    qnames[#qnames + 1] = q
    known[q] = true
  end
  sort(qnames)
  local required = {}
  for i = 1, #op.required do required[op.required[i]] = true end
  c = { pieces = pieces, names = names, qnames = qnames, known = known, required = required }
  compiled[op] = c
  return c
end

local function expected_list(c)
  local names = {}
  for k in pairs(c.known) do names[#names + 1] = k end
  sort(names)
  return concat(names, ", ")
end

--- Build the path (with query string) and the body table for one call.
--- Raises on misuse: unknown parameter, missing required one, wrong type.
---@param op_id string
---@param op table entry of scalekit.operations
---@param params table?
---@return string path_and_query
---@return table|nil body
function _M.build(op_id, op, params)
  if params == nil then
    params = {}
  elseif type(params) ~= "table" then
    misuse(op_id, "params must be a table, got %s", type(params))
  end
  local c = compile(op)
  for k in pairs(params) do
    if not c.known[k] then
      misuse(op_id, "unknown parameter '%s' (expected: %s)", tostring(k), expected_list(c))
    end
  end

  local pieces, names = c.pieces, c.names
  local path
  local npieces = #pieces
  if npieces == 1 then
    path = pieces[1]
  elseif npieces == 3 then
    -- the common one-id route: one concatenation, no scratch table
    path = pieces[1] .. path_value(op_id, names[2], params[names[2]]) .. pieces[3]
  else
    local out = {}
    for i = 1, #pieces do
      local name = names[i]
      if name then
        out[i] = path_value(op_id, name, params[name])
      else
        out[i] = pieces[i]
      end
    end
    path = concat(out)
  end

  local qnames = c.qnames
  local query
  for i = 1, #qnames do
    local name = qnames[i]
    local v = params[name]
    if v == nil then
      if c.required[name] then misuse(op_id, "missing required parameter '%s'", name) end
    else
      query = query or {}
      local ptype = op.query[name]
      if ptype == "array" then
        if type(v) ~= "table" then v = { v } end
        for j = 1, #v do
          query[#query + 1] = name .. "=" .. encode(scalar_text(op_id, name, "string", v[j]))
        end
      else
        query[#query + 1] = name .. "=" .. encode(scalar_text(op_id, name, ptype, v))
      end
    end
  end
  if query and #query > 0 then
    path = path .. "?" .. concat(query, "&")
  end

  local body = params.body
  if body ~= nil then
    if not op.body then
      misuse(op_id, "takes no body")
    elseif type(body) ~= "table" then
      misuse(op_id, "body must be a table, got %s", type(body))
    end
  end
  return path, body
end

return _M
